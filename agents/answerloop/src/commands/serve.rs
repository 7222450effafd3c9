//! `answerloop serve`: the local model as an OpenAI-compatible
//! chat-completions server, so several LLM agents or other tools can share
//! one model. A full queue answers 503 with `Retry-After`, as Ollama does.
//! `stream: true` is answered with server-sent events as the OpenAI API
//! sends them (the text piece by piece while the model generates it).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::models::cache;
use crate::cli::HomeArg;
use answerloop_llm::local::{Local, LocalConfig, MODEL_NAME};
use answerloop_llm::{ChatRequest, Completion, ErrorClass, Message, Provider};

mod sse;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Generation threads, each with its own cache.
    #[arg(long, default_value_t = 1)]
    model_workers: usize,
    /// Requests that may wait for a worker; past it, 503.
    #[arg(long, default_value_t = 16)]
    model_queue: usize,
}

pub async fn execute(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cache = cache(&args.home);
    crate::providers::ensure_model(&cache, &answerloop_models::SMOLLM2)?;
    let config = LocalConfig {
        workers: args.model_workers,
        queue: args.model_queue,
        ..LocalConfig::default()
    };
    let local = Local::load(&cache.main_file(&answerloop_models::SMOLLM2), config)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!(
        "serving {MODEL_NAME} at http://{}/v1",
        listener.local_addr()?
    );
    axum::serve(listener, router(Arc::new(local)))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// The routes, over any provider (the local model in practice).
pub fn router(provider: Arc<dyn Provider>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .with_state(provider)
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": kind}})),
    )
        .into_response()
}

async fn chat(State(provider): State<Arc<dyn Provider>>, body: Bytes) -> Response {
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("invalid JSON: {e}"),
            )
        }
    };
    let messages: Vec<Message> = match serde_json::from_value(body["messages"].clone()) {
        Ok(m) => m,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                &format!("bad messages: {e}"),
            )
        }
    };
    if messages.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "messages is empty",
        );
    }
    let request = ChatRequest {
        messages,
        max_tokens: body["max_tokens"].as_u64().unwrap_or(256).min(2048) as u32,
        temperature: body["temperature"].as_f64().unwrap_or(0.0) as f32,
        seed: body["seed"].as_u64(),
    };
    if body["stream"].as_bool() == Some(true) {
        let include_usage = body["stream_options"]["include_usage"].as_bool() == Some(true);
        return match provider.stream(&request).await {
            Ok(stream) => sse::response(stream, provider.model(), &request, include_usage),
            Err(e) => failure(&e),
        };
    }
    match provider.complete(&request).await {
        Ok(c) => Json(json!({
            "id": completion_id(),
            "object": "chat.completion",
            "created": answerloop_schema::clock::now_ms() / 1000,
            "model": c.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": finish_reason(&c, &request)}],
            "usage": usage(&c),
        }))
        .into_response(),
        Err(e) => failure(&e),
    }
}

/// A failed call as the OpenAI API reports it; overload is a 503 with
/// `Retry-After`, so clients back off.
fn failure(e: &answerloop_llm::LlmError) -> Response {
    match e.class {
        ErrorClass::Overload => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "server_busy", &e.message);
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, "1".parse().expect("a number"));
            response
        }
        ErrorClass::Permanent => {
            error(StatusCode::BAD_REQUEST, "invalid_request_error", &e.message)
        }
        _ => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            &e.message,
        ),
    }
}

/// A fresh `chatcmpl-…` id for a reply.
fn completion_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!(
        "chatcmpl-answerloop-{}",
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// `length` when the answer took every token allowed, else `stop`.
fn finish_reason(c: &Completion, request: &ChatRequest) -> &'static str {
    if c.completion_tokens == Some(request.max_tokens) {
        "length"
    } else {
        "stop"
    }
}

fn usage(c: &Completion) -> Value {
    json!({
        "prompt_tokens": c.prompt_tokens,
        "completion_tokens": c.completion_tokens,
        "total_tokens": c.prompt_tokens.unwrap_or(0) + c.completion_tokens.unwrap_or(0),
    })
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "answerloop"}]}),
    )
}
