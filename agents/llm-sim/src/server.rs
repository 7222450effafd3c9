//! llm-sim's HTTP routes, in three API dialects over one core:
//!
//! - OpenAI: `POST /v1/chat/completions`, `GET /v1/models`
//! - Ollama: `POST /api/chat`
//! - Gemini: `POST /v1beta/models/{model}:generateContent`
//!
//! plus `GET /health` and `GET /sim/stats`. Each request is admitted by the
//! core (fault, key, quota, latency, answer text); each dialect only says it
//! in its own API's words.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};

use super::{text, FaultKind, SimState};
use answerloop_llm::prompt::question_text;

pub fn router(state: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai::chat))
        .route("/v1/models", get(openai::models))
        .route("/api/chat", post(ollama::chat))
        .route("/v1beta/models/{action}", post(gemini::generate))
        .route("/health", get(|| async { "ok" }))
        .route("/sim/stats", get(stats))
        .with_state(state)
}

/// What the core decided for one request.
enum Reply {
    Answer {
        text: String,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Fault(FaultKind),
    /// The key was missing or wrong; carries the key that was sent.
    BadKey(String),
    BadRequest(String),
    /// The simulated quota is used up for this long.
    OverQuota(Duration),
}

/// Decide a request: `user` is the last user message, `prompt` all message
/// text, `key` the credential sent and `seed` the sampling seed, if any.
///
/// The answer's text is drawn from a generator of its own, seeded from the
/// simulator's seed, the request's seed and its prompt: the same request
/// gets the same text whatever else is in flight, as from a real model
/// sampling with a seed, so a test's outcome does not hang on the order
/// in which concurrent requests arrive.
async fn decide(
    state: &SimState,
    user: Option<&str>,
    prompt: &str,
    key: Option<&str>,
    seed: Option<u64>,
) -> Reply {
    let fault = state.admit(&mut state.rng.lock().expect("rng poisoned"));
    if let Some(expected) = &state.config.api_key {
        if key != Some(expected.as_str()) {
            return Reply::BadKey(key.unwrap_or_default().to_string());
        }
    }
    let Some(user) = user else {
        return Reply::BadRequest("the request has no user message".into());
    };
    if let Some(kind) = fault {
        state.stats.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
        if kind == FaultKind::Timeout {
            tokio::time::sleep(state.config.hang).await;
        }
        return Reply::Fault(kind);
    }
    if let Err(wait) = state.take_quota() {
        state.stats.over_quota.fetch_add(1, Ordering::Relaxed);
        return Reply::OverQuota(wait);
    }
    // Looked up before the generator is locked: it may read a file.
    let reference = state.reference(question_text(user));
    let delay = latency(state, &mut *state.rng.lock().expect("rng poisoned"));
    let rng = &mut text::request_rng(state.config.seed, seed, prompt);
    let reply = match reference {
        Some(reference) => {
            let q = state.config.quality.sample(rng);
            text::answer(&reference, q, rng)
        }
        None => {
            state
                .stats
                .unknown_questions
                .fetch_add(1, Ordering::Relaxed);
            text::unknown(rng)
        }
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    state.stats.answered.fetch_add(1, Ordering::Relaxed);
    Reply::Answer {
        completion_tokens: reply.split_whitespace().count(),
        prompt_tokens: prompt.split_whitespace().count(),
        text: reply,
    }
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

/// A JSON body with a status.
fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// A reply cut off mid-string: what a broken proxy or a crashed server sends.
fn truncated(start: &'static str) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        start,
    )
        .into_response()
}

/// `Retry-After` in whole seconds and OpenAI's `retry-after-ms`.
fn with_retry_after(mut response: Response, wait: Duration) -> Response {
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
    response
}

/// Message text of a `messages` array: (last user message, all text).
fn messages(body: &Value) -> (Option<String>, String) {
    let list = body["messages"].as_array().cloned().unwrap_or_default();
    let text = |m: &Value| m["content"].as_str().unwrap_or_default().to_string();
    let user = list.iter().rev().find(|m| m["role"] == "user").map(text);
    let all = list.iter().map(text).collect::<Vec<_>>().join(" ");
    (user, all)
}

mod openai {
    use super::*;

    fn error(status: StatusCode, kind: &str, code: &str, message: &str) -> Response {
        reply(
            status,
            json!({"error": {"message": message, "type": kind, "code": code}}),
        )
    }

    pub async fn chat(
        State(state): State<Arc<SimState>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let key = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let body: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
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
        let (user, all) = messages(&body);
        let seed = body["seed"].as_u64();
        match decide(&state, user.as_deref(), &all, key, seed).await {
            Reply::Answer {
                text,
                prompt_tokens,
                completion_tokens,
            } => reply(
                StatusCode::OK,
                json!({
                    "id": "chatcmpl-sim",
                    "object": "chat.completion",
                    "created": answerloop_schema::clock::now_ms() / 1000,
                    "model": state.config.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": completion_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                    },
                }),
            ),
            // Like the real API, quote the key that was sent back to the caller.
            Reply::BadKey(sent) => error(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                &format!("Incorrect API key provided: {sent}."),
            ),
            Reply::BadRequest(why) => error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "bad_request",
                &why,
            ),
            Reply::OverQuota(wait) => with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "rate_limit_exceeded",
                    "Rate limit reached for requests per second. Please try again later.",
                ),
                wait,
            ),
            Reply::Fault(kind) => fault(&state, kind),
        }
    }

    fn fault(state: &SimState, kind: FaultKind) -> Response {
        let wait = state.config.retry_after;
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
            FaultKind::RateLimit => with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "requests",
                    "rate_limit_exceeded",
                    "Rate limit reached for requests. Please try again later.",
                ),
                wait,
            ),
            // Unlike OpenAI, say when the quota returns, so that a simulated
            // quota pause lasts --sim-retry-after-secs, not the agent's default.
            FaultKind::Quota => with_retry_after(
                error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "insufficient_quota",
                    "insufficient_quota",
                    "You exceeded your current quota, please check your plan and billing details.",
                ),
                wait,
            ),
            FaultKind::Timeout => error(
                StatusCode::GATEWAY_TIMEOUT,
                "server_error",
                "timeout",
                "The request timed out.",
            ),
            FaultKind::Malformed => {
                truncated("{\"id\":\"chatcmpl-sim\",\"choices\":[{\"message\":{\"content\":\"trunc")
            }
        }
    }

    pub async fn models(State(state): State<Arc<SimState>>) -> Json<Value> {
        Json(
            json!({"object": "list", "data": [{"id": state.config.model, "object": "model", "owned_by": "llm-sim"}]}),
        )
    }
}

