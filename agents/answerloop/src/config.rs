//! The configuration file (TOML) and the command-line flags that override
//! it, merged into what the agents run with.
//!
//! The file is `--config FILE` (or `ANSWERLOOP_CONFIG`), else
//! `answerloop.toml` in the home when present. Unknown keys are errors that
//! name the key, so a typo never silently falls back to a default. Keys are
//! never read from the file: only the path of a key file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use answerloop_models::ModelCache;
use answerloop_scoring::Params;
use anyhow::Context;
use serde::Deserialize;

use crate::llm_agent::LlmAgentConfig;
use answerloop_llm::breaker::BreakerConfig;
use answerloop_llm::inflight::InFlightConfig;
use answerloop_llm::limiter::RateConfig;
use answerloop_llm::local::LocalConfig;
use answerloop_llm::prompt::RegeneratePrompt;
use answerloop_llm::retry::RetryConfig;
use answerloop_llm::secret::Secret;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};

pub const FILE_NAME: &str = "answerloop.toml";

/// The most answers drawn for one regenerated attempt.
pub const MAX_REGENERATE_CANDIDATES: u32 = 16;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub llm: LlmFile,
    #[serde(default)]
    pub scoring: ScoringFile,
    /// `[kafka]`: the bootstrap and librdkafka properties of `--broker kafka`.
    #[cfg(feature = "kafka")]
    #[serde(default)]
    pub kafka: answerloop_broker::kafka::settings::KafkaFile,
}

impl FileConfig {
    /// `broker` with what this file says of brokers (the `[kafka]` section).
    pub fn onto(&self, broker: &mut answerloop_broker::select::BrokerArgs) {
        #[cfg(feature = "kafka")]
        {
            broker.kafka_file = self.kafka.clone();
        }
        let _ = broker;
    }
}

/// `[llm]`: which provider, and how the agent treats it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFile {
    pub provider: Option<ProviderKind>,
    pub base_url: Option<String>,
    pub model: Option<String>,
    /// A file holding the API key (otherwise the provider's environment variable).
    pub api_key_file: Option<PathBuf>,
    pub timeout_secs: Option<f64>,
    /// How long a timed-out request may stay at the server in all.
    pub abandon_secs: Option<f64>,
    /// Requests at an OpenAI-compatible server at once, timed-out ones included.
    pub max_in_flight: Option<usize>,
    pub concurrency: Option<usize>,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    pub max_llm_attempts: Option<u32>,
    pub regenerate_prompt: Option<RegeneratePrompt>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub temperature_step: Option<f32>,
    pub regenerate_candidates: Option<u32>,
    /// Local model generation threads.
    pub model_workers: Option<usize>,
    #[serde(default)]
    pub retry: RetryFile,
    /// `[llm.circuit]`: each provider's circuit breaker.
    #[serde(default)]
    pub circuit: CircuitFile,
    /// `[[llm.fallback]]`: providers to fall back on, in order.
    #[serde(default)]
    pub fallback: Vec<FallbackFile>,
}

/// `[llm.circuit]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CircuitFile {
    /// Consecutive failed calls (connection failures, time-outs, 5xx) that
    /// open a provider's circuit; 0 turns the breaker off.
    pub failure_threshold: Option<u32>,
    /// How long the circuit stays open the first time, s.
    pub open_secs: Option<f64>,
    /// Each reopening after a failed probe lasts this many times the last.
    pub open_factor: Option<f64>,
    /// The longest an opening lasts, s.
    pub open_cap_secs: Option<f64>,
}

/// `[[llm.fallback]]`: one provider to fall back on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackFile {
    pub provider: ProviderKind,
    pub base_url: Option<String>,
    pub model: Option<String>,
    pub api_key_file: Option<PathBuf>,
}

/// `[llm.retry]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryFile {
    pub base_ms: Option<u64>,
    pub factor: Option<f32>,
    pub cap_ms: Option<u64>,
    pub max_retries: Option<u32>,
    pub budget_ratio: Option<f32>,
    pub budget_min_per_sec: Option<u32>,
    pub quota_delay_secs: Option<f64>,
}

/// `[scoring]`
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScoringFile {
    pub threshold: Option<f32>,
    pub max_attempts: Option<u32>,
}

