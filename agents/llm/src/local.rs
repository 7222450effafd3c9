//! The `local` provider: SmolLM2 in this process, by default on the batched
//! llama.cpp engine (every request in flight advances in one forward pass a
//! token), or on candle worker threads (`LocalEngine::Candle`). A full queue
//! is an overload error, so the agent backs off exactly as it would from a
//! remote server's 503.

use std::path::Path;
use std::sync::Arc;

use answerloop_models::batched::{BatchedModel, BatchedOptions};
use answerloop_models::pool::{ModelPool, PoolError, Streaming};
use answerloop_models::smollm::{chat_prompt, LoadOptions};
use answerloop_models::{GenerateOptions, Generation, ModelError, SmolLm};
use async_trait::async_trait;

use super::{ChatRequest, Completion, CompletionStream, ErrorClass, LlmError, Provider};

/// The model name in answers and summaries.
pub const MODEL_NAME: &str = "SmolLM2-135M-Instruct";

/// What runs the local model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LocalEngine {
    /// llama.cpp, generations batched together (`workers` of them at once).
    #[default]
    Llama,
    /// candle, one generation a worker thread.
    Candle,
}

#[derive(Debug, Clone, Copy)]
pub struct LocalConfig {
    pub engine: LocalEngine,
    /// Generations at once: candle worker threads, each with its own KV
    /// cache, or llama.cpp batch slots.
    pub workers: usize,
    /// Requests waiting for a worker before new ones are refused.
    pub queue: usize,
    /// Seed for sampling at a temperature above 0, for requests that bring
    /// none of their own.
    pub seed: u64,
}

impl Default for LocalConfig {
    /// Eight generations batched on llama.cpp.
    fn default() -> Self {
        Self {
            engine: LocalEngine::default(),
            workers: 8,
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
        let permanent = |e: ModelError| LlmError::new(ErrorClass::Permanent, None, e.to_string());
        match config.engine {
            LocalEngine::Candle => {
                let model = SmolLm::load(path, LoadOptions::default()).map_err(permanent)?;
                Ok(Self::with_model(Arc::new(model), config))
            }
            LocalEngine::Llama => {
                let weights =
                    answerloop_models::requantise::engine_file(path).map_err(permanent)?;
                let model = BatchedModel::load(&weights).map_err(permanent)?;
                let options = BatchedOptions {
                    slots: config.workers.max(1),
                    ..BatchedOptions::default()
                };
                Ok(Self {
                    pool: ModelPool::batched(Arc::new(model), options, config.queue),
                    seed: config.seed,
                })
            }
        }
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
        let (prompt, options) = self.prompt(request);
        let generation = match self.pool.generate(prompt, options).await {
            Ok(result) => result.map_err(model_error)?,
            Err(e) => return Err(pool_error(e)),
        };
        Ok(completion(generation))
    }

    async fn stream(&self, request: &ChatRequest) -> Result<CompletionStream, LlmError> {
        let (prompt, options) = self.prompt(request);
        let Streaming { pieces, done } = self.pool.stream(prompt, options).map_err(pool_error)?;
        let done = async move {
            match done.await {
                Ok(result) => result.map(completion).map_err(model_error),
                Err(_) => Err(pool_error(PoolError::Stopped)),
            }
        };
        Ok(CompletionStream {
            pieces,
            done: Box::pin(done),
        })
    }
}

impl Local {
    /// The ChatML prompt and generation options for `request`.
    fn prompt(&self, request: &ChatRequest) -> (String, GenerateOptions) {
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
        (prompt, options)
    }
}

fn completion(generation: Generation) -> Completion {
    Completion {
        text: generation.text,
        model: MODEL_NAME.into(),
        prompt_tokens: Some(generation.prompt_tokens as u32),
        completion_tokens: Some(generation.completion_tokens as u32),
    }
}

/// A prompt too long for the window can never succeed; any other model
/// error is a malformed reply.
fn model_error(e: ModelError) -> LlmError {
    match e {
        e @ ModelError::PromptTooLong { .. } => {
            LlmError::new(ErrorClass::Permanent, None, e.to_string())
        }
        e => LlmError::new(ErrorClass::Malformed, None, e.to_string()),
    }
}

/// A full queue is overload, as a remote server's 503 is.
fn pool_error(e: PoolError) -> LlmError {
    match e {
        e @ PoolError::Full(_) => LlmError::new(ErrorClass::Overload, Some(503), e.to_string()),
        e @ PoolError::Stopped => LlmError::new(ErrorClass::Permanent, None, e.to_string()),
    }
}
