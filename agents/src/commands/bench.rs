//! `answerloop bench llm`: how much of a provider's capacity the LLM agent's
//! call policy turns into answers, against llm-sim with a set quota, latency
//! and fault rate. Prints one JSON object.
//!
//! utilisation = successful calls per second / min(quota, concurrency / latency)

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::llm::caller::{Caller, LlmStats, Outcome};
use crate::llm::gate::RateConfig;
use crate::llm::prompt::{self, RegeneratePrompt};
use crate::llm::retry::RetryConfig;
use crate::llm::spec::{ProviderKind, ProviderSpec};
use crate::sim::{FaultKind, Quality, SimConfig, SimServer};
use crate::traffic::dataset;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
enum BenchWhat {
    /// The LLM call policy against llm-sim: utilisation of the provider's capacity.
    Llm(LlmBench),
}

#[derive(Debug, clap::Args)]
struct LlmBench {
    /// The simulated account's quota, answers a second.
    #[arg(long, default_value_t = 200)]
    quota_per_sec: u32,
    /// The simulated model's latency, ms.
    #[arg(long, default_value_t = 50)]
    latency_ms: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Share of calls that fail with an overload fault.
    #[arg(long, default_value_t = 0.2)]
    fail_rate: f64,
    /// Which faults.
    #[arg(long, value_delimiter = ',', default_value = "503,500,429")]
    fail_kinds: Vec<FaultKind>,
    /// Retry-After of the simulator's rate-limit faults, ms.
    #[arg(long, default_value_t = 100)]
    retry_after_ms: u64,
    /// Measured time, after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
}

pub async fn execute(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.what {
        BenchWhat::Llm(bench) => llm(bench).await,
    }
}

async fn llm(args: LlmBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.duration_secs > 0.0 && args.warmup_secs >= 0.0,
        "durations must be positive"
    );
    let questions = dataset::sample().questions;
    let sim = SimServer::start(
        "127.0.0.1:0".parse().expect("an address"),
        SimConfig {
            latency: Duration::from_millis(args.latency_ms),
            quality: Quality::Fixed(1.0),
            fail_rate: args.fail_rate,
            fail_kinds: args.fail_kinds.clone(),
            retry_after: Duration::from_millis(args.retry_after_ms),
            quota_per_sec: Some(args.quota_per_sec),
            ..SimConfig::default()
        },
        &questions,
    )
    .await?;
    let provider = ProviderSpec::new(
        ProviderKind::Openai,
        Some(sim.base_url()),
        None,
        None,
        Duration::from_secs(10),
    )
    .connect(None)?;
    let stats = Arc::new(LlmStats::default());
    let rate = RateConfig {
        concurrency: args.concurrency,
        ..RateConfig::default()
    };
    let caller = Arc::new(Caller::new(
        provider,
        rate,
        RetryConfig::default(),
        u32::MAX,
        stats.clone(),
    ));

    let answered = Arc::new(AtomicU64::new(0));
    let given_up = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let warm = start + Duration::from_secs_f64(args.warmup_secs);
    let end = warm + Duration::from_secs_f64(args.duration_secs);
    // More workers than slots, so retries never starve the pipe.
    let workers: Vec<_> = (0..args.concurrency * 4)
        .map(|w| {
            let (caller, questions) = (caller.clone(), questions.clone());
            let (answered, given_up) = (answered.clone(), given_up.clone());
            tokio::spawn(async move {
                let mut i = w;
                while Instant::now() < end {
                    let question = &questions[i % questions.len()];
                    i += 1;
                    let request = prompt::request(question, RegeneratePrompt::Plain, 64, 0.0);
                    let deadline = tokio::time::Instant::from_std(end);
                    let Ok(outcome) =
                        tokio::time::timeout_at(deadline, caller.call(&request, &mut 0)).await
                    else {
                        break;
                    };
                    if Instant::now() < warm {
                        continue;
                    }
                    match outcome {
                        Outcome::Answered { .. } => answered.fetch_add(1, Ordering::Relaxed),
                        _ => given_up.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    let sim_stats = sim.state.stats.snapshot();
    sim.shutdown().await;

    let success_rps = answered.load(Ordering::Relaxed) as f64 / args.duration_secs;
    let by_latency = if args.latency_ms == 0 {
        f64::INFINITY
    } else {
        args.concurrency as f64 / (args.latency_ms as f64 / 1000.0)
    };
    let bound = f64::from(args.quota_per_sec).min(by_latency);
    let report = json!({
        "bench": "llm",
        "quota_per_sec": args.quota_per_sec,
        "latency_ms": args.latency_ms,
        "concurrency": args.concurrency,
        "fail_rate": args.fail_rate,
        "duration_secs": args.duration_secs,
        "success_per_sec": success_rps,
        "bound_per_sec": bound,
        "utilisation": success_rps / bound,
        "given_up": given_up.load(Ordering::Relaxed),
        "calls": LlmStats::get(&stats.calls),
        "retries": LlmStats::get(&stats.retries),
        "sim_over_quota": sim_stats.over_quota,
        "sim_faults": sim_stats.faults,
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
