//! `answerloop bench llm|model|score|pipeline|fleet|dataset`: each prints
//! one JSON object.
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

use answerloop_broker::select::{BrokerArgs, BrokerKind};

use crate::launcher::{Fleet, FleetBroker, FleetPlan};

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
    /// The answer-score chain through fluvio-smartengine, records per second
    /// (with the reference's vector carried, as traffic sends it, and
    /// without), beside a parse-only module's and the exact scorer's.
    Score(ScoreBench),
    /// End to end with llm-sim at zero latency: final questions a second in
    /// one process (`run`) and with the broker server and the three agents
    /// as separate processes, with each process's peak resident memory; with
    /// a Fluvio option, also in one process on the cluster, right after.
    Pipeline(PipelineBench),
    /// The pipeline as processes with 1, then more LLM agents sharing the
    /// questions (`--member`), llm-sim with a latency: how the rate grows.
    Fleet(FleetBench),
    /// The question set's cost as the file grows: peak memory and time to
    /// the first question of `agent traffic --limit 10` and of llm-sim
    /// loading it, on synthetic Yahoo! Answers CSVs of each size.
    Dataset(DatasetBench),
}

#[derive(Debug, clap::Args)]
struct DatasetBench {
    /// Rows of each file, in order, e.g. `100000,1400000`.
    #[arg(long, value_delimiter = ',', default_value = "100000,1400000")]
    rows: Vec<usize>,
    /// Also send the whole file with `agent traffic` (on the embedded
    /// broker in the same process, then on a served one), read it through
    /// as a stream alone,
    /// and hold it parsed whole as readers did before they streamed (the
    /// baseline).
    #[arg(long)]
    whole: bool,
    /// Parse this file whole and exit: the baseline's child process.
    #[arg(long, hide = true, value_name = "CSV")]
    hold: Option<std::path::PathBuf>,
    /// Stream this file to its end and exit: the reader's child process.
    #[arg(long, hide = true, value_name = "CSV")]
    stream: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FleetBench {
    /// Distinct questions (built from the sample) in each run.
    #[arg(long, default_value_t = 1_000)]
    questions: usize,
    /// LLM agents in each run, in order, e.g. `1,3`.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    llm_agents: Vec<u32>,
    /// Store agents in every run, each with its own store.
    #[arg(long, default_value_t = 1)]
    store_agents: u32,
    /// llm-sim's latency, ms.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// LLM calls in flight at once in each LLM agent.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// A served embedded broker (the default), or a Fluvio cluster
    /// (`--broker fluvio`, `--sc`, `--topic-*`), each run under a fresh
    /// topic prefix.
    #[command(flatten)]
    broker: BrokerArgs,
}

#[derive(Debug, clap::Args)]
struct PipelineBench {
    /// Distinct questions (built from the sample).
    #[arg(long, default_value_t = 20_000)]
    questions: usize,
    /// Measure only the separate processes.
    #[arg(long)]
    processes_only: bool,
    /// Leave out the separate processes.
    #[arg(long, conflicts_with = "processes_only")]
    no_processes: bool,
    /// Answers drawn for a regenerated attempt (best of n) in the LLM
    /// agent; default: the agent's (3). Each draw is an LLM call: with 1, a
    /// question of this bench takes about 2.2 calls instead of 4.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=crate::config::MAX_REGENERATE_CANDIDATES as i64))]
    regenerate_candidates: Option<u32>,
    /// LLM calls in flight at once in the LLM agent; default: the agent's.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Option<u32>,
    /// With `--broker fluvio` (or `--sc`, `--topic-*`), the one-process run
    /// is made on the embedded broker and then on the cluster, side by side,
    /// under a fresh topic prefix (the given one, if any, before it). The
    /// cluster's SC and SPUs, when they run on this machine, are measured
    /// too.
    #[command(flatten)]
    broker: BrokerArgs,
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
    /// Answers a question: each question comes back this many times, one
    /// batch apart, as regenerated answers do (`answer-score` reuses the
    /// reference's embedding for them). 1: every record a new question.
    #[arg(long, default_value_t = 1)]
    attempts: u32,
    /// The vectors the records carry: the reference's static vector, as
    /// traffic carries it by default; or (`exact`) the answer's and the
    /// reference's all-MiniLM-L6-v2 vectors, as `--scorer exact` carries
    /// them (each distinct text embedded once, before the clock starts).
    #[arg(long, value_enum, default_value = "static")]
    scorer: crate::exact::ScorerKind,
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
    /// Generations in flight at once for the batched figures.
    #[arg(long, default_value_t = 8)]
    in_flight: usize,
    /// Requests of the batched figures, `--in-flight` of them outstanding
    /// until all are answered, as the pipeline keeps questions in flight
    /// (default: four times `--in-flight`; at most the sample's 220).
    #[arg(long)]
    requests: Option<usize>,
    /// Threads for the batched figures (default: the model threads, as the
    /// pipeline runs the engine).
    #[arg(long)]
    batch_threads: Option<usize>,
    /// An argument added to llama-server's command line, repeatable, one
    /// word each (llama-server takes no `--flag=value`): for example
    /// `--llama-server-arg --cache-type-k --llama-server-arg q8_0`, to
    /// compare on the engine's cache type.
    #[arg(
        long = "llama-server-arg",
        value_name = "ARG",
        allow_hyphen_values = true
    )]
    llama_server_args: Vec<String>,
    /// Leave out llama-server even when it is installed.
    #[arg(long)]
    no_llama_server: bool,
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
        BenchWhat::Fleet(bench) => fleet(bench).await,
        BenchWhat::Dataset(bench) => dataset_bench(bench).await,
    }
}

