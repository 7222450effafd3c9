//! `answerloop bench llm|model|score|pipeline`: each prints one JSON object.
//!
//! `bench llm`: how much of a provider's capacity the LLM agent's call
//! policy turns into answers, against llm-sim with a set quota, latency and
//! fault rate.
//!
//! utilisation = successful calls per second / min(quota, concurrency / latency)

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::traffic::dataset;
use answerloop_llm::caller::{CallOutcome, Caller};
use answerloop_llm::limiter::RateConfig;
use answerloop_llm::prompt::{self, RegeneratePrompt};
use answerloop_llm::retry::RetryConfig;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm::LlmStats;
use answerloop_llm_sim::{FaultKind, Quality, SimConfig, SimServer};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    what: BenchWhat,
}

#[derive(Debug, clap::Subcommand)]
enum BenchWhat {
    /// The LLM call policy against llm-sim: utilisation of the provider's capacity.
    Llm(LlmBench),
    /// The local model: prompt and generation tokens per second
    /// (threads: the global --model-threads).
    Model(ModelBench),
    /// The answer-score chain through fluvio-smartengine, records per second,
    /// beside the exact scorer's.
    Score(ScoreBench),
    /// End to end with llm-sim at zero latency: final questions a second in
    /// one process (`run`) and with the broker server and the three agents
    /// as separate processes, with each process's peak resident memory.
    Pipeline(PipelineBench),
}

#[derive(Debug, clap::Args)]
struct PipelineBench {
    /// Distinct questions (built from the sample).
    #[arg(long, default_value_t = 20_000)]
    questions: usize,
    /// Measure only the separate processes.
    #[arg(long)]
    processes_only: bool,
    /// With `--broker fluvio`, the one-process run goes to the cluster (use
    /// a fresh `--topic-prefix`); the separate processes always share a
    /// served embedded broker, so they are left out.
    #[command(flatten)]
    broker: answerloop_broker::select::BrokerArgs,
}

#[derive(Debug, clap::Args)]
struct ScoreBench {
    #[command(flatten)]
    home: crate::cli::HomeArg,
    /// Records through the chain.
    #[arg(long, default_value_t = 20_000)]
    records: usize,
    /// Records a batch (a Fluvio fetch's worth).
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Size of each answer and each reference, bytes.
    #[arg(long, default_value_t = 1_024)]
    text_bytes: usize,
    /// Pairs scored by the exact scorer for its figure (it is slow).
    #[arg(long, default_value_t = 64)]
    exact_pairs: usize,
}

#[derive(Debug, clap::Args)]
struct ModelBench {
    #[command(flatten)]
    home: crate::cli::HomeArg,
    /// Most tokens generated a run.
    #[arg(long, default_value_t = 128)]
    tokens: usize,
    /// Runs (over the sample's first questions); figures are totals over all runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Keep the Q4_1 matrices as shipped, to measure what requantising buys.
    #[arg(long)]
    no_requantize: bool,
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
        BenchWhat::Model(bench) => tokio::task::spawn_blocking(move || model(bench)).await?,
        BenchWhat::Score(bench) => tokio::task::spawn_blocking(move || score(bench)).await?,
        BenchWhat::Pipeline(bench) => pipeline(bench).await,
    }
}

