//! Which provider to call, as configured, and the client built from it.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use answerloop_models::{ModelCache, SMOLLM2};

use super::gemini::{Gemini, GeminiConfig};
use super::inflight::InFlightConfig;
use super::local::{Local, LocalConfig};
use super::ollama::{Ollama, OllamaConfig};
use super::openai::{OpenAi, OpenAiConfig};
use super::{ErrorClass, LlmError, Provider};
use crate::secret::Secret;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// SmolLM2-135M-Instruct in this process (fetched on first use).
    Local,
    /// llm-sim in-process: a test tool, not a model.
    Sim,
    /// Any OpenAI-compatible chat-completions server.
    Openai,
    /// Ollama's native API.
    Ollama,
    /// Google Gemini.
    Gemini,
}

impl ProviderKind {
    /// The environment variable holding this provider's key, if it takes one.
    pub fn key_env(self) -> Option<&'static str> {
        match self {
            ProviderKind::Openai => Some("OPENAI_API_KEY"),
            ProviderKind::Gemini => Some("GEMINI_API_KEY"),
            ProviderKind::Local | ProviderKind::Sim | ProviderKind::Ollama => None,
        }
    }

    fn default_base_url(self) -> String {
        match self {
            ProviderKind::Openai => std::env::var("OPENAI_BASE_URL")
                .unwrap_or_else(|_| "https://api.openai.com/v1".into()),
            ProviderKind::Ollama => "http://127.0.0.1:11434".into(),
            ProviderKind::Gemini => "https://generativelanguage.googleapis.com".into(),
            ProviderKind::Local | ProviderKind::Sim => String::new(),
        }
    }

    fn default_model(self) -> &'static str {
        match self {
            ProviderKind::Openai => "gpt-4o-mini",
            ProviderKind::Ollama => "tinyllama",
            ProviderKind::Gemini => "gemini-2.0-flash",
            ProviderKind::Sim => "llm-sim",
            ProviderKind::Local => super::local::MODEL_NAME,
        }
    }
}

/// A provider with everything needed to reach it.
#[derive(Debug, Clone)]
pub struct ProviderSpec {
    kind: ProviderKind,
    base_url: String,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
    /// Where the local model lives, and how it runs.
    models: ModelCache,
    local: LocalConfig,
    /// Requests kept at an OpenAI-compatible server past a time-out.
    in_flight: InFlightConfig,
}

impl ProviderSpec {
    pub fn new(
        kind: ProviderKind,
        base_url: Option<String>,
        model: Option<String>,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Self {
        Self {
            kind,
            base_url: base_url.unwrap_or_else(|| kind.default_base_url()),
            model: model.unwrap_or_else(|| kind.default_model().to_string()),
            api_key,
            timeout,
            models: ModelCache::locate(None),
            local: LocalConfig::default(),
            in_flight: InFlightConfig::default(),
        }
    }

    /// Cap and keep requests at an OpenAI-compatible server as `in_flight` says.
    pub fn with_in_flight(mut self, in_flight: InFlightConfig) -> Self {
        self.in_flight = in_flight;
        self
    }

    /// Run the local model from `models` with `config`.
    pub fn with_local(mut self, models: ModelCache, config: LocalConfig) -> Self {
        self.models = models;
        self.local = config;
        self
    }

    pub fn models(&self) -> &ModelCache {
        &self.models
    }

    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The client. For [`ProviderKind::Sim`], `sim_url` is the running
    /// simulator's API root.
    pub fn connect(&self, sim_url: Option<&str>) -> Result<Arc<dyn Provider>, LlmError> {
        let openai = |base_url: String, name: &str, api_key: Option<Secret>| {
            OpenAi::new(OpenAiConfig {
                base_url,
                model: self.model.clone(),
                api_key,
                timeout: self.timeout,
                name: name.into(),
                in_flight: self.in_flight,
            })
        };
        Ok(match self.kind {
            ProviderKind::Local => {
                if !self.models.is_installed(&SMOLLM2) {
                    return Err(LlmError::new(
                        ErrorClass::Permanent,
                        None,
                        format!(
                            "the local model is not in {}: run `answerloop models fetch`",
                            self.models.root().display()
                        ),
                    ));
                }
                Arc::new(Local::load(&self.models.main_file(&SMOLLM2), self.local)?)
            }
            ProviderKind::Sim => Arc::new(openai(
                sim_url.unwrap_or_default().to_string(),
                "llm-sim",
                None,
            )?),
            ProviderKind::Openai => Arc::new(openai(
                self.base_url.clone(),
                "openai",
                self.api_key.clone(),
            )?),
            ProviderKind::Ollama => Arc::new(Ollama::new(OllamaConfig {
                base_url: self.base_url.clone(),
                model: self.model.clone(),
                timeout: self.timeout,
            })?),
            ProviderKind::Gemini => Arc::new(Gemini::new(GeminiConfig {
                base_url: self.base_url.clone(),
                model: self.model.clone(),
                api_key: self.api_key.clone(),
                timeout: self.timeout,
            })?),
        })
    }
}
