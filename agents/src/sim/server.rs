//! llm-sim's HTTP routes: `POST /v1/chat/completions`, `GET /v1/models`,
//! `GET /health` and `GET /sim/stats`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::{text, FaultKind, SimState};
use crate::llm::prompt::question_text;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { "ok" }))
        .route("/sim/stats", get(stats))
        .with_state(state)
}

#[derive(Deserialize)]
struct ChatBody {
    #[serde(default)]
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    #[serde(default)]
    content: String,
}

fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "code": code}});
    (status, Json(body)).into_response()
}

async fn chat(State(state): State<Arc<SimState>>, headers: HeaderMap, body: Bytes) -> Response {
    let fault = state.admit(&mut state.rng.lock().expect("rng poisoned"));
    if let Some(key) = &state.config.api_key {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if given != key {
            // Like the real API, quote the key that was sent back to the caller.
            let message = format!("Incorrect API key provided: {given}.");
            return error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                &message,
            );
        }
    }
    let request: ChatBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            let message = format!("We could not parse the JSON body of your request: {e}");
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_json",
                &message,
            );
        }
    };
    let Some(user) = request.messages.iter().rev().find(|m| m.role == "user") else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "no_user_message",
            "messages has no user message",
        );
    };

    let (delay, reply) = {
        let mut rng = state.rng.lock().expect("rng poisoned");
        let delay = latency(&state, &mut *rng);
        let reply = match state.reference(question_text(&user.content)) {
            Some(reference) => {
                let q = state.config.quality.sample(&mut *rng);
                text::answer(reference, q, &mut *rng)
            }
            None => {
                state
                    .stats
                    .unknown_questions
                    .fetch_add(1, Ordering::Relaxed);
                text::unknown(&mut *rng)
            }
        };
        (delay, reply)
    };
    if let Some(kind) = fault {
        state.stats.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
        return fault_response(&state, kind).await;
    }
    if let Err(wait) = state.take_quota() {
        state.stats.over_quota.fetch_add(1, Ordering::Relaxed);
        let mut response = error(
            StatusCode::TOO_MANY_REQUESTS,
            "requests",
            "rate_limit_exceeded",
            "Rate limit reached for requests per second. Please try again later.",
        );
        add_retry_after(&mut response, wait);
        return response;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.stats.answered.fetch_add(1, Ordering::Relaxed);
    let completion_tokens = reply.split_whitespace().count();
    let prompt_tokens: usize = request
        .messages
        .iter()
        .map(|m| m.content.split_whitespace().count())
        .sum();
    Json(json!({
        "id": "chatcmpl-sim",
        "object": "chat.completion",
        "created": crate::clock::now_ms() / 1000,
        "model": state.config.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": reply},
            "finish_reason": "stop",
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }))
    .into_response()
}

fn latency(state: &SimState, rng: &mut impl Rng) -> Duration {
    let mean = state.config.latency.as_secs_f64();
    let jitter = state.config.latency_jitter.as_secs_f64();
    let secs = if jitter > 0.0 {
        mean + rng.gen_range(-jitter..jitter)
    } else {
        mean
    };
    Duration::from_secs_f64(secs.max(0.0))
}

async fn fault_response(state: &SimState, kind: FaultKind) -> Response {
    match kind {
        FaultKind::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "overloaded",
            "The server is overloaded or not ready yet.",
        ),
        FaultKind::Internal => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            "internal_error",
            "The server had an error while processing your request.",
        ),
        FaultKind::RateLimit => {
            let secs = state.config.retry_after.as_secs_f64();
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                "Rate limit reached for requests. Please try again later.",
            );
            let headers = response.headers_mut();
            headers.insert(
                header::RETRY_AFTER,
                secs.ceil().to_string().parse().expect("a number"),
            );
            headers.insert(
                "retry-after-ms",
                (secs * 1000.0)
                    .round()
                    .to_string()
                    .parse()
                    .expect("a number"),
            );
            response
        }
        FaultKind::Quota => {
            // Unlike OpenAI, say when the quota returns, so that a simulated
            // quota pause lasts --sim-retry-after-secs, not the agent's default.
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                "You exceeded your current quota, please check your plan and billing details.",
            );
            add_retry_after(&mut response, state.config.retry_after);
            response
        }
        FaultKind::Timeout => {
            tokio::time::sleep(state.config.hang).await;
            error(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                "The request timed out.",
            )
        }
        FaultKind::Malformed => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{\"id\":\"chatcmpl-sim\",\"choices\":[{\"message\":{\"content\":\"trunc",
        )
            .into_response(),
    }
}

/// `Retry-After` in whole seconds and OpenAI's `retry-after-ms`.
fn add_retry_after(response: &mut Response, wait: Duration) {
    let secs = wait.as_secs_f64();
    let headers = response.headers_mut();
    headers.insert(
        header::RETRY_AFTER,
        secs.ceil().to_string().parse().expect("a number"),
    );
    headers.insert(
        "retry-after-ms",
        (secs * 1000.0)
            .round()
            .to_string()
            .parse()
            .expect("a number"),
    );
}

async fn models(State(state): State<Arc<SimState>>) -> Json<serde_json::Value> {
    Json(
        json!({"object": "list", "data": [{"id": state.config.model, "object": "model", "owned_by": "llm-sim"}]}),
    )
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<super::SimStatsSnapshot> {
    Json(state.stats.snapshot())
}
