//! Any OpenAI-compatible chat-completions server: OpenAI, vLLM, llama.cpp,
//! LM Studio, Ollama's `/v1`, and answerloop's own `llm-sim` and `serve`.
//!
//! The key is sent as a bearer token and never appears in an error: bodies
//! quoted in errors have it masked.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::Deserialize;
use serde_json::json;

use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};
use crate::secret::Secret;

/// Error bodies are quoted up to this many bytes.
const BODY_QUOTE: usize = 300;

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// The API root, e.g. `http://127.0.0.1:8080/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    /// Per-request time-out, connection included.
    pub timeout: Duration,
    /// The provider's name in logs and summaries.
    pub name: String,
}

pub struct OpenAi {
    client: reqwest::Client,
    url: String,
    config: OpenAiConfig,
}

impl OpenAi {
    pub fn new(config: OpenAiConfig) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(10)))
            .build()
            .map_err(|e| LlmError::new(ErrorClass::Permanent, None, format!("HTTP client: {e}")))?;
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            client,
            url,
            config,
        })
    }

    fn redact(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) => key.redact(text),
            None => text.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct Reply {
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
        let body = json!({
            "model": self.config.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
        });
        let mut call = self.client.post(&self.url).json(&body);
        if let Some(key) = &self.config.api_key {
            call = call.bearer_auth(key.expose());
        }
        let response = call
            .send()
            .await
            .map_err(|e| transport_error(&e, &self.url))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .map_err(|e| transport_error(&e, &self.url))?;
        let text = self.redact(&text);
        if !(200..300).contains(&status) {
            return Err(classify_status(status, &headers, &text));
        }
        let reply: Reply = serde_json::from_str(&text).map_err(|e| {
            LlmError::new(
                ErrorClass::Malformed,
                Some(status),
                format!("reply is not a chat completion ({e}): {}", quote(&text)),
            )
        })?;
        let content = reply
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| {
                LlmError::new(
                    ErrorClass::Malformed,
                    Some(status),
                    format!("reply has no message content: {}", quote(&text)),
                )
            })?;
        Ok(Completion {
            text: content,
            model: reply.model.unwrap_or_else(|| self.config.model.clone()),
            prompt_tokens: reply.usage.as_ref().and_then(|u| u.prompt_tokens),
            completion_tokens: reply.usage.as_ref().and_then(|u| u.completion_tokens),
        })
    }
}

fn transport_error(e: &reqwest::Error, url: &str) -> LlmError {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "connection failed"
    };
    LlmError::new(
        ErrorClass::Overload,
        None,
        format!("{what}: {url}: {}", error_chain(e)),
    )
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Sort a non-2xx reply by status and the OpenAI error body.
pub fn classify_status(status: u16, headers: &HeaderMap, body: &str) -> LlmError {
    let code = error_code(body);
    let class = match status {
        429 if is_quota_code(code.as_deref()) => ErrorClass::Quota,
        408 | 409 | 425 | 429 => ErrorClass::Overload,
        400..=499 => ErrorClass::Permanent,
        _ => ErrorClass::Overload,
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

fn quote(body: &str) -> String {
    let body = body.trim();
    if body.len() <= BODY_QUOTE {
        return body.to_string();
    }
    let mut end = BODY_QUOTE;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &body[..end])
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

    #[test]
    fn long_bodies_are_cut_on_a_char_boundary() {
        let body = "é".repeat(400);
        let q = quote(&body);
        assert!(q.len() <= BODY_QUOTE + 3);
        assert!(q.ends_with('…'));
    }
}