async fn pipeline(args: PipelineBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.questions > 0, "--questions must be at least 1");
    let kind = args.broker.kind()?;
    anyhow::ensure!(
        kind != BrokerKind::Remote,
        "bench pipeline serves its own embedded broker: --broker remote does not apply"
    );
    let dir = tempfile::tempdir()?;
    let csv = dir.path().join("questions.csv");
    crate::launcher::write_questions(&csv, args.questions)?;
    let (embedded, cluster) = if args.processes_only {
        (None, None)
    } else {
        let home = dir.path().join("embedded");
        let embedded = in_process(&home, &csv, BrokerArgs::embedded(), &args).await?;
        let cluster = match kind {
            BrokerKind::Fluvio | BrokerKind::Kafka => {
                let mut broker = args.broker.clone();
                broker.broker = Some(kind);
                broker.topic_prefix = Some(format!(
                    "{}bench{}-",
                    broker.topic_prefix(),
                    answerloop_schema::clock::now_ms()
                ));
                Some(in_process(&dir.path().join(kind.name()), &csv, broker, &args).await?)
            }
            _ => None,
        };
        (Some(embedded), cluster)
    };
    let ratio = match (&embedded, &cluster) {
        (Some(e), Some(f)) => Some(
            f["questions_per_s"].as_f64().unwrap_or(0.0)
                / e["questions_per_s"].as_f64().unwrap_or(f64::INFINITY),
        ),
        _ => None,
    };
    let processes = if args.no_processes {
        None
    } else {
        Some(processes(&dir.path().join("processes"), &args).await?)
    };
    let agent = pipeline_agent(&args);
    let mut report = json!({
        "questions": args.questions,
        "llm": "llm-sim, zero latency, no faults",
        "regenerate_candidates": agent.regenerate_candidates,
        "concurrency": agent.rate.concurrency,
        "in_process": embedded,
        "processes": processes,
    });
    if matches!(kind, BrokerKind::Fluvio | BrokerKind::Kafka) {
        report[format!("{}_in_process", kind.name())] = json!(cluster);
        report[format!("{}_over_embedded", kind.name())] = json!(ratio);
    }
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// The LLM agent's settings for `bench pipeline`: the defaults, with the
/// bench's `--regenerate-candidates` and `--concurrency`.
fn pipeline_agent(args: &PipelineBench) -> crate::llm_agent::LlmAgentConfig {
    let mut agent = crate::llm_agent::LlmAgentConfig::default();
    if let Some(n) = args.regenerate_candidates {
        agent.regenerate_candidates = n;
    }
    if let Some(n) = args.concurrency {
        agent.rate.concurrency = n as usize;
    }
    agent
}

