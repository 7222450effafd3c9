//! `stream: true`: server-sent events of `chat.completion.chunk` objects, as
//! the OpenAI API sends them: the role first, then the text piece by piece
//! as the model generates it, then the finish reason, the usage when
//! `stream_options.include_usage` asks for it, and `data: [DONE]`.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{json, Value};

use super::{completion_id, finish_reason, usage};
use answerloop_llm::{ChatRequest, CompletionStream};

pub fn response(
    stream: CompletionStream,
    model: &str,
    request: &ChatRequest,
    include_usage: bool,
) -> Response {
    let chunk = Chunk {
        id: completion_id(),
        created: answerloop_schema::clock::now_ms() / 1000,
        model: model.to_string(),
        include_usage,
    };
    let request = request.clone();
    let events = futures::stream::unfold(State::Start(stream), move |state| {
        let (chunk, request) = (chunk.clone(), request.clone());
        async move { next(state, &chunk, &request).await }
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(events))
        .expect("a valid response")
}

/// What every chunk of one reply shares.
#[derive(Clone)]
struct Chunk {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl Chunk {
    fn event(&self, choices: Value, usage: Option<Value>) -> Bytes {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if self.include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> Bytes {
        self.event(
            json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]),
            None,
        )
    }
}

enum State {
    Start(CompletionStream),
    Text(CompletionStream),
    Done,
}

type Event = Result<Bytes, std::convert::Infallible>;

async fn next(state: State, chunk: &Chunk, request: &ChatRequest) -> Option<(Event, State)> {
    match state {
        State::Start(stream) => {
            let role = chunk.delta(json!({"role": "assistant", "content": ""}), None);
            Some((Ok(role), State::Text(stream)))
        }
        State::Text(mut stream) => {
            if let Some(piece) = stream.pieces.recv().await {
                let text = chunk.delta(json!({"content": piece}), None);
                return Some((Ok(text), State::Text(stream)));
            }
            Some((Ok(finish(stream, chunk, request).await), State::Done))
        }
        State::Done => None,
    }
}

/// The last events: the finish reason, the usage if asked, `[DONE]`;
/// or an error event when the generation failed part way.
async fn finish(stream: CompletionStream, chunk: &Chunk, request: &ChatRequest) -> Bytes {
    let completion = match stream.done.await {
        Ok(c) => c,
        Err(e) => {
            let error = json!({"error": {"message": e.message, "type": "server_error", "code": "server_error"}});
            return Bytes::from(format!("data: {error}\n\ndata: [DONE]\n\n"));
        }
    };
    let mut events = chunk
        .delta(json!({}), Some(finish_reason(&completion, request)))
        .to_vec();
    if chunk.include_usage {
        events.extend_from_slice(&chunk.event(json!([]), Some(usage(&completion))));
    }
    events.extend_from_slice(b"data: [DONE]\n\n");
    Bytes::from(events)
}