impl FileConfig {
    /// The explicit file, else the home's `answerloop.toml` if it exists,
    /// else defaults.
    pub fn load(explicit: Option<&Path>, home: &Path) -> anyhow::Result<Self> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None => {
                let in_home = home.join(FILE_NAME);
                if !in_home.is_file() {
                    return Ok(Self::default());
                }
                in_home
            }
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read the config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("bad config file {}", path.display()))
    }

    /// Parse the file's text. Errors give the line and column and what was
    /// wrong, but never quote the file: a misplaced key would be echoed.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        toml::from_str(text).map_err(|e| {
            let at = e.span().map(|span| {
                let start = span.start.min(text.len());
                let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
                let line = text[..start].matches('\n').count() + 1;
                let column = start - line_start + 1;
                // The key is named; its value is not (it could be a secret).
                let key = text[line_start..]
                    .lines()
                    .next()
                    .and_then(|l| l.split_once('='))
                    .map(|(k, _)| format!(" ({})", k.trim()))
                    .unwrap_or_default();
                format!("line {line}, column {column}{key}: ")
            });
            anyhow::anyhow!(
                "{}{}",
                at.unwrap_or_default(),
                redact_strings(e.message().trim())
            )
        })
    }
}

/// LLM flags; each overrides the config file, which overrides the default.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct LlmArgs {
    /// Which model answers [default: local]; several, comma-separated, are
    /// a fallback order: the next takes the questions while the one before
    /// has its circuit open or its quota spent.
    #[arg(long, value_enum, env = "ANSWERLOOP_LLM", value_delimiter = ',')]
    pub llm: Vec<ProviderKind>,
    /// The provider's API root [default: the provider's own; OPENAI_BASE_URL
    /// for openai]; comma-separated, one a provider of --llm (empty: default).
    #[arg(long, env = "ANSWERLOOP_BASE_URL", value_delimiter = ',')]
    pub base_url: Vec<String>,
    /// The model name [default: the provider's usual small model];
    /// comma-separated, one a provider of --llm (empty: default).
    #[arg(long, env = "ANSWERLOOP_MODEL", value_delimiter = ',')]
    pub model: Vec<String>,
    /// File holding the first provider's API key; otherwise OPENAI_API_KEY or GEMINI_API_KEY. Never pass a key itself.
    #[arg(long, value_name = "FILE")]
    pub api_key_file: Option<PathBuf>,
    /// Per-request time-out in seconds [default: 60].
    #[arg(long)]
    pub llm_timeout_secs: Option<f64>,
    /// How long a timed-out request may stay at an OpenAI-compatible server, whose answer a retry waits for instead of sending it again, in seconds [default: four times the time-out].
    #[arg(long)]
    pub llm_abandon_secs: Option<f64>,
    /// Requests at an OpenAI-compatible server at once, timed-out ones still being served included; set it to llama-server's --parallel so that it never queues ours [default: no cap].
    #[arg(long)]
    pub max_in_flight: Option<usize>,
    /// Calls in flight at once [default: 8].
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Requests per minute the provider allows [default: no limit].
    #[arg(long)]
    pub rpm: Option<u32>,
    /// Tokens per minute the provider allows [default: no limit].
    #[arg(long)]
    pub tpm: Option<u32>,
    /// LLM calls a question may take in all [default: 10].
    #[arg(long)]
    pub max_llm_attempts: Option<u32>,
    /// How a regenerated question is put to the model [default: feedback].
    #[arg(long, value_enum)]
    pub regenerate_prompt: Option<RegeneratePrompt>,
    /// Most tokens an answer may take [default: 256].
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Sampling temperature [default: 0].
    #[arg(long)]
    pub temperature: Option<f32>,
    /// Added to the temperature for each attempt after the first (a
    /// regenerated question samples further from its first answer) [default: 0].
    #[arg(long)]
    pub temperature_step: Option<f32>,
    /// Answers drawn for each regenerated attempt, each from its own seed;
    /// the one the scorer rates highest goes on [default: 3]. 1 draws one.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=MAX_REGENERATE_CANDIDATES as i64))]
    pub regenerate_candidates: Option<u32>,
    /// First backoff delay's envelope, ms [default: 500].
    #[arg(long)]
    pub retry_base_ms: Option<u64>,
    /// Backoff growth factor [default: 2].
    #[arg(long)]
    pub retry_factor: Option<f32>,
    /// Largest backoff envelope, ms [default: 30000].
    #[arg(long)]
    pub retry_cap_ms: Option<u64>,
    /// Retries of one call before the question is dead-lettered [default: 6].
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// Retries may be at most this share of calls over 10 s [default: 0.5].
    #[arg(long)]
    pub retry_budget_ratio: Option<f32>,
    /// How long a quota error parks a question when the provider names no delay, s [default: 60].
    #[arg(long)]
    pub quota_delay_secs: Option<f64>,
    /// Consecutive failed calls (connection failures, time-outs, 5xx) that
    /// open a provider's circuit; 0 turns the breaker off [default: 5].
    #[arg(long)]
    pub circuit_failures: Option<u32>,
    /// How long a circuit stays open before its first probe, s [default: 5].
    #[arg(long)]
    pub circuit_open_secs: Option<f64>,
    /// Each reopening after a failed probe lasts this many times the last [default: 2].
    #[arg(long)]
    pub circuit_open_factor: Option<f64>,
    /// The longest a circuit stays open before a probe, s [default: 30].
    #[arg(long)]
    pub circuit_open_cap_secs: Option<f64>,
    /// Local model: generation workers, each on its own thread [default: one a core, at most 4].
    #[arg(long)]
    pub model_workers: Option<usize>,
    /// Local model: requests that may wait for a worker [default: 64].
    #[arg(long)]
    pub model_queue: Option<usize>,
    /// Seed for sampling at a temperature above 0; each attempt at each question samples from its own seed derived from it [default: fixed].
    #[arg(long)]
    pub sample_seed: Option<u64>,
}