mod ollama {
    use super::*;

    fn error(status: StatusCode, message: &str) -> Response {
        reply(status, json!({"error": message}))
    }

    pub async fn chat(State(state): State<Arc<SimState>>, body: Bytes) -> Response {
        let body: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid JSON: {e}")),
        };
        let (user, all) = messages(&body);
        let seed = body["options"]["seed"].as_u64();
        match decide(&state, user.as_deref(), &all, None, seed).await {
            Reply::Answer {
                text,
                prompt_tokens,
                completion_tokens,
            } => reply(
                StatusCode::OK,
                json!({
                    "model": body["model"],
                    "message": {"role": "assistant", "content": text},
                    "done": true,
                    "prompt_eval_count": prompt_tokens,
                    "eval_count": completion_tokens,
                }),
            ),
            Reply::BadKey(_) => error(StatusCode::UNAUTHORIZED, "unauthorized"),
            Reply::BadRequest(why) => error(StatusCode::BAD_REQUEST, &why),
            Reply::OverQuota(wait) => with_retry_after(
                error(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
                wait,
            ),
            Reply::Fault(kind) => match kind {
                FaultKind::Unavailable | FaultKind::Timeout => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "server busy, please try again.  maximum pending requests exceeded",
                ),
                FaultKind::Internal => error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "llama runner process has terminated",
                ),
                FaultKind::RateLimit | FaultKind::Quota => with_retry_after(
                    error(StatusCode::TOO_MANY_REQUESTS, "too many requests"),
                    state.config.retry_after,
                ),
                FaultKind::Malformed => truncated(
                    "{\"model\":\"sim\",\"message\":{\"role\":\"assistant\",\"content\":\"trunc",
                ),
            },
        }
    }
}

