//! Calling models. The LLM agent is the only part of answerloop that does:
//! SmartModules can do no network I/O.
//!
//! - [`provider`]: the [`Provider`] trait and the error classes every
//!   provider maps its failures to.
//! - [`openai`]: any OpenAI-compatible chat-completions server.
//! - [`prompt`]: the messages put to the model for a question.
//! - [`agent`]: the LLM agent: consume questions, call, produce answers.

pub mod agent;
pub mod openai;
pub mod prompt;
pub mod provider;

pub use provider::{ChatRequest, Completion, ErrorClass, LlmError, Message, Provider};