/// What the LLM agent runs with, after merging.
#[derive(Debug, Clone)]
pub struct LlmSettings {
    /// The first provider in the fallback order.
    pub provider: ProviderSpec,
    /// The providers after it, in order.
    pub fallbacks: Vec<ProviderSpec>,
    pub agent: LlmAgentConfig,
}

impl LlmSettings {
    /// Every provider, in fallback order.
    pub fn providers(&self) -> Vec<ProviderSpec> {
        std::iter::once(self.provider.clone())
            .chain(self.fallbacks.iter().cloned())
            .collect()
    }
}

/// One provider of the fallback order as the file describes it.
struct FileProvider<'a> {
    kind: ProviderKind,
    base_url: Option<&'a String>,
    model: Option<&'a String>,
    api_key_file: Option<&'a PathBuf>,
}

impl LlmArgs {
    /// Merge flags over the file over defaults; `scoring` is the resolved
    /// scoring params. Reads the API key from its file or the environment.
    pub fn resolve(
        &self,
        file: &LlmFile,
        scoring: Params,
        models: ModelCache,
    ) -> anyhow::Result<LlmSettings> {
        let retry_file = &file.retry;
        let defaults = LlmAgentConfig::default();
        let secs = |name: &str, v: f64| -> anyhow::Result<Duration> {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "{name} must be a positive number of seconds, not {v}"
            );
            Ok(Duration::from_secs_f64(v))
        };
        let timeout = secs(
            "the LLM time-out",
            self.llm_timeout_secs.or(file.timeout_secs).unwrap_or(60.0),
        )?;
        let local_defaults = LocalConfig::default();
        let local = LocalConfig {
            workers: self
                .model_workers
                .or(file.model_workers)
                .unwrap_or(local_defaults.workers),
            queue: self.model_queue.unwrap_or(local_defaults.queue),
            seed: self.sample_seed.unwrap_or(defaults.sample_seed),
            ..local_defaults
        };
        let sample_seed = self.sample_seed.unwrap_or(defaults.sample_seed);
        anyhow::ensure!(local.workers >= 1, "--model-workers must be at least 1");
        let concurrency = self
            .concurrency
            .or(file.concurrency)
            .unwrap_or(defaults.rate.concurrency);
        anyhow::ensure!(concurrency >= 1, "concurrency must be at least 1");
        let in_flight = InFlightConfig {
            max: self.max_in_flight.or(file.max_in_flight),
            abandon: match self.llm_abandon_secs.or(file.abandon_secs) {
                Some(v) => Some(secs("the abandon time", v)?),
                None => None,
            },
        };
        let mut specs = self.providers(file, timeout)?.into_iter().map(|spec| {
            spec.with_local(models.clone(), local)
                .with_in_flight(in_flight)
        });
        let provider = specs.next().expect("at least one provider");
        let fallbacks = specs.collect();

