//! `answerloop llm-sim`: the simulator as a standalone server (a test tool).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use answerloop_llm_sim::{FaultKind, Quality, SimConfig, SimServer};

/// Simulator knobs, shared by `llm-sim` and `run --llm sim`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimKnobs {
    /// Mean added latency of an answer, in milliseconds.
    #[arg(long = "sim-latency-ms", default_value_t = 0)]
    pub sim_latency_ms: u64,
    /// Latency varies uniformly by up to this much either side of the mean.
    #[arg(long = "sim-latency-jitter-ms", default_value_t = 0)]
    pub sim_latency_jitter_ms: u64,
    /// How close answers are to their references: uniform:LO,HI, beta:A,B or fixed:Q.
    #[arg(long = "sim-quality", default_value = "uniform:0.1,0.9")]
    pub sim_quality: Quality,
    /// Share of requests that fail, from 0 to 1.
    #[arg(long = "sim-fail-rate", default_value_t = 0.0)]
    pub sim_fail_rate: f64,
    /// Which faults to inject, comma-separated.
    #[arg(
        long = "sim-fail-kinds",
        value_delimiter = ',',
        default_value = "503,500,429,quota,timeout,malformed"
    )]
    pub sim_fail_kinds: Vec<FaultKind>,
    /// The first N requests fail (taking the fault kinds in turn), then --sim-fail-rate applies.
    #[arg(long = "sim-fail-first", default_value_t = 0)]
    pub sim_fail_first: u64,
    /// Retry-After sent with 429 rate limits and quota errors, in seconds.
    #[arg(long = "sim-retry-after-secs", default_value_t = 1.0)]
    pub sim_retry_after_secs: f64,
    /// How long a `timeout` fault holds a request, in seconds.
    #[arg(long = "sim-hang-secs", default_value_t = 120.0)]
    pub sim_hang_secs: f64,
    #[arg(long = "sim-seed", default_value_t = 0)]
    pub sim_seed: u64,
    /// Answers a second the simulated account allows; past it, 429 with Retry-After.
    #[arg(long = "sim-quota-per-sec")]
    pub sim_quota_per_sec: Option<u32>,
}

impl SimKnobs {
    pub fn config(&self) -> anyhow::Result<SimConfig> {
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.sim_fail_rate),
            "--sim-fail-rate {} is not a share from 0 to 1",
            self.sim_fail_rate
        );
        let secs = |name: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v >= 0.0,
                "{name} {v} is not a number of seconds"
            );
            Ok(Duration::from_secs_f64(v))
        };
        Ok(SimConfig {
            latency: Duration::from_millis(self.sim_latency_ms),
            latency_jitter: Duration::from_millis(self.sim_latency_jitter_ms),
            quality: self.sim_quality,
            fail_rate: self.sim_fail_rate,
            fail_kinds: self.sim_fail_kinds.clone(),
            fail_first: self.sim_fail_first,
            retry_after: secs("--sim-retry-after-secs", self.sim_retry_after_secs)?,
            hang: secs("--sim-hang-secs", self.sim_hang_secs)?,
            seed: self.sim_seed,
            quota_per_sec: self.sim_quota_per_sec,
            ..SimConfig::default()
        })
    }
}

#[derive(Debug, clap::Args)]
#[command(
    about = "TEST TOOL, not a model: serves the OpenAI chat-completions API on loopback, \
    answering each known question with text of a chosen similarity to its reference, and \
    injecting the faults real LLM APIs return."
)]
pub struct SimArgs {
    /// Address to serve on (keep it on loopback).
    #[arg(long, default_value = "127.0.0.1:8089")]
    listen: SocketAddr,
    /// The question set whose references the answers are made from; default: the built-in sample.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Environment variable holding a key that requests must carry.
    #[arg(long, value_name = "VAR")]
    require_key_env: Option<String>,
    #[command(flatten)]
    knobs: SimKnobs,
}

pub async fn execute(args: SimArgs) -> anyhow::Result<ExitCode> {
    let references = crate::providers::sim_references(args.data.as_deref(), None)?;
    let mut config = args.knobs.config()?;
    if let Some(var) = &args.require_key_env {
        let key = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("--require-key-env: {var} is not set"))?;
        config.api_key = Some(key);
    }
    let known = references.len();
    let server = SimServer::serve(args.listen, config, references).await?;
    eprintln!(
        "llm-sim (a test tool, not a model) serving {known} questions at {}",
        server.base_url()
    );
    tokio::select! {
        result = server.wait() => result?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
