//! Calling models. The LLM agent is the only part of answerloop that does
//! (SmartModules can do no network I/O); this crate is everything it calls
//! with, so that a provider or a retry rule is changed without touching the
//! broker or the command line, and tested without either.
//!
//! Providers:
//! - [`provider`]: the [`Provider`] trait and the error classes every
//!   provider maps its failures to.
//! - [`openai`]: any OpenAI-compatible chat-completions server.
//! - [`local`]: SmolLM2 in this process, on model worker threads.
//! - [`ollama`]: Ollama's native `/api/chat`.
//! - [`gemini`]: Google's `generateContent`.
//! - [`inflight`]: requests kept at a server past a time-out, so that a
//!   retry never sends the same work twice.
//! - [`http`]: the HTTP plumbing they share; [`secret`]: API keys that never
//!   show in logs.
//! - [`spec`]: which provider, as configured, and its client.
//! - [`prompt`]: the messages put to the model for a question.
//! - [`seed`]: the sampling seed of one attempt at one question.
//!
//! The call policy:
//! - [`limiter`]: concurrency, per-minute limits, quota pauses and AIMD.
//! - [`token_budget`]: tokens per minute, by the server's reported usage.
//! - [`retry`]: backoff with full jitter, and the retry budget.
//! - [`breaker`]: the circuit breaker's decisions (pure, clock injected);
//!   [`circuit`]: one provider's breaker as the calls share it.
//! - [`router`]: the fallback order: which provider takes the next call.
//! - [`caller`]: one question's calls: retries by error class, caps.
//! - [`stats`]: what the calls came to, counted once for summaries and
//!   metrics alike.
//!
//! It knows nothing of brokers or topics: what a question's calls came to
//! is handed back as a [`caller::CallOutcome`] for the agent to publish.

pub mod breaker;
pub mod caller;
pub mod circuit;
pub mod gemini;
pub mod http;
pub mod inflight;
pub mod limiter;
pub mod local;
pub mod ollama;
pub mod openai;
pub mod prompt;
pub mod provider;
pub mod retry;
pub mod router;
pub mod secret;
pub mod seed;
pub mod spec;
pub mod stats;
pub mod token_budget;

pub use provider::{
    ChatRequest, Completion, CompletionStream, ErrorClass, LlmError, Message, Provider,
};
pub use stats::LlmStats;
