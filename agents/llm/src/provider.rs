//! What every LLM provider offers the agent, and how its failures are sorted.
//!
//! The agent decides what to do about a failure from its [`ErrorClass`]
//! alone, so each provider's job is to map its own statuses and error bodies
//! onto these classes faithfully.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn system(content: impl Into<String>) -> Self {
        Self {
            role: "system".into(),
            content: content.into(),
        }
    }
    pub fn user(content: impl Into<String>) -> Self {
        Self {
            role: "user".into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    pub max_tokens: u32,
    pub temperature: f32,
    /// The sampling seed, sent to providers that take one; `None` leaves
    /// it to the provider (see [`crate::seed`]).
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

impl Completion {
    /// Prompt and completion tokens as the provider counted them, when it
    /// reported both.
    pub fn tokens_used(&self) -> Option<u32> {
        Some(self.prompt_tokens?.saturating_add(self.completion_tokens?))
    }
}

/// How a failed call should be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// Temporary: 5xx, 429 rate limit, time-out, connection trouble. Back off and retry.
    Overload,
    /// The account's quota is spent: park the question until the quota returns.
    Quota,
    /// The request can never succeed as sent: 400, 401, 403, 404.
    Permanent,
    /// The server answered 2xx with a body that is not a usable reply.
    Malformed,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 4] = [
        ErrorClass::Overload,
        ErrorClass::Quota,
        ErrorClass::Permanent,
        ErrorClass::Malformed,
    ];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Overload => "overload",
            ErrorClass::Quota => "quota",
            ErrorClass::Permanent => "permanent",
            ErrorClass::Malformed => "malformed",
        }
    }
}

/// A failed call, already classified. Its message never holds the API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{} error{}: {message}", class.as_str(), status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct LlmError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub message: String,
    /// How long the server asked us to wait, when it said.
    pub retry_after: Option<Duration>,
}

impl LlmError {
    pub fn new(class: ErrorClass, status: Option<u16>, message: impl Into<String>) -> Self {
        Self {
            class,
            status,
            message: message.into(),
            retry_after: None,
        }
    }
}

#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short name for logs and summaries, e.g. `openai` or `llm-sim`.
    fn name(&self) -> &str;
    /// The model asked for.
    fn model(&self) -> &str;
    async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError>;

    /// The completion as it is generated. A refusal (a full queue, say)
    /// comes before any text. By default the whole text arrives as one
    /// piece once it is complete; a provider that generates here streams.
    async fn stream(&self, request: &ChatRequest) -> Result<CompletionStream, LlmError> {
        let completion = self.complete(request).await?;
        let (sender, pieces) = tokio::sync::mpsc::channel(1);
        let _ = sender.try_send(completion.text.clone());
        Ok(CompletionStream {
            pieces,
            done: Box::pin(std::future::ready(Ok(completion))),
        })
    }
}

/// A completion under way.
pub struct CompletionStream {
    /// Its text piece by piece; the pieces add up to the completion's text.
    /// Dropping it stops a generation that is still running.
    pub pieces: tokio::sync::mpsc::Receiver<String>,
    /// The whole completion, once the pieces have ended.
    pub done: Pin<Box<dyn Future<Output = Result<Completion, LlmError>> + Send>>,
}