async fn pipeline(args: PipelineBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.questions > 0, "--questions must be at least 1");
    let dir = tempfile::tempdir()?;
    let in_process = if args.processes_only {
        None
    } else {
        let home = dir.path().join("in-process");
        let csv = dir.path().join("questions.csv");
        crate::launcher::write_questions(&csv, args.questions)?;
        let options = crate::pipeline::RunOptions {
            home: crate::home::Home::resolve(Some(&home))?,
            data: Some(csv),
            limit: None,
            provider: ProviderSpec::new(
                ProviderKind::Sim,
                None,
                None,
                None,
                Duration::from_secs(30),
            ),
            sim: SimConfig::default(),
            agent: Default::default(),
            schedule: Default::default(),
            broker: args.broker.clone(),
            stall_timeout: Duration::from_secs(600),
            progress: false,
        };
        let summary = crate::pipeline::run(options).await?;
        Some(json!({
            "questions_per_s": (summary.stored + summary.dead_letters) as f64 / summary.elapsed_s,
            "elapsed_s": summary.elapsed_s,
            "llm_calls": summary.llm_calls,
            "peak_rss_mb": crate::launcher::peak_rss_mb_of(std::process::id()),
        }))
    };
    let processes = if args.broker.broker == answerloop_broker::select::BrokerKind::Embedded {
        Some(processes(&dir.path().join("processes"), args.questions).await?)
    } else {
        None
    };
    println!(
        "{}",
        json!({
            "questions": args.questions,
            "broker": format!("{:?}", args.broker.broker).to_lowercase(),
            "llm": "llm-sim, zero latency, no faults",
            "in_process": in_process,
            "processes": processes,
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// The pipeline as processes (the broker server and three agents), no
/// faults, until every question is final: questions a second from the
/// agents' start to the last one, and each process's peak memory.
async fn processes(dir: &std::path::Path, questions: usize) -> anyhow::Result<serde_json::Value> {
    use crate::launcher::{Fleet, FleetPlan};
    let plan = FleetPlan {
        fail_rate: 0.0,
        traffic_rate: None,
        seed: 1,
    };
    let (mut fleet, sent) = Fleet::start(dir, questions, &plan).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    while fleet.finals().await.is_none_or(|n| n < questions as u64) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the pipeline did not finish within an hour"
        );
        fleet.check_running()?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed_s = started.elapsed().as_secs_f64();
    let peak_rss_mb = fleet.peak_rss_mb();
    fleet.stop().await;
    let finished = crate::launcher::finished(dir, &sent).await?;
    let tally = &finished.tally;
    anyhow::ensure!(
        tally.lost.is_empty() && tally.duplicates == 0,
        "the pipeline lost {} and doubled {} questions",
        tally.lost.len(),
        tally.duplicates
    );
    Ok(json!({
        "questions_per_s": tally.finals() as f64 / elapsed_s,
        "elapsed_s": elapsed_s,
        "answer_records": finished.answer_records,
        "peak_rss_mb": peak_rss_mb,
    }))
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
    let stats = LlmStats::new();
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
                    let Ok(outcome) = tokio::time::timeout_at(
                        deadline,
                        caller.call(&request, &mut 0, &mut Default::default()),
                    )
                    .await
                    else {
                        break;
                    };
                    if Instant::now() < warm {
                        continue;
                    }
                    match outcome {
                        CallOutcome::Answered { .. } => answered.fetch_add(1, Ordering::Relaxed),
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
        "calls": stats.calls(),
        "retries": stats.retries(),
        "sim_over_quota": sim_stats.over_quota,
        "sim_faults": sim_stats.faults,
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

fn model(args: ModelBench) -> anyhow::Result<ExitCode> {
    use answerloop_models::smollm::{chat_prompt, LoadOptions};
    use answerloop_models::{GenerateOptions, SmolLm, SMOLLM2};

    let cache = super::models::cache(&args.home);
    crate::providers::ensure_model(&cache, &answerloop_models::SMOLLM2)?;
    let started = Instant::now();
    let options = LoadOptions {
        requantize: !args.no_requantize,
        ..LoadOptions::default()
    };
    let model = SmolLm::load(&cache.main_file(&SMOLLM2), options)?;
    let load_secs = started.elapsed().as_secs_f64();
    let mut session = model.session();
    let generate = GenerateOptions {
        max_tokens: args.tokens,
        ..GenerateOptions::default()
    };
    let (mut prompt_tokens, mut prompt_secs, mut gen_tokens, mut gen_secs) = (0, 0.0, 0, 0.0);
    for question in dataset::sample().questions.iter().take(args.runs.max(1)) {
        let request = prompt::request(question, RegeneratePrompt::Plain, args.tokens as u32, 0.0);
        let text = chat_prompt(
            request
                .messages
                .iter()
                .map(|m| (m.role.as_str(), m.content.as_str())),
        );
        let g = session.generate(&text, &generate)?;
        prompt_tokens += g.prompt_tokens;
        prompt_secs += g.prompt_time.as_secs_f64();
        gen_tokens += g.completion_tokens;
        gen_secs += g.generation_time.as_secs_f64();
    }
    let report = json!({
        "bench": "model",
        "model": answerloop_llm::local::MODEL_NAME,
        "threads": std::env::var("CANDLE_NUM_THREADS").ok(),
        "requantized": !args.no_requantize,
        "load_secs": load_secs,
        "runs": args.runs.max(1),
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_per_sec": prompt_tokens as f64 / prompt_secs.max(1e-9),
        "generated_tokens": gen_tokens,
        "generated_tokens_per_sec": gen_tokens as f64 / gen_secs.max(1e-9),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// Text of about `bytes` bytes made of the sample's answers, starting at `from`.
fn text_of(questions: &[answerloop_schema::Question], from: usize, bytes: usize) -> String {
    let mut text = String::new();
    for q in questions.iter().cycle().skip(from) {
        if text.len() >= bytes {
            break;
        }
        text.push_str(&q.reference);
        text.push(' ');
    }
    let mut end = bytes.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    text
}

fn score(args: ScoreBench) -> anyhow::Result<ExitCode> {
    use answerloop_broker::wasm_chain::WasmChain;
    use answerloop_broker::{ChainSpec, Record};
    use answerloop_schema::{Answer, Question};

    let questions = dataset::sample().questions;
    // Distinct records, so no layer can cache its way to a figure.
    let records: Vec<Record> = (0..args.batch.max(1))
        .map(|i| {
            let question = Question::new(
                format!("Question {i}"),
                "",
                text_of(&questions, i, args.text_bytes),
                1,
            );
            let answer = Answer::new(
                question,
                text_of(&questions, i + 3, args.text_bytes),
                "bench",
                1,
            );
            Record {
                key: None,
                value: serde_json::to_vec(&answer).expect("an answer serialises"),
            }
        })
        .collect();
    let engine = fluvio_smartengine::SmartEngine::new();
    let batches = args.records.div_ceil(args.batch.max(1));
    // Records through a chain of `module` in batches; the last batch's
    // output and the time. Never rebuilt: the engine alone is measured.
    let run = |module: &answerloop_wasm::SmartModule,
               records: &[Record]|
     -> anyhow::Result<(Vec<Record>, f64)> {
        let spec = ChainSpec::single(module.name, &answerloop_scoring::Params::default());
        let mut chain = WasmChain::build(&engine, &spec)?.recycle_after(u64::MAX);
        let started = Instant::now();
        let mut last = Vec::new();
        for _ in 0..batches {
            last = chain.process(records.to_vec())?;
        }
        Ok((last, started.elapsed().as_secs_f64()))
    };
    let (scored, chain_secs) = run(&answerloop_wasm::ANSWER_SCORE, &records)?;
    let out = batches * records.len();
    // The same records, scored, through a SmartModule that only parses
    // them: what the engine and the JSON cost without the scoring.
    let (_, parse_secs) = run(&answerloop_wasm::QUALITY_GATE, &scored)?;

    let cache = super::models::cache(&args.home);
    crate::providers::ensure_model(&cache, &answerloop_models::MINILM)?;
    let exact = answerloop_models::MiniLm::load(&cache)?;
    let started = Instant::now();
    for i in 0..args.exact_pairs {
        exact.score(
            &text_of(&questions, i + 3, args.text_bytes),
            &text_of(&questions, i, args.text_bytes),
        )?;
    }
    let exact_secs = started.elapsed().as_secs_f64();

    let report = json!({
        "bench": "score",
        "text_bytes": args.text_bytes,
        "record_bytes": records.iter().map(|r| r.value.len()).sum::<usize>() / records.len(),
        "records": out,
        "chain_records_per_sec": out as f64 / chain_secs,
        "parse_only_records_per_sec": (batches * scored.len()) as f64 / parse_secs,
        "exact_pairs": args.exact_pairs,
        "exact_records_per_sec": args.exact_pairs as f64 / exact_secs,
        "speedup": (out as f64 / chain_secs) / (args.exact_pairs as f64 / exact_secs),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}