/// The whole pipeline in this process (`run`) on `broker`, from a fresh home
/// in `home`, the LLM agent set by `args`: final questions a second, this
/// process's CPU a question, and the peak memory of this process and of the
/// local cluster's, counted from the start of the run.
async fn in_process(
    home: &std::path::Path,
    csv: &std::path::Path,
    broker: BrokerArgs,
    args: &PipelineBench,
) -> anyhow::Result<serde_json::Value> {
    let kind = broker.kind()?;
    let on_cluster = matches!(kind, BrokerKind::Fluvio | BrokerKind::Kafka);
    let cluster = if on_cluster {
        crate::local_cluster::find()
    } else {
        Vec::new()
    };
    let me = std::process::id();
    let peaks_reset =
        crate::local_cluster::reset_peak_of(me) && cluster.iter().all(|p| p.reset_peak());
    let options = crate::pipeline::RunOptions {
        home: crate::home::Home::resolve(Some(home))?,
        data: Some(csv.to_path_buf()),
        limit: None,
        provider: ProviderSpec::new(ProviderKind::Sim, None, None, None, Duration::from_secs(30)),
        fallbacks: Vec::new(),
        sim: SimConfig::default(),
        agent: pipeline_agent(args),
        schedule: Default::default(),
        broker,
        stall_timeout: Duration::from_secs(600),
        progress: false,
    };
    let cpu_before = cpu_secs_of_self();
    let summary = crate::pipeline::run(options).await?;
    let cpu_s = cpu_secs_of_self() - cpu_before;
    let finals = summary.stored + summary.dead_letters;
    let mut peak_rss_mb = serde_json::Map::new();
    peak_rss_mb.insert(
        "pipeline".into(),
        json!(crate::launcher::peak_rss_mb_of(me)),
    );
    for process in &cluster {
        peak_rss_mb.insert(process.name.clone(), json!(process.peak_rss_mb()));
    }
    Ok(json!({
        "broker": kind.name(),
        "questions_per_s": finals as f64 / summary.elapsed_s,
        "elapsed_s": summary.elapsed_s,
        // All of this process's CPU over the run (every thread: the agents,
        // the broker's chains and compiles, sled's threads and llm-sim's
        // server), and its share of each final question.
        "cpu_s": cpu_s,
        "cpu_ms_per_question": cpu_s * 1000.0 / finals.max(1) as f64,
        "llm_calls": summary.llm_calls,
        "peak_rss_mb": peak_rss_mb,
        // Whether the peaks count from this run's start (else from each
        // process's start).
        "peaks_from_run_start": peaks_reset,
    }))
}

/// The pipeline as processes (the broker server and three agents), no
/// faults, until every question is final: questions a second from the
/// agents' start to the last one, and each process's peak memory.
async fn processes(
    dir: &std::path::Path,
    args: &PipelineBench,
) -> anyhow::Result<serde_json::Value> {
    let mut plan = FleetPlan::new(0.0, None, 1);
    plan.concurrency = args.concurrency.map(|n| n as usize);
    plan.regenerate_candidates = args.regenerate_candidates;
    let run = run_fleet(dir, args.questions, &plan).await?;
    Ok(json!({
        "questions_per_s": run.questions_per_s,
        "elapsed_s": run.elapsed_s,
        "answer_records": run.answer_records,
        "llm_calls": run.llm_calls,
        "peak_rss_mb": run.peak_rss_mb,
    }))
}

