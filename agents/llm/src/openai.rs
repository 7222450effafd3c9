//! Any OpenAI-compatible chat-completions server: OpenAI, vLLM, llama.cpp,
//! LM Studio, Ollama's `/v1`, and answerloop's own `llm-sim`.
//!
//! A 429 is a quota error when its code says the account is out of credit
//! (`insufficient_quota`), and a rate limit otherwise. A time-out ends the
//! call's wait but not its request, which a retry then waits for
//! ([`crate::inflight`]): a server that queues never gets the same work twice.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;

use super::http::{class_of_status, malformed, quote, HttpClient, Reply};
use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};
use crate::inflight::{InFlight, InFlightConfig};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root, e.g. `http://127.0.0.1:8080/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    /// How long a call waits for its answer, connection included. The
    /// request itself may stay at the server longer (see [`crate::inflight`]).
    pub timeout: Duration,
    /// The provider's name in logs and summaries.
    pub name: String,
    /// Requests kept at the server past a time-out, and their cap.
    pub in_flight: InFlightConfig,
}

pub struct OpenAi {
    http: Arc<HttpClient>,
    url: String,
    config: OpenAiConfig,
    in_flight: InFlight<Result<Reply, LlmError>>,
}

impl OpenAi {
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        let abandon = config.in_flight.abandon_after(config.timeout);
        let http =
            HttpClient::with_connect_timeout(abandon, config.timeout, config.api_key.clone())?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        let in_flight = InFlight::new(config.in_flight.max, abandon);
        Ok(Self {
            http: Arc::new(http),
            url,
            config,
            in_flight,
        })
    }

    /// POST `body`, or wait for the same body already in flight.
    async fn post(&self, body: serde_json::Value) -> Result<Reply, LlmError> {
        let key = body.to_string();
        let (http, url) = (self.http.clone(), self.url.clone());
        let send = move || async move {
            http.post(&url, &body, |r, key| r.bearer_auth(key.expose()))
                .await
        };
        let timeout = self.config.timeout;
        self.in_flight
            .run(key, timeout, send)
            .await
            .unwrap_or_else(|| {
                Err(LlmError::new(
                    ErrorClass::Overload,
                    None,
                    format!(
                        "timed out after {:.1} s: {}; the request stays at the server and a retry waits for its answer rather than sending it again",
                        timeout.as_secs_f64(),
                        self.url
                    ),
                ))
            })
    }
}

#[derive(Deserialize)]
struct ChatReply {
    choices: Vec<Choice>,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: ReplyMessage,
}

#[derive(Deserialize)]
struct ReplyMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u32>,
    completion_tokens: Option<u32>,
}

#[async_trait]
impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.config.name
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let mut body = json!({
            "model": self.config.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        if let Some(seed) = request.seed {
            body["seed"] = seed.into();
        }
        let reply = self.post(body).await?;
        if !(200..300).contains(&reply.status) {
            return Err(classify_status(reply.status, &reply.headers, &reply.body));
        }
        let parsed: ChatReply = serde_json::from_str(&reply.body).map_err(|e| {
            malformed(
                reply.status,
                &format!("reply is not a chat completion ({e})"),
                &reply.body,
            )
        })?;
        let content = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| malformed(reply.status, "reply has no message content", &reply.body))?;
        Ok(Completion {
            text: content,
            model: parsed.model.unwrap_or_else(|| self.config.model.clone()),
            prompt_tokens: parsed.usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: parsed.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }
}

/// Sort a non-2xx reply by status and the OpenAI error body.
pub fn classify_status(status: u16, headers: &HeaderMap, body: &str) -> LlmError {
    let code = error_code(body);
    let class = match status {
        429 if is_quota_code(code.as_deref()) => ErrorClass::Quota,
        s => class_of_status(s),
    };
    let mut err = LlmError::new(class, Some(status), quote(body));
    err.retry_after = retry_after(headers, SystemTime::now());
    err
}

/// OpenAI's codes for a spent quota or billing limit, as opposed to a rate limit.
fn is_quota_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some("insufficient_quota" | "billing_hard_limit_reached" | "billing_not_active")
    )
}

/// `error.code`, or failing that `error.type`, of an OpenAI error body.
fn error_code(body: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let error = value.get("error")?;
    ["code", "type"]
        .iter()
        .find_map(|k| error.get(*k).and_then(|v| v.as_str()).map(str::to_string))
}

/// The server's requested delay: `retry-after-ms`, or `Retry-After` in
/// seconds or as an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = headers
        .get("retry-after-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|ms| ms.is_finite() && *ms >= 0.0)
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn statuses_and_bodies_map_to_classes() {
        let none = HeaderMap::new();
        let quota = r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#;
        let rate = r#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#;
        assert_eq!(classify_status(429, &none, quota).class, ErrorClass::Quota);
        assert_eq!(
            classify_status(429, &none, rate).class,
            ErrorClass::Overload
        );
        assert_eq!(
            classify_status(429, &none, "not json").class,
            ErrorClass::Overload
        );
        for s in [500, 502, 503, 504] {
            assert_eq!(
                classify_status(s, &none, "").class,
                ErrorClass::Overload,
                "{s}"
            );
        }
        for s in [400, 401, 403, 404] {
            assert_eq!(
                classify_status(s, &none, "").class,
                ErrorClass::Permanent,
                "{s}"
            );
        }
    }

    #[test]
    fn retry_after_reads_seconds_milliseconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after-ms", "250"), ("retry-after", "9")]),
                now
            ),
            Some(Duration::from_millis(250))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-1")]), now), None);
    }
}