        let max_retries = self
            .max_retries
            .or(retry_file.max_retries)
            .unwrap_or(defaults.retry.max_retries);
        let retry = RetryConfig {
            base: pick_ms(self.retry_base_ms, retry_file.base_ms, defaults.retry.base),
            factor: self
                .retry_factor
                .or(retry_file.factor)
                .unwrap_or(defaults.retry.factor),
            cap: pick_ms(self.retry_cap_ms, retry_file.cap_ms, defaults.retry.cap),
            max_retries,
            budget_ratio: self
                .retry_budget_ratio
                .or(retry_file.budget_ratio)
                .unwrap_or(defaults.retry.budget_ratio),
            budget_min_per_sec: retry_file
                .budget_min_per_sec
                .unwrap_or(defaults.retry.budget_min_per_sec),
            budget_window: defaults.retry.budget_window,
            quota_delay: match self.quota_delay_secs.or(retry_file.quota_delay_secs) {
                Some(v) => secs("the quota delay", v)?,
                None => defaults.retry.quota_delay,
            },
        };
        anyhow::ensure!(
            retry.factor >= 1.0,
            "the retry factor must be at least 1, not {}",
            retry.factor
        );
        let regenerate_candidates = self
            .regenerate_candidates
            .or(file.regenerate_candidates)
            .unwrap_or(defaults.regenerate_candidates);
        if !(1..=MAX_REGENERATE_CANDIDATES).contains(&regenerate_candidates) {
            anyhow::bail!(
                "llm.regenerate_candidates = {regenerate_candidates} in the configuration file: it must be from 1 to {MAX_REGENERATE_CANDIDATES}"
            );
        }
        let agent = LlmAgentConfig {
            breaker: self.breaker(&file.circuit)?,
            rate: RateConfig {
                concurrency,
                requests_per_minute: self.rpm.or(file.requests_per_minute),
                tokens_per_minute: self.tpm.or(file.tokens_per_minute),
                ..defaults.rate
            },
            retry,
            max_llm_attempts: self
                .max_llm_attempts
                .or(file.max_llm_attempts)
                .unwrap_or(defaults.max_llm_attempts),
            params: scoring,
            regenerate_prompt: self
                .regenerate_prompt
                .or(file.regenerate_prompt)
                .unwrap_or(defaults.regenerate_prompt),
            max_tokens: self
                .max_tokens
                .or(file.max_tokens)
                .unwrap_or(defaults.max_tokens),
            temperature: self
                .temperature
                .or(file.temperature)
                .unwrap_or(defaults.temperature),
            temperature_step: self
                .temperature_step
                .or(file.temperature_step)
                .unwrap_or(defaults.temperature_step),
            regenerate_candidates,
            sample_seed,
            batch: defaults.batch,
            member: Default::default(),
            // Loaded by the commands that take `--scorer`.
            exact: None,
        };
        Ok(LlmSettings {
            provider,
            fallbacks,
            agent,
        })
    }

    /// The providers in fallback order: `--llm` with `--base-url` and
    /// `--model` by position, over the file's `[llm]` and `[[llm.fallback]]`
    /// (an entry of the file applies where its provider is the one at its
    /// position), over the providers' defaults.
    fn providers(&self, file: &LlmFile, timeout: Duration) -> anyhow::Result<Vec<ProviderSpec>> {
        let in_file: Vec<FileProvider> = std::iter::once(FileProvider {
            kind: file.provider.unwrap_or(ProviderKind::Local),
            base_url: file.base_url.as_ref(),
            model: file.model.as_ref(),
            api_key_file: file.api_key_file.as_ref(),
        })
        .chain(file.fallback.iter().map(|f| FileProvider {
            kind: f.provider,
            base_url: f.base_url.as_ref(),
            model: f.model.as_ref(),
            api_key_file: f.api_key_file.as_ref(),
        }))
        .collect();
        let kinds: Vec<ProviderKind> = match self.llm.is_empty() {
            true => in_file.iter().map(|f| f.kind).collect(),
            false => self.llm.clone(),
        };
        for (flag, values) in [("--base-url", &self.base_url), ("--model", &self.model)] {
            anyhow::ensure!(
                values.len() <= kinds.len(),
                "{flag} names {} values for {} provider(s) of --llm",
                values.len(),
                kinds.len()
            );
        }
        let flag =
            |values: &[String], i: usize| values.get(i).filter(|v| !v.trim().is_empty()).cloned();
        let mut specs = Vec::new();
        for (i, kind) in kinds.iter().copied().enumerate() {
            let from_file = in_file.get(i).filter(|f| f.kind == kind);
            let base_url = flag(&self.base_url, i).or_else(|| from_file?.base_url.cloned());
            let model = flag(&self.model, i).or_else(|| from_file?.model.cloned());
            let key_file = match i {
                0 => self.api_key_file.as_ref(),
                _ => None,
            }
            .or_else(|| from_file?.api_key_file);
            let api_key = match key_file {
                Some(path) => Some(Secret::from_file(path).map_err(anyhow::Error::msg)?),
                None => kind.key_env().and_then(Secret::from_env),
            };
            specs.push(ProviderSpec::new(kind, base_url, model, api_key, timeout));
        }
        Ok(specs)
    }

    /// The circuit breaker: flags over `[llm.circuit]` over defaults.
    fn breaker(&self, file: &CircuitFile) -> anyhow::Result<BreakerConfig> {
        let defaults = BreakerConfig::default();
        let secs = |name: &str, flag: Option<f64>, file: Option<f64>, default: Duration| match flag
            .or(file)
        {
            None => Ok(default),
            Some(v) if v.is_finite() && v > 0.0 => Ok(Duration::from_secs_f64(v)),
            Some(v) => Err(anyhow::anyhow!(
                "{name} must be a positive number of seconds, not {v}"
            )),
        };
        let config = BreakerConfig {
            failure_threshold: self
                .circuit_failures
                .or(file.failure_threshold)
                .unwrap_or(defaults.failure_threshold),
            open_base: secs(
                "the circuit's open time (--circuit-open-secs)",
                self.circuit_open_secs,
                file.open_secs,
                defaults.open_base,
            )?,
            open_factor: self
                .circuit_open_factor
                .or(file.open_factor)
                .unwrap_or(defaults.open_factor),
            open_cap: secs(
                "the circuit's longest open time (--circuit-open-cap-secs)",
                self.circuit_open_cap_secs,
                file.open_cap_secs,
                defaults.open_cap,
            )?,
        };
        anyhow::ensure!(
            config.open_factor.is_finite() && config.open_factor >= 1.0,
            "the circuit's open factor must be at least 1, not {}",
            config.open_factor
        );
        anyhow::ensure!(
            config.open_cap >= config.open_base,
            "the circuit's longest open time ({:?}) is shorter than its first ({:?})",
            config.open_cap,
            config.open_base
        );
        Ok(config)
    }
}

