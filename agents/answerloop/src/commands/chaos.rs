//! `answerloop chaos`: the crash and fault test as a command, so anyone can
//! rerun the figures in docs/reliability.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::chaos::{self, ChaosConfig, ChaosReport};

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    /// Distinct questions to send (built from the sample).
    #[arg(long, default_value_t = 2000)]
    questions: usize,
    /// SIGKILLs for each agent (traffic, llm, store), at random moments.
    #[arg(long, default_value_t = 3)]
    kills: u32,
    /// Share of LLM calls llm-sim fails, with every kind of fault.
    #[arg(long, default_value_t = 0.3)]
    fail_rate: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Keep the run's state and agent logs here (a new or empty
    /// directory); default: a temporary directory, removed afterwards.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Give up after this many seconds and report what is missing.
    #[arg(long, default_value_t = 900)]
    timeout_secs: u64,
    /// One JSON object on stdout instead of the summary.
    #[arg(long)]
    json: bool,
}

pub async fn execute(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.questions > 0, "--questions must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fail_rate),
        "--fail-rate must be between 0 and 1"
    );
    let temp;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => {
            temp = tempfile::tempdir()?;
            temp.path().join("chaos")
        }
    };
    let config = ChaosConfig {
        questions: args.questions,
        kills: args.kills,
        fail_rate: args.fail_rate,
        seed: args.seed,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        // Sending takes about eight seconds whatever the size, so kills
        // land while questions are still arriving as well as after.
        traffic_rate: Some((args.questions as f64 / 8.0).max(1.0)),
    };
    let report = chaos::run(&dir, &config).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_report(r: &ChaosReport) {
    println!(
        "answerloop chaos: {}",
        if r.passed { "PASSED" } else { "FAILED" }
    );
    println!(
        "  questions     {} ({:.0}% LLM faults)",
        r.questions,
        r.fail_rate * 100.0
    );
    println!("  SIGKILLs      {:?}", r.kills);
    println!("  stored        {}", r.stored);
    println!(
        "  dead letters  {} {:?}",
        r.dead_letters, r.dead_letters_by_class
    );
    println!(
        "  lost          {}{}",
        r.lost,
        if r.lost_examples.is_empty() {
            String::new()
        } else {
            format!(" e.g. {:?}", r.lost_examples)
        }
    );
    println!("  duplicates    {}", r.duplicates);
    println!(
        "  no reason     {} dead letters",
        r.dead_letters_without_reason
    );
    println!(
        "  topic records {} questions, {} answers",
        r.question_records, r.answer_records
    );
    println!(
        "  time          {:.1}s{}",
        r.elapsed_s,
        if r.timed_out { " (timed out)" } else { "" }
    );
}
