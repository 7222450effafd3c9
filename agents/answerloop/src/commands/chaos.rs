//! `answerloop chaos`: the crash and fault test as a command, so anyone can
//! rerun the figures in docs/reliability.md.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use answerloop_broker::select::{BrokerArgs, BrokerKind};

use crate::chaos::{self, ChaosConfig, ChaosReport};
use crate::launcher::FleetBroker;

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
    /// On a Fluvio cluster running on this machine: SIGKILLs of an SPU (a
    /// random one each time) at random moments, each restarted as it was
    /// started [default: 1; only with --broker fluvio].
    #[arg(long)]
    spu_kills: Option<u32>,
    /// How long a killed SPU stays down, seconds.
    #[arg(long, default_value_t = 3.0)]
    spu_down_secs: f64,
    /// Where the agents run: a served embedded broker in the run's
    /// directory (the default), or a Fluvio cluster (`--broker fluvio`,
    /// `--sc`, `--topic-*`), under a fresh topic prefix.
    #[command(flatten)]
    broker: BrokerArgs,
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
    let broker = match args.broker.kind()? {
        BrokerKind::Embedded => FleetBroker::Served,
        BrokerKind::Remote => {
            anyhow::bail!("chaos serves its own embedded broker: --broker remote does not apply")
        }
        kind @ (BrokerKind::Fluvio | BrokerKind::Kafka) => FleetBroker::Cluster(BrokerArgs {
            broker: Some(kind),
            topic_prefix: Some(format!(
                "{}chaos{}-",
                args.broker.topic_prefix(),
                answerloop_schema::clock::now_ms()
            )),
            ..args.broker.clone()
        }),
    };
    anyhow::ensure!(
        args.spu_kills.is_none() || args.broker.kind()? == BrokerKind::Fluvio,
        "--spu-kills kills SPUs of a local Fluvio cluster: it needs --broker fluvio"
    );
    anyhow::ensure!(
        args.spu_down_secs >= 0.0 && args.spu_down_secs.is_finite(),
        "--spu-down-secs must be a number of seconds"
    );
    let config = ChaosConfig {
        questions: args.questions,
        kills: args.kills,
        fail_rate: args.fail_rate,
        seed: args.seed,
        timeout: Duration::from_secs(args.timeout_secs.max(1)),
        // Sending takes about eight seconds whatever the size, so kills
        // land while questions are still arriving as well as after.
        traffic_rate: Some((args.questions as f64 / 8.0).max(1.0)),
        broker,
        spu_kills: args.spu_kills.unwrap_or(1),
        spu_down: Duration::from_secs_f64(args.spu_down_secs),
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
    if !r.spus_killed.is_empty() {
        println!("  SPUs killed   {:?}", r.spus_killed);
    }
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