mod gemini {
    use super::*;

    fn error(code: u16, status: &str, message: &str, details: Value) -> Response {
        let http = StatusCode::from_u16(code).expect("a valid status");
        reply(
            http,
            json!({"error": {"code": code, "message": message, "status": status, "details": details}}),
        )
    }

    fn exhausted(quota_id: &str, wait: Duration) -> Response {
        let details = json!([
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": format!("{}s", wait.as_secs_f64())},
        ]);
        error(
            429,
            "RESOURCE_EXHAUSTED",
            "You exceeded your current quota.",
            details,
        )
    }

    pub async fn generate(
        State(state): State<Arc<SimState>>,
        Path(action): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let Some(model) = action.strip_suffix(":generateContent") else {
            return error(
                404,
                "NOT_FOUND",
                &format!("no such method: {action}"),
                json!([]),
            );
        };
        let key = headers.get("x-goog-api-key").and_then(|v| v.to_str().ok());
        let body: Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return error(
                    400,
                    "INVALID_ARGUMENT",
                    &format!("Invalid JSON payload received. {e}"),
                    json!([]),
                )
            }
        };
        let parts = |v: &Value| -> String {
            v["parts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        };
        let contents = body["contents"].as_array().cloned().unwrap_or_default();
        let user = contents
            .iter()
            .rev()
            .find(|c| c["role"] == "user")
            .map(parts);
        let all = format!(
            "{} {}",
            parts(&body["systemInstruction"]),
            contents.iter().map(parts).collect::<Vec<_>>().join(" ")
        );
        let seed = body["generationConfig"]["seed"].as_u64();
        match decide(&state, user.as_deref(), &all, key, seed).await {
            Reply::Answer {
                text,
                prompt_tokens,
                completion_tokens,
            } => reply(
                StatusCode::OK,
                json!({
                    "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": "STOP"}],
                    "usageMetadata": {"promptTokenCount": prompt_tokens, "candidatesTokenCount": completion_tokens},
                    "modelVersion": model,
                }),
            ),
            Reply::BadKey(_) => error(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                json!([]),
            ),
            Reply::BadRequest(why) => error(400, "INVALID_ARGUMENT", &why, json!([])),
            Reply::OverQuota(wait) => {
                exhausted("GenerateRequestsPerMinutePerProjectPerModel", wait)
            }
            Reply::Fault(kind) => match kind {
                FaultKind::Unavailable | FaultKind::Timeout => error(
                    503,
                    "UNAVAILABLE",
                    "The model is overloaded. Please try again later.",
                    json!([]),
                ),
                FaultKind::Internal => error(
                    500,
                    "INTERNAL",
                    "An internal error has occurred.",
                    json!([]),
                ),
                FaultKind::RateLimit => exhausted(
                    "GenerateRequestsPerMinutePerProjectPerModel",
                    state.config.retry_after,
                ),
                FaultKind::Quota => exhausted(
                    "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                    state.config.retry_after,
                ),
                FaultKind::Malformed => {
                    truncated("{\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"trunc")
                }
            },
        }
    }
}

async fn stats(State(state): State<Arc<SimState>>) -> Json<super::SimStatsSnapshot> {
    Json(state.stats.snapshot())
}
