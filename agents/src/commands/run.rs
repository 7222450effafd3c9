//! `answerloop run`: the whole pipeline on the embedded broker, then a
//! one-screen summary (or, with `--json`, one JSON object on the last line).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use answerloop_scoring::Params;

use super::sim::SimKnobs;
use crate::cli::HomeArg;
use crate::home::Home;
use crate::llm::agent::LlmAgentConfig;
use crate::llm::openai::OpenAiConfig;
use crate::llm::prompt::RegeneratePrompt;
use crate::pipeline::{self, LlmChoice, RunOptions, RunSummary};
use crate::secret::Secret;
use crate::traffic::arrival::Arrival;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LlmKind {
    /// llm-sim in-process: a test tool, not a model.
    Sim,
    /// Any OpenAI-compatible chat-completions server.
    Openai,
}

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
    /// Which model answers.
    #[arg(long, value_enum, default_value = "sim")]
    llm: LlmKind,
    /// One JSON object on the last line of stdout instead of the summary screen.
    #[arg(long)]
    json: bool,

    /// Questions per second produced by traffic; default: as fast as taken.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, value_enum, default_value = "poisson")]
    arrival: Arrival,
    /// Questions per burst with --arrival burst.
    #[arg(long, default_value_t = 10)]
    burst: u32,
    /// Seed for the arrival process.
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Accept answers scoring at or above this.
    #[arg(long, default_value_t = answerloop_scoring::params::DEFAULT_THRESHOLD)]
    threshold: f32,
    /// At most this many scored answers a question.
    #[arg(long, default_value_t = answerloop_scoring::params::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// At most this many LLM calls a question, retries included.
    #[arg(long, default_value_t = 5)]
    max_llm_attempts: u32,
    /// LLM calls in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How a regenerated question is put to the model.
    #[arg(long, value_enum, default_value = "feedback")]
    regenerate_prompt: RegeneratePrompt,
    #[arg(long, default_value_t = 256)]
    max_tokens: u32,
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Per-request LLM time-out, in seconds.
    #[arg(long, default_value_t = 60.0)]
    llm_timeout_secs: f64,
    /// Stop with an error when no question becomes final for this many seconds.
    #[arg(long, default_value_t = 600)]
    stall_timeout_secs: u64,

    /// OpenAI-compatible API root, e.g. http://127.0.0.1:11434/v1.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    openai_base_url: String,
    /// Model name for --llm openai.
    #[arg(long, env = "ANSWERLOOP_MODEL", default_value = "gpt-4o-mini")]
    model: String,
    /// File holding the API key; otherwise OPENAI_API_KEY is read. Never pass a key itself.
    #[arg(long, value_name = "FILE")]
    api_key_file: Option<PathBuf>,

    #[command(flatten)]
    sim: SimKnobs,
}

pub async fn execute(args: RunArgs) -> anyhow::Result<ExitCode> {
    let params = Params::from_map(
        &Params {
            threshold: args.threshold,
            max_attempts: args.max_attempts,
        }
        .to_map(),
    )?;
    anyhow::ensure!(
        args.llm_timeout_secs.is_finite() && args.llm_timeout_secs > 0.0,
        "--llm-timeout-secs must be a positive number of seconds"
    );
    let llm_timeout = Duration::from_secs_f64(args.llm_timeout_secs);
    let llm = match args.llm {
        LlmKind::Sim => {
            if !args.json {
                eprintln!("LLM: llm-sim, the built-in test simulator (not a real model). Use --llm openai for a real server.");
            }
            LlmChoice::Sim(args.sim.config()?)
        }
        LlmKind::Openai => {
            let api_key = match &args.api_key_file {
                Some(path) => Some(Secret::from_file(path).map_err(anyhow::Error::msg)?),
                None => Secret::from_env("OPENAI_API_KEY"),
            };
            LlmChoice::OpenAi(OpenAiConfig {
                base_url: args.openai_base_url.clone(),
                model: args.model.clone(),
                api_key,
                timeout: llm_timeout,
                name: "openai".into(),
            })
        }
    };
    let options = RunOptions {
        home: Home::resolve(args.home.home.as_deref())?,
        data: args.data.clone(),
        limit: args.limit,
        llm,
        agent: LlmAgentConfig {
            concurrency: args.concurrency,
            max_llm_attempts: args.max_llm_attempts,
            params,
            regenerate_prompt: args.regenerate_prompt,
            max_tokens: args.max_tokens,
            temperature: args.temperature,
            ..LlmAgentConfig::default()
        },
        schedule: (args.arrival, args.rate, args.burst, args.seed),
        stall_timeout: Duration::from_secs(args.stall_timeout_secs.max(1)),
        llm_timeout,
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
    println!(
        "  LLM calls     {} ({} failed)",
        s.llm_calls, s.llm_failures
    );
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
