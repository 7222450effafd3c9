//! `answerloop serve`: the local model as an OpenAI-compatible
//! chat-completions server, so several LLM agents or other tools can share
//! one model. A full queue answers 503 with `Retry-After`, as Ollama does.

use std::net::SocketAddr;
use std::process::ExitCode;
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
use answerloop_llm::{ChatRequest, ErrorClass, Message, Provider};

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
    match provider.complete(&request).await {
        Ok(c) => Json(json!({
            "id": "chatcmpl-answerloop",
            "object": "chat.completion",
            "created": answerloop_schema::clock::now_ms() / 1000,
            "model": c.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.text}, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": c.prompt_tokens,
                "completion_tokens": c.completion_tokens,
                "total_tokens": c.prompt_tokens.unwrap_or(0) + c.completion_tokens.unwrap_or(0),
            },
        }))
        .into_response(),
        Err(e) if e.class == ErrorClass::Overload => {
            let mut response = error(StatusCode::SERVICE_UNAVAILABLE, "server_busy", &e.message);
            response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("a number"));
            response
        }
        Err(e) if e.class == ErrorClass::Permanent => error(StatusCode::BAD_REQUEST, "invalid_request_error", &e.message),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", &e.message),
    }
}

async fn models() -> Json<Value> {
    Json(
        json!({"object": "list", "data": [{"id": MODEL_NAME, "object": "model", "owned_by": "answerloop"}]}),
    )
}
