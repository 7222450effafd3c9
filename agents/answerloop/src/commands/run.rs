//! `answerloop run`: the whole pipeline on the embedded broker, then a
//! one-screen summary (or, with `--json`, one JSON object on the last line).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::sim::SimKnobs;
use crate::cli::HomeArg;
use crate::config::{FileConfig, LlmArgs, ScoringArgs};
use crate::exact::ScorerArg;
use crate::home::Home;
use crate::pipeline::{self, RunOptions, RunSummary};
use crate::traffic::arrival::ScheduleArgs;
use answerloop_broker::select::BrokerArgs;
use answerloop_llm::spec::ProviderKind;
use answerloop_telemetry::metrics::MetricsArg;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Yahoo! Answers CSV to answer; default: the built-in sample.
    #[arg(long, value_name = "CSV")]
    data: Option<PathBuf>,
    /// Use only the first N distinct questions.
    #[arg(long)]
    limit: Option<usize>,
    /// One JSON object on the last line of stdout instead of the summary screen.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    schedule: ScheduleArgs,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    scorer: ScorerArg,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    metrics: MetricsArg,
    /// Stop with an error when no question becomes final for this many seconds.
    #[arg(long, default_value_t = 600)]
    stall_timeout_secs: u64,

    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sim: SimKnobs,
}

pub async fn execute(mut args: RunArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.home.as_deref())?;
    let file = FileConfig::load(args.home.config.as_deref(), home.root())?;
    file.onto(&mut args.broker);
    let params = args.scoring.resolve(&file.scoring)?;
    let models = super::models::cache(&args.home);
    let mut settings = args.llm.resolve(&file.llm, params, models.clone())?;
    settings.agent.exact = args.scorer.embedder(&models)?;
    // Broker flags that do not go together are refused before anything starts.
    args.broker.kind()?;

    if settings.provider.kind() == ProviderKind::Sim && !args.json {
        eprintln!("LLM: llm-sim, the built-in test simulator (not a real model). Use --llm openai|ollama|gemini for a real one.");
    }
    if let Some(addr) = args.metrics.start().await? {
        eprintln!("metrics at http://{addr}/metrics");
    }
    let options = RunOptions {
        home,
        data: args.data.clone(),
        limit: args.limit,
        provider: settings.provider,
        fallbacks: settings.fallbacks,
        sim: args.sim.config()?,
        agent: settings.agent,
        schedule: args.schedule.clone(),
        broker: args.broker.clone(),
        stall_timeout: Duration::from_secs(args.stall_timeout_secs.max(1)),
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let summary = pipeline::run(options).await?;
    if args.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        print_summary(&summary);
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_summary(s: &RunSummary) {
    let pct = |n: usize| {
        if s.questions == 0 {
            0.0
        } else {
            100.0 * n as f64 / s.questions as f64
        }
    };
    let score = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!(
        "answerloop run{}",
        if s.interrupted { " (interrupted)" } else { "" }
    );
    println!(
        "  data          {} ({} rows, {} skipped, {} malformed)",
        s.data, s.rows, s.rows_skipped, s.rows_malformed
    );
    for example in &s.malformed_examples {
        println!("                  {example}");
    }
    println!("  model         {} ({})", s.model, s.llm);
    if !s.fallbacks.is_empty() {
        println!("  fallbacks     {}", s.fallbacks.join(", then "));
    }
    println!(
        "  questions     {} ({} already final, {} sent now)",
        s.questions, s.already_final, s.sent
    );
    println!(
        "  stored        {} ({:.1}%): {} accepted, {} exhausted",
        s.stored,
        pct(s.stored),
        s.accepted,
        s.exhausted
    );
    println!(
        "  dead letters  {} ({:.1}%)",
        s.dead_letters,
        pct(s.dead_letters)
    );
    let mut failures: Vec<String> = s
        .llm_failures_by_class
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    failures.sort();
    println!(
        "  LLM calls     {} ({} failed{}{}; {} retries, {} parked for quota)",
        s.llm_calls,
        s.llm_failures,
        if failures.is_empty() { "" } else { ": " },
        failures.join(", "),
        s.llm_retries,
        s.llm_deferred
    );
    let circuits: Vec<String> = s
        .circuits
        .iter()
        .map(|c| {
            format!(
                "{} open {:.1}s ({} openings, now {})",
                c.provider, c.open_s, c.openings, c.state
            )
        })
        .collect();
    println!("  circuits      {}", circuits.join("; "));
    let by_model: Vec<String> = s
        .stored_by_model
        .iter()
        .map(|(model, n)| format!("{model} {n}"))
        .collect();
    println!("  answers by    {}", by_model.join(", "));
    println!(
        "  mean score    first attempt {}, stored {}",
        score(s.mean_score_first_attempt),
        score(s.mean_score_stored)
    );
    println!(
        "  by attempt    {:?} stored answers came from attempts 1..",
        s.stored_by_attempt
    );
    println!(
        "  threshold     {} (at most {} scored answers a question)",
        s.params.threshold, s.params.max_attempts
    );
    println!(
        "  time          {:.1}s ({:.1} questions/s sent)",
        s.elapsed_s, s.questions_per_s
    );
}