/// `invalid type: string "sk-…", expected usize` without the string.
fn redact_strings(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(at) = rest.find("string \"") {
        out.push_str(&rest[..at]);
        out.push_str("a string");
        let after = &rest[at + "string \"".len()..];
        rest = after.find('"').map_or("", |end| &after[end + 1..]);
    }
    out.push_str(rest);
    out
}

fn pick_ms(flag: Option<u64>, file: Option<u64>, default: Duration) -> Duration {
    flag.or(file).map_or(default, Duration::from_millis)
}

/// Scoring flags over the file over defaults, checked as the SmartModules check them.
/// `--threshold` and `--max-attempts`, for every command that scores.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ScoringArgs {
    /// Accept answers scoring at or above this [default: 0.4].
    #[arg(long)]
    pub threshold: Option<f32>,
    /// At most this many scored answers a question [default: 3].
    #[arg(long)]
    pub max_attempts: Option<u32>,
}

impl ScoringArgs {
    /// Flags over the file over defaults.
    pub fn resolve(&self, file: &ScoringFile) -> anyhow::Result<Params> {
        scoring(self.threshold, self.max_attempts, file)
    }
}

pub fn scoring(
    threshold: Option<f32>,
    max_attempts: Option<u32>,
    file: &ScoringFile,
) -> anyhow::Result<Params> {
    let defaults = Params::default();
    let merged = Params {
        threshold: threshold.or(file.threshold).unwrap_or(defaults.threshold),
        max_attempts: max_attempts
            .or(file.max_attempts)
            .unwrap_or(defaults.max_attempts),
    };
    Ok(Params::from_map(&merged.to_map())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file = FileConfig::parse(
            "[llm]\nprovider = \"ollama\"\nmodel = \"tinyllama\"\nconcurrency = 3\n[llm.retry]\nmax_retries = 2\n[scoring]\nthreshold = 0.5\n",
        )
        .unwrap();
        let args = LlmArgs {
            concurrency: Some(5),
            ..LlmArgs::default()
        };
        let params = scoring(None, None, &file.scoring).unwrap();
        let settings = args
            .resolve(&file.llm, params, ModelCache::new("m"))
            .unwrap();
        assert_eq!(settings.provider.kind(), ProviderKind::Ollama);
        assert_eq!(settings.provider.model(), "tinyllama");
        assert_eq!(settings.agent.rate.concurrency, 5);
        assert_eq!(settings.agent.retry.max_retries, 2);
        assert_eq!(settings.agent.params.threshold, 0.5);
        assert_eq!(settings.agent.max_tokens, 256);
    }

    #[test]
    fn fallback_providers_come_from_flags_by_position_or_from_the_file() {
        let file = FileConfig::parse(
            "[llm]\nprovider = \"openai\"\nbase_url = \"http://a/v1\"\n\
             [llm.circuit]\nfailure_threshold = 2\nopen_secs = 1.5\n\
             [[llm.fallback]]\nprovider = \"ollama\"\nmodel = \"qwen\"\n",
        )
        .unwrap();
        let resolve = |args: LlmArgs| {
            args.resolve(&file.llm, Params::default(), ModelCache::new("m"))
                .unwrap()
        };
        let from_file = resolve(LlmArgs::default());
        let kinds: Vec<_> = from_file.providers().iter().map(|p| p.kind()).collect();
        assert_eq!(kinds, [ProviderKind::Openai, ProviderKind::Ollama]);
        assert_eq!(from_file.fallbacks[0].model(), "qwen");
        assert_eq!(from_file.agent.breaker.failure_threshold, 2);
        assert_eq!(
            from_file.agent.breaker.open_base,
            Duration::from_millis(1500)
        );
        let flags = resolve(LlmArgs {
            llm: vec![ProviderKind::Gemini, ProviderKind::Openai],
            model: vec![String::new(), "m2".into()],
            circuit_failures: Some(0),
            ..LlmArgs::default()
        });
        assert_eq!(flags.provider.kind(), ProviderKind::Gemini);
        assert_eq!(
            flags.provider.model(),
            "gemini-2.0-flash",
            "an empty entry is the default"
        );
        assert_eq!(flags.fallbacks[0].model(), "m2");
        assert_eq!(flags.agent.breaker.failure_threshold, 0);
        let too_many = LlmArgs {
            llm: vec![ProviderKind::Openai],
            base_url: vec!["http://a".into(), "http://b".into()],
            ..LlmArgs::default()
        };
        let err = too_many
            .resolve(&file.llm, Params::default(), ModelCache::new("m"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--base-url names 2 values for 1 provider"),
            "{err}"
        );
        let short_cap = LlmArgs {
            circuit_open_secs: Some(60.0),
            circuit_open_cap_secs: Some(5.0),
            ..LlmArgs::default()
        };
        assert!(short_cap
            .resolve(&file.llm, Params::default(), ModelCache::new("m"))
            .is_err());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_them() {
        let err = FileConfig::parse("[llm]\nmodle = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("modle"), "{err}");
        let err = FileConfig::parse("[llm]\nprovider = \"gpt\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gpt"), "{err}");
    }

    #[test]
    fn bad_values_are_refused() {
        let params = Params::default();
        let file = LlmFile::default();
        let zero = LlmArgs {
            concurrency: Some(0),
            ..LlmArgs::default()
        };
        assert!(zero.resolve(&file, params, ModelCache::new("m")).is_err());
        let nan = LlmArgs {
            llm_timeout_secs: Some(f64::NAN),
            ..LlmArgs::default()
        };
        assert!(nan.resolve(&file, params, ModelCache::new("m")).is_err());
        assert!(scoring(Some(2.0), None, &ScoringFile::default()).is_err());
    }

    #[test]
    fn a_missing_explicit_file_is_an_error_and_a_missing_home_file_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(FileConfig::load(Some(&dir.path().join("nope.toml")), dir.path()).is_err());
        assert!(FileConfig::load(None, dir.path()).is_ok());
    }
}
