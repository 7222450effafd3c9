//! Calling models. The LLM agent is the only part of answerloop that does:
//! SmartModules can do no network I/O.
//!
//! - [`provider`]: the [`Provider`] trait and the error classes every
//!   provider maps its failures to.
//! - [`openai`]: any OpenAI-compatible chat-completions server.
//! - [`local`]: SmolLM2 in this process, on model worker threads.
//! - [`ollama`]: Ollama's native `/api/chat`.
//! - [`gemini`]: Google's `generateContent`.
//! - [`http`]: the HTTP plumbing they share.
//! - [`spec`]: which provider, as configured, and its client.
//! - [`prompt`]: the messages put to the model for a question.
//! - [`gate`]: concurrency, per-minute limits, quota pauses and AIMD.
//! - [`retry`]: backoff with full jitter, and the retry budget.
//! - [`caller`]: one question's calls: retries by error class, caps.
//! - [`agent`]: the LLM agent: consume questions, call, produce answers.

pub mod agent;
pub mod caller;
pub mod gate;
pub mod gemini;
pub mod http;
pub mod local;
pub mod ollama;
pub mod openai;
pub mod prompt;
pub mod provider;
pub mod retry;
pub mod spec;

pub use provider::{ChatRequest, Completion, ErrorClass, LlmError, Message, Provider};