/// The CPU time (user and system, every thread) this process has used.
fn cpu_secs_of_self() -> f64 {
    // SAFETY: getrusage writes the struct it is given and nothing else.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// What a fleet run came to.
#[derive(Debug, serde::Serialize)]
struct FleetRun {
    /// Final questions a second, from the agents' start to the last one.
    questions_per_s: f64,
    elapsed_s: f64,
    /// From the first final question to the last: the rate once every
    /// agent is up and streaming.
    steady_questions_per_s: Option<f64>,
    answer_records: u64,
    llm_calls: u64,
    peak_rss_mb: std::collections::BTreeMap<String, f64>,
}

/// Start `plan`'s fleet in `dir`, wait until every question is final, stop
/// it and check that nothing was lost or doubled.
async fn run_fleet(
    dir: &std::path::Path,
    questions: usize,
    plan: &FleetPlan,
) -> anyhow::Result<FleetRun> {
    let (mut fleet, sent) = Fleet::start(dir, questions, plan).await?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(3600);
    let mut first_final = None;
    loop {
        let finals = fleet.finals().await;
        if first_final.is_none() && finals.is_some_and(|n| n > 0) {
            first_final = Some((Instant::now(), finals.unwrap_or(0)));
        }
        if finals.is_some_and(|n| n >= questions as u64) {
            break;
        }
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
    let finished = crate::launcher::finished(dir, plan, &sent).await?;
    let tally = &finished.tally;
    anyhow::ensure!(
        tally.lost.is_empty() && tally.duplicates == 0,
        "the pipeline lost {} and doubled {} questions",
        tally.lost.len(),
        tally.duplicates
    );
    let steady_questions_per_s = first_final.and_then(|(at, n)| {
        let span = elapsed_s - at.duration_since(started).as_secs_f64();
        (span > 0.0).then(|| (tally.finals() as u64).saturating_sub(n) as f64 / span)
    });
    Ok(FleetRun {
        questions_per_s: tally.finals() as f64 / elapsed_s,
        elapsed_s,
        steady_questions_per_s,
        answer_records: finished.answer_records,
        llm_calls: tally.llm_calls,
        peak_rss_mb,
    })
}

async fn dataset_bench(args: DatasetBench) -> anyhow::Result<ExitCode> {
    if let Some(csv) = &args.hold {
        super::bench_dataset::hold_whole(csv)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(csv) = &args.stream {
        super::bench_dataset::stream_through(csv)?;
        return Ok(ExitCode::SUCCESS);
    }
    anyhow::ensure!(
        !args.rows.is_empty() && args.rows.iter().all(|n| *n >= 10_000),
        "--rows takes sizes of at least 10000, e.g. 100000,1400000"
    );
    let dir = tempfile::tempdir()?;
    let mut sizes = Vec::new();
    for rows in &args.rows {
        sizes.push(super::bench_dataset::one_size(dir.path(), *rows, args.whole).await?);
    }
    let ratio = |key: &str| match (sizes.first(), sizes.last()) {
        (Some(first), Some(last)) if sizes.len() > 1 => {
            Some(last[key]["peak_rss_mb"].as_f64()? / first[key]["peak_rss_mb"].as_f64()?)
        }
        _ => None,
    };
    println!(
        "{}",
        json!({
            "what": "peak resident memory (MB) and seconds to the first question, child processes of this binary",
            "sizes": sizes,
            "rows_ratio_last_over_first": match (args.rows.first(), args.rows.last()) {
                (Some(a), Some(b)) if args.rows.len() > 1 => Some(*b as f64 / *a as f64),
                _ => None,
            },
            "traffic_limit_10_rss_ratio": ratio("traffic_limit_10"),
            "llm_sim_rss_ratio": ratio("llm_sim"),
            "traffic_whole_file_rss_ratio": ratio("traffic_whole_file"),
            "traffic_whole_file_served_broker_rss_ratio": ratio("traffic_whole_file_served_broker"),
            "stream_whole_file_rss_ratio": ratio("stream_whole_file"),
            "held_whole_baseline_rss_ratio": ratio("held_whole_baseline"),
        })
    );
    Ok(ExitCode::SUCCESS)
}

/// `bench fleet`: the pipeline as processes with 1, then N LLM agents
/// sharing the questions (`--member K/N`), llm-sim with a latency and the
/// same concurrency cap in every agent: how the rate grows with agents.
async fn fleet(args: FleetBench) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.questions > 0, "--questions must be at least 1");
    anyhow::ensure!(
        !args.llm_agents.is_empty() && args.llm_agents.iter().all(|n| *n > 0),
        "--llm-agents takes counts of at least 1, e.g. 1,3"
    );
    anyhow::ensure!(args.store_agents > 0, "--store-agents must be at least 1");
    let broker = match args.broker.kind()? {
        BrokerKind::Embedded => None,
        BrokerKind::Remote => anyhow::bail!(
            "bench fleet serves its own embedded broker: --broker remote does not apply"
        ),
        kind @ (BrokerKind::Fluvio | BrokerKind::Kafka) => Some(BrokerArgs {
            broker: Some(kind),
            ..args.broker.clone()
        }),
    };
    let dir = tempfile::tempdir()?;
    let mut runs = Vec::new();
    for (i, n) in args.llm_agents.iter().enumerate() {
        let broker = match &broker {
            None => FleetBroker::Served,
            Some(cluster) => FleetBroker::Cluster(BrokerArgs {
                topic_prefix: Some(format!(
                    "{}fleet{}-{n}-",
                    cluster.topic_prefix(),
                    answerloop_schema::clock::now_ms()
                )),
                ..cluster.clone()
            }),
        };
        let plan = FleetPlan {
            llm_agents: *n,
            store_agents: args.store_agents,
            sim_latency_ms: args.latency_ms,
            concurrency: Some(args.concurrency),
            broker,
            ..FleetPlan::new(0.0, None, 1)
        };
        let run = run_fleet(&dir.path().join(format!("run{i}")), args.questions, &plan).await?;
        runs.push(json!({ "llm_agents": n, "run": run }));
    }
    let rate = |run: &serde_json::Value, key: &str| run["run"][key].as_f64();
    let speedup = |key: &str| match (runs.first(), runs.last()) {
        (Some(first), Some(last)) if runs.len() > 1 => Some(rate(last, key)? / rate(first, key)?),
        _ => None,
    };
    println!(
        "{}",
        json!({
            "questions": args.questions,
            "broker": broker.as_ref().and_then(|b| b.broker).map_or("embedded (served)", |kind| kind.name()),
            "llm": format!("llm-sim, {} ms latency, no faults", args.latency_ms),
            "concurrency_per_agent": args.concurrency,
            "store_agents": args.store_agents,
            "runs": runs,
            "speedup_last_over_first": speedup("questions_per_s"),
            "steady_speedup_last_over_first": speedup("steady_questions_per_s"),
        })
    );
    Ok(ExitCode::SUCCESS)
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
        vec![provider],
        rate,
        Default::default(),
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
    let prompts: Vec<String> = dataset::sample()
        .questions
        .iter()
        .take(args.runs.max(args.requests()).max(1))
        .map(|question| {
            let request =
                prompt::request(question, RegeneratePrompt::Plain, args.tokens as u32, 0.0);
            chat_prompt(
                request
                    .messages
                    .iter()
                    .map(|m| (m.role.as_str(), m.content.as_str())),
            )
        })
        .collect();
    for text in prompts.iter().take(args.runs.max(1)) {
        let g = session.generate(text, &generate)?;
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
    // Both engines on the GGUF the engine runs (`--model-weights`).
    let gguf = answerloop_models::requantise::engine_file(&cache.main_file(&SMOLLM2))?;
    let side_by_side = engines(&args, &gguf, &prompts)?;
    let report = json!({"candle": report, "engines": side_by_side});
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

impl ModelBench {
    /// Requests of the batched figures.
    fn requests(&self) -> usize {
        self.requests
            .unwrap_or(4 * self.in_flight)
            .max(self.in_flight.max(1))
    }
}

/// The batched llama.cpp engine and llama-server (when installed) on the
/// same prompts: one stream on the model threads, then `--requests` with
/// `--in-flight` of them outstanding, on `--batch-threads`.
fn engines(
    args: &ModelBench,
    model: &std::path::Path,
    prompts: &[String],
) -> anyhow::Result<serde_json::Value> {
    use super::bench_engine::{engine, llama_server, llama_server_binary};
    let threads = answerloop_models::batched::model_threads();
    let batch_threads = args.batch_threads.unwrap_or(threads).max(1);
    let runs = &prompts[..args.runs.max(1).min(prompts.len())];
    let requests = &prompts[..args.requests().min(prompts.len())];
    let single = engine(model, runs, threads, 1, args.tokens)?;
    let batched = engine(model, requests, batch_threads, args.in_flight, args.tokens)?;
    let mut report = json!({
        "gguf": model.file_name().map(|n| n.to_string_lossy()),
        "threads": threads,
        "engines": answerloop_models::batched::model_engines(),
        "batch_threads": batch_threads,
        "in_flight": args.in_flight,
        "requests": requests.len(),
        "engine": {"single": single.json(), "in_flight": batched.json(),
            "kv_cache": answerloop_models::batched::KV_CACHE_TYPE},
    });
    let binary = llama_server_binary().filter(|_| !args.no_llama_server);
    if let Some(binary) = binary {
        let handle = tokio::runtime::Handle::current();
        let server = |prompts, threads, in_flight| {
            handle.block_on(llama_server(
                &binary,
                model,
                prompts,
                threads,
                in_flight,
                args.tokens,
                &args.llama_server_args,
            ))
        };
        let server_single = server(runs, threads, 1)?;
        let server_batched = server(requests, batch_threads, args.in_flight)?;
        let rate = |t: &super::bench_engine::Throughput| t.tokens as f64 / t.secs.max(1e-9);
        report["llama_server"] = json!({
            "binary": binary.display().to_string(),
            "extra_args": args.llama_server_args,
            "single": server_single.json(),
            "in_flight": server_batched.json(),
        });
        report["engine_single_over_llama_server_single"] =
            json!(rate(&single) / rate(&server_single));
        report["engine_in_flight_over_llama_server_single"] =
            json!(rate(&batched) / rate(&server_single));
    }
    Ok(report)
}

/// Fuel the SmartModule `name` has burnt in this process so far, as the
/// broker's chains count it into the metrics.
fn fuel_used(name: &str) -> u64 {
    use answerloop_telemetry::metrics::{metrics, smartmodule};
    metrics()
        .smartmodule_fuel_used
        .get_or_create(&smartmodule(name))
        .get()
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
    let batch = args.batch.max(1);
    let attempts = args.attempts.max(1) as usize;
    let cache = super::models::cache(&args.home);
    crate::providers::ensure_model(&cache, &answerloop_models::MINILM)?;
    let exact = answerloop_models::MiniLm::load(&cache)?;
    // The texts start at a question of the sample: one vector for each.
    let exact_vectors = match args.scorer {
        crate::exact::ScorerKind::Static => None,
        crate::exact::ScorerKind::Exact => {
            let texts: Vec<String> = (0..questions.len())
                .map(|i| text_of(&questions, i, args.text_bytes))
                .collect();
            let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
            Some(crate::exact::carried_vectors(&exact, &texts)?)
        }
    };
    let exact_of = |from: usize| exact_vectors.as_ref().map(|v| v[from % v.len()].clone());
    // Every question distinct (its own id), so no layer can cache its way
    // to a figure; with `--attempts`, each comes back `attempts` times, a
    // batch apart, as regenerations do. The reference's vector is carried
    // as the traffic agent carries it, or (`carried` false) left out, as in
    // a question produced by hand.
    let record = |n: usize, carried: bool| {
        let round = n / (batch * attempts);
        let attempt = (n % (batch * attempts)) / batch;
        let i = round * batch + n % batch;
        let mut question = Question::new(
            format!("Question {i}"),
            "",
            text_of(&questions, i, args.text_bytes),
            1,
        )
        .at_attempt(attempt as u32 + 1);
        if carried {
            question.reference_vector = exact_of(i).unwrap_or_default();
            crate::traffic::carry_reference_vector(&mut question);
        }
        let mut answer = Answer::new(
            question,
            text_of(&questions, i + 3 + attempt, args.text_bytes),
            "bench",
            1,
        );
        if carried {
            answer.answer_vector = exact_of(i + 3 + attempt).unwrap_or_default();
        }
        Record {
            key: None,
            value: serde_json::to_vec(&answer).expect("an answer serialises"),
        }
    };
    let batches_of = |carried: bool| -> (Vec<Vec<Record>>, usize) {
        let records: Vec<Record> = (0..args.records.max(1))
            .map(|n| record(n, carried))
            .collect();
        let bytes = records.iter().map(|r| r.value.len()).sum::<usize>() / records.len();
        (
            records.chunks(batch).map(<[Record]>::to_vec).collect(),
            bytes,
        )
    };
    let (batches, record_bytes) = batches_of(true);
    let (uncarried, uncarried_bytes) = batches_of(false);
    let engine = fluvio_smartengine::SmartEngine::new();
    // Batches through a chain of `module`; its output, the time and the
    // fuel it burnt (wasm instructions, as wasmtime meters them: the same
    // for the same build and records however busy the machine is). Never
    // rebuilt: the engine alone is measured.
    let run = |module: &answerloop_wasm::SmartModule,
               batches: &[Vec<Record>]|
     -> anyhow::Result<(Vec<Vec<Record>>, f64, u64)> {
        let spec = ChainSpec::single(module.name, &answerloop_scoring::Params::default());
        let mut chain = WasmChain::build(&engine, &spec)?;
        let inputs = batches.to_vec();
        let fuel = || fuel_used(module.name);
        let fuel_before = fuel();
        let started = Instant::now();
        let mut out = Vec::with_capacity(inputs.len());
        for records in inputs {
            out.push(chain.process(records)?);
        }
        let secs = started.elapsed().as_secs_f64();
        Ok((out, secs, fuel() - fuel_before))
    };
    let (scored, chain_secs, chain_fuel) = run(&answerloop_wasm::ANSWER_SCORE, &batches)?;
    let out: usize = scored.iter().map(Vec::len).sum();
    if exact_vectors.is_some() {
        // The chain took the exact path: its score is the vectors' cosine.
        let first: Answer = serde_json::from_slice(&scored[0][0].value)?;
        let cosine = answerloop_scoring::carried::exact_score(
            &first.answer_vector,
            &first.question.reference_vector,
            &mut Default::default(),
        );
        anyhow::ensure!(
            first.score.is_some() && first.score == cosine,
            "the chain did not score the exact vectors: {:?} against {cosine:?}",
            first.score
        );
    }
    let (_, uncarried_secs, uncarried_fuel) = run(&answerloop_wasm::ANSWER_SCORE, &uncarried)?;
    // The same records, scored, through a SmartModule that only parses
    // them: what the engine and the JSON cost without the scoring.
    let (_, parse_secs, parse_fuel) = run(&answerloop_wasm::QUALITY_GATE, &scored)?;

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
        "scorer": match args.scorer {
            crate::exact::ScorerKind::Static => "static",
            crate::exact::ScorerKind::Exact => "exact",
        },
        "text_bytes": args.text_bytes,
        "record_bytes": record_bytes,
        "records": out,
        "attempts": attempts,
        "chain_records_per_sec": out as f64 / chain_secs,
        "uncarried_record_bytes": uncarried_bytes,
        "chain_uncarried_records_per_sec": out as f64 / uncarried_secs,
        "parse_only_records_per_sec": out as f64 / parse_secs,
        "chain_to_parse_only": parse_secs / chain_secs,
        "chain_fuel_per_record": chain_fuel as f64 / out as f64,
        "chain_uncarried_fuel_per_record": uncarried_fuel as f64 / out as f64,
        "parse_only_fuel_per_record": parse_fuel as f64 / out as f64,
        "exact_pairs": args.exact_pairs,
        "exact_records_per_sec": args.exact_pairs as f64 / exact_secs,
        "speedup": (out as f64 / chain_secs) / (args.exact_pairs as f64 / exact_secs),
    });
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        what: BenchWhat,
    }

    fn pipeline_args(args: &[&str]) -> Result<PipelineBench, clap::Error> {
        let argv = ["bench", "pipeline"].iter().chain(args);
        match Cli::try_parse_from(argv)?.what {
            BenchWhat::Pipeline(bench) => Ok(bench),
            _ => unreachable!("the pipeline subcommand was parsed"),
        }
    }

    #[test]
    fn the_pipeline_bench_runs_the_agent_with_its_draws_and_concurrency() {
        let default = pipeline_agent(&pipeline_args(&[]).unwrap());
        let agent = crate::llm_agent::LlmAgentConfig::default();
        assert_eq!(default.regenerate_candidates, agent.regenerate_candidates);
        assert_eq!(default.rate.concurrency, agent.rate.concurrency);

        let set = pipeline_args(&["--regenerate-candidates", "1", "--concurrency", "32"]).unwrap();
        let set = pipeline_agent(&set);
        assert_eq!(set.regenerate_candidates, 1);
        assert_eq!(set.rate.concurrency, 32);

        for bad in [
            &["--regenerate-candidates", "0"][..],
            &["--regenerate-candidates", "17"],
            &["--concurrency", "0"],
        ] {
            let error = pipeline_args(bad).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(bad[0])),
                "{bad:?} was taken: {error:?}"
            );
        }
    }
}
