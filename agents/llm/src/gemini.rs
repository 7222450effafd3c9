//! Google's Gemini API, `POST /v1beta/models/{model}:generateContent`.
//!
//! Gemini reports both per-minute rate limits and per-day quotas as 429
//! `RESOURCE_EXHAUSTED`; the `QuotaFailure` detail names which (`...PerMinute...`
//! or `...PerDay...`), and `RetryInfo.retryDelay` says how long to wait. A
//! per-minute limit is overload (back off), anything else is a spent quota
//! (park the question). The key goes in the `x-goog-api-key` header, never in
//! the URL, so it cannot leak through an error that quotes the URL.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{class_of_status, malformed, quote, HttpClient};
use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};
use crate::secret::Secret;

#[derive(Debug, Clone)]
pub struct GeminiConfig {
    /// The API root, e.g. `https://generativelanguage.googleapis.com`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<Secret>,
    pub timeout: Duration,
}

pub struct Gemini {
    http: HttpClient,
    url: String,
    config: GeminiConfig,
}

impl Gemini {
    pub fn new(config: GeminiConfig) -> Result<Self, LlmError> {
        let http = HttpClient::new(config.timeout, config.api_key.clone())?;
        let url = format!(
            "{}/v1beta/models/{}:generateContent",
            config.base_url.trim_end_matches('/'),
            config.model
        );
        Ok(Self { http, url, config })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reply {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<Usage>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
}

#[derive(Deserialize)]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<Part>,
}

#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Usage {
    prompt_token_count: Option<u32>,
    candidates_token_count: Option<u32>,
}

#[async_trait]
impl Provider for Gemini {
    fn name(&self) -> &str {
        "gemini"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let text = |role: &str| -> Vec<Value> {
            request
                .messages
                .iter()
                .filter(|m| m.role == role)
                .map(|m| json!({"text": m.content}))
                .collect()
        };
        let mut body = json!({
            "systemInstruction": {"parts": text("system")},
            "contents": [{"role": "user", "parts": text("user")}],
            "generationConfig": {"maxOutputTokens": request.max_tokens, "temperature": request.temperature},
        });
        if let Some(seed) = request.seed {
            body["generationConfig"]["seed"] = seed.into();
        }
        let reply = self
            .http
            .post(&self.url, &body, |r, key| {
                r.header("x-goog-api-key", key.expose())
            })
            .await?;
        if !(200..300).contains(&reply.status) {
            return Err(classify(reply.status, &reply.body));
        }
        let parsed: Reply = serde_json::from_str(&reply.body).map_err(|e| {
            malformed(
                reply.status,
                &format!("reply is not a Gemini response ({e})"),
                &reply.body,
            )
        })?;
        let answer: Option<String> = parsed
            .candidates
            .first()
            .and_then(|c| c.content.as_ref())
            .map(|c| {
                c.parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<Vec<_>>()
                    .join("")
            });
        let Some(answer) = answer else {
            return Err(match parsed.prompt_feedback {
                Some(feedback) => LlmError::new(
                    ErrorClass::Permanent,
                    Some(reply.status),
                    format!("the prompt was blocked: {}", quote(&feedback.to_string())),
                ),
                None => malformed(reply.status, "reply has no candidate text", &reply.body),
            });
        };
        Ok(Completion {
            text: answer,
            model: parsed
                .model_version
                .unwrap_or_else(|| self.config.model.clone()),
            prompt_tokens: parsed
                .usage_metadata
                .as_ref()
                .and_then(|u| u.prompt_token_count),
            completion_tokens: parsed
                .usage_metadata
                .as_ref()
                .and_then(|u| u.candidates_token_count),
        })
    }
}

/// Sort a non-2xx Gemini reply by status, `error.status` and its details.
pub fn classify(status: u16, body: &str) -> LlmError {
    let value: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    let error = &value["error"];
    let details = error["details"].as_array().cloned().unwrap_or_default();
    let retry_delay = details
        .iter()
        .find(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
        })
        .and_then(|d| d["retryDelay"].as_str())
        .and_then(parse_duration);
    let per_minute_only = {
        let quota_ids: Vec<&str> = details
            .iter()
            .flat_map(|d| d["violations"].as_array().into_iter().flatten())
            .filter_map(|v| v["quotaId"].as_str())
            .collect();
        !quota_ids.is_empty() && quota_ids.iter().all(|id| id.contains("PerMinute"))
    };
    let class = match (status, error["status"].as_str()) {
        (429, Some("RESOURCE_EXHAUSTED")) | (429, None) if per_minute_only => ErrorClass::Overload,
        (429, Some("RESOURCE_EXHAUSTED")) => ErrorClass::Quota,
        (s, _) => class_of_status(s),
    };
    let mut err = LlmError::new(class, Some(status), quote(body));
    err.retry_after = retry_delay;
    err
}

/// A protobuf JSON duration such as `"30s"` or `"1.5s"`.
fn parse_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exhausted(quota_id: &str) -> String {
        json!({"error": {"code": 429, "message": "Resource has been exhausted", "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [{"quotaId": quota_id}]},
                {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "31s"}
            ]}})
        .to_string()
    }

    #[test]
    fn a_per_day_quota_is_quota_and_a_per_minute_limit_is_overload() {
        let day = classify(
            429,
            &exhausted("GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
        );
        assert_eq!(
            (day.class, day.retry_after),
            (ErrorClass::Quota, Some(Duration::from_secs(31)))
        );
        let minute = classify(
            429,
            &exhausted("GenerateRequestsPerMinutePerProjectPerModel-FreeTier"),
        );
        assert_eq!(
            (minute.class, minute.retry_after),
            (ErrorClass::Overload, Some(Duration::from_secs(31)))
        );
        let bare = classify(
            429,
            r#"{"error":{"code":429,"status":"RESOURCE_EXHAUSTED"}}"#,
        );
        assert_eq!(bare.class, ErrorClass::Quota);
    }

    #[test]
    fn other_statuses_follow_their_codes() {
        assert_eq!(
            classify(400, r#"{"error":{"status":"INVALID_ARGUMENT"}}"#).class,
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(403, r#"{"error":{"status":"PERMISSION_DENIED"}}"#).class,
            ErrorClass::Permanent
        );
        assert_eq!(
            classify(503, r#"{"error":{"status":"UNAVAILABLE"}}"#).class,
            ErrorClass::Overload
        );
        assert_eq!(classify(500, "<html>").class, ErrorClass::Overload);
    }

    #[test]
    fn durations_parse_in_protobuf_form() {
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
