//! Ollama's native chat API, `POST /api/chat` (non-streaming).
//!
//! Ollama answers 503 when its request queue is full and 500 when a model
//! fails to load; both are overload. 404 means the model is not pulled:
//! permanent until someone pulls it.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::json;

use super::http::{class_of_status, malformed, quote, HttpClient};
use super::openai::retry_after;
use super::{ChatRequest, Completion, LlmError, Provider};

#[derive(Debug, Clone)]
pub struct OllamaConfig {
    /// The server root, e.g. `http://127.0.0.1:11434`.
    pub base_url: String,
    pub model: String,
    pub timeout: Duration,
}

pub struct Ollama {
    http: HttpClient,
    url: String,
    config: OllamaConfig,
}

impl Ollama {
    pub fn new(config: OllamaConfig) -> Result<Self, LlmError> {
        let http = HttpClient::new(config.timeout, None)?;
        let url = format!("{}/api/chat", config.base_url.trim_end_matches('/'));
        Ok(Self { http, url, config })
    }
}

#[derive(Deserialize)]
struct Reply {
    message: ReplyMessage,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u32>,
    #[serde(default)]
    eval_count: Option<u32>,
}

#[derive(Deserialize)]
struct ReplyMessage {
    content: String,
}

#[async_trait]
impl Provider for Ollama {
    fn name(&self) -> &str {
        "ollama"
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let mut body = json!({
            "model": self.config.model,
            "messages": request.messages,
            "stream": false,
            "options": {"num_predict": request.max_tokens, "temperature": request.temperature},
        });
        if let Some(seed) = request.seed {
            body["options"]["seed"] = seed.into();
        }
        let reply = self.http.post(&self.url, &body, |r, _| r).await?;
        if !(200..300).contains(&reply.status) {
            let mut err = LlmError::new(
                class_of_status(reply.status),
                Some(reply.status),
                quote(&reply.body),
            );
            err.retry_after = retry_after(&reply.headers, std::time::SystemTime::now());
            return Err(err);
        }
        let parsed: Reply = serde_json::from_str(&reply.body).map_err(|e| {
            malformed(
                reply.status,
                &format!("reply is not an Ollama chat reply ({e})"),
                &reply.body,
            )
        })?;
        Ok(Completion {
            text: parsed.message.content,
            model: parsed.model.unwrap_or_else(|| self.config.model.clone()),
            prompt_tokens: parsed.prompt_eval_count,
            completion_tokens: parsed.eval_count,
        })
    }
}
