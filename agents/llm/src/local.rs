//! The `local` provider: SmolLM2 in this process, on model worker threads.
//! A full worker queue is an overload error, so the agent backs off exactly
//! as it would from a remote server's 503.

use std::path::Path;
use std::sync::Arc;

use answerloop_models::pool::{ModelPool, PoolError};
use answerloop_models::smollm::{chat_prompt, LoadOptions};
use answerloop_models::{GenerateOptions, ModelError, SmolLm};
use async_trait::async_trait;

use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};

/// The model name in answers and summaries.
pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";

#[derive(Debug, Clone, Copy)]
pub struct LocalConfig {
    /// Generation threads, each with its own KV cache.
    pub workers: usize,
    /// Requests waiting for a worker before new ones are refused.
    pub queue: usize,
    /// Seed for sampling at a temperature above 0, for requests that bring
    /// none of their own.
    pub seed: u64,
}

impl Default for LocalConfig {
    /// One worker a core: each generation runs on one thread.
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            workers: cores.clamp(1, 4),
            queue: 64,
            seed: crate::seed::DEFAULT_SAMPLE_SEED,
        }
    }
}

pub struct Local {
    pool: ModelPool,
    seed: u64,
}

impl Local {
    /// Load the model at `path` (once per process) and start its workers.
    pub fn load(path: &Path, config: LocalConfig) -> Result<Self, LlmError> {
        let model = SmolLm::load(path, LoadOptions::default())
            .map_err(|e| LlmError::new(ErrorClass::Permanent, None, e.to_string()))?;
        Ok(Self::with_model(Arc::new(model), config))
    }

    pub fn with_model(model: Arc<SmolLm>, config: LocalConfig) -> Self {
        Self {
            pool: ModelPool::start(model, config.workers, config.queue),
            seed: config.seed,
        }
    }
}

#[async_trait]
impl Provider for Local {
    fn name(&self) -> &str {
        "local"
    }

    fn model(&self) -> &str {
        MODEL_NAME
    }

    async fn complete(&self, request: &ChatRequest) -> Result<Completion, LlmError> {
        let prompt = chat_prompt(
            request
                .messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
        );
        let options = GenerateOptions {
            max_tokens: request.max_tokens as usize,
            temperature: f64::from(request.temperature),
            seed: request.seed.unwrap_or(self.seed),
            ..GenerateOptions::default()
        };
        let generation = match self.pool.generate(prompt, options).await {
            Ok(Ok(generation)) => generation,
            Ok(Err(e @ ModelError::PromptTooLong { .. })) => {
                return Err(LlmError::new(ErrorClass::Permanent, None, e.to_string()))
            }
            Ok(Err(e)) => return Err(LlmError::new(ErrorClass::Malformed, None, e.to_string())),
            Err(e @ PoolError::Full(_)) => {
                return Err(LlmError::new(
                    ErrorClass::Overload,
                    Some(503),
                    e.to_string(),
                ))
            }
            Err(e @ PoolError::Stopped) => {
                return Err(LlmError::new(ErrorClass::Permanent, None, e.to_string()))
            }
        };
        Ok(Completion {
            text: generation.text,
            model: MODEL_NAME.into(),
            prompt_tokens: Some(generation.prompt_tokens as u32),
            completion_tokens: Some(generation.completion_tokens as u32),
        })
    }
}
