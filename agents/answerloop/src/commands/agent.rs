//! `answerloop agent traffic|llm|store`: one agent as a long-lived process,
//! on the embedded broker or a Fluvio cluster. Each runs until SIGINT or
//! SIGTERM, then stops taking work, finishes what is in flight, commits and
//! exits 0; a restarted agent resumes at its committed offsets.
//!
//! The embedded broker is one process's sled database: agents in separate
//! processes reach it through `answerloop broker serve` (`--broker remote`),
//! or share a Fluvio cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use answerloop_schema::topics;
use answerloop_storage::Store;
use anyhow::Context;
use tokio::sync::watch;

use answerloop_broker::producer::Producer;
use answerloop_broker::select::{BrokerArgs, BrokerKind};
use answerloop_broker::{Broker, Member};
use answerloop_llm::LlmStats;
use answerloop_telemetry::metrics::MetricsArg;

use super::sim::SimKnobs;
use crate::cli::HomeArg;
use crate::config::{FileConfig, LlmArgs, ScoringArgs};
use crate::exact::ScorerArg;
use crate::home::Home;
use crate::traffic::arrival::ScheduleArgs;
use crate::traffic::dataset;
use crate::{llm_agent, providers, shutdown, store, traffic};

#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    #[command(flatten)]
    home: HomeArg,
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    metrics: MetricsArg,
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, clap::Subcommand)]
enum Role {
    /// Produce the question set to `questions` (leaving out questions already
    /// there), then wait for a signal.
    Traffic(TrafficArgs),
    /// Answer questions: new ones, regenerated ones and parked ones.
    Llm(Box<LlmRoleArgs>),
    /// Write final answers and dead letters to the answer store in the home.
    Store(StoreArgs),
}

#[derive(Debug, clap::Args)]
struct TrafficArgs {
    /// Yahoo! Answers CSV; default: the built-in sample.
    #[arg(long, value_name = "CSV")]
    data: Option<PathBuf>,
    /// Use only the first N distinct questions.
    #[arg(long)]
    limit: Option<usize>,
    #[command(flatten)]
    schedule: ScheduleArgs,
    /// Exit once the question set is sent instead of waiting for a signal.
    #[arg(long)]
    exit_when_done: bool,
    #[command(flatten)]
    scorer: ScorerArg,
}

#[derive(Debug, clap::Args)]
struct LlmRoleArgs {
    /// Answer member K's share of M of the questions (e.g. `2/3`): M LLM
    /// agents sharing the topics each take one K and split the keys.
    #[arg(long, value_name = "K/M", default_value = "1/1")]
    member: Member,
    /// With --llm sim: the question set the simulator answers from.
    #[arg(long, value_name = "CSV")]
    data: Option<PathBuf>,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    scorer: ScorerArg,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sim: SimKnobs,
}

#[derive(Debug, clap::Args)]
struct StoreArgs {
    #[command(flatten)]
    scoring: ScoringArgs,
    /// Store member K's share of M of the questions (e.g. `1/2`), in this
    /// home's store: M store agents, each in its own home, split the keys.
    #[arg(long, value_name = "K/M", default_value = "1/1")]
    member: Member,
}

pub async fn execute(mut args: AgentArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.home.as_deref())?;
    let file = FileConfig::load(args.home.config.as_deref(), home.root())?;
    file.onto(&mut args.broker);
    if args.broker.kind()? == BrokerKind::Embedded {
        home.prepare()?;
    }
    let stop = shutdown::on_signal().context("installing the signal handlers")?;
    if let Some(addr) = args.metrics.start().await? {
        tracing::info!("metrics at http://{addr}/metrics");
    }
    let broker = args.broker.connect(&home.broker()).await?;
    broker.create_topics(&topics::ALL).await?;
    match args.role {
        Role::Traffic(role) => run_traffic(broker, &args.home, role, stop).await?,
        Role::Llm(role) => run_llm(broker, &args.home, &file, *role, stop).await?,
        Role::Store(role) => {
            let config = store::StoreAgentConfig {
                member: role.member,
                ..store::StoreAgentConfig::new(role.scoring.resolve(&file.scoring)?)
            };
            home.prepare()?;
            let store = Store::open(&home.store()).context("opening the answer store")?;
            tracing::info!(
                "store agent: member {}, writing to {}",
                role.member,
                home.store().display()
            );
            store::run(broker, store.clone(), config, None, stop).await?;
            store.flush().await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_traffic(
    broker: Arc<dyn Broker>,
    home: &HomeArg,
    role: TrafficArgs,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (data_name, questions) = dataset::open_or_sample(role.data.as_deref(), role.limit)?;
    let exact = role.scorer.embedder(&super::models::cache(home))?;
    let sent_before = traffic::already_sent(broker.as_ref()).await?;
    let on_topic = sent_before.len();
    let (to_send, reader) =
        traffic::feed::spawn(questions, move |q| !sent_before.contains(&q.id), exact);
    let (producer, task) = Producer::spawn(broker, topics::QUESTIONS, None, 256);
    let sent = traffic::run(to_send, producer, role.schedule.schedule(), stop.clone()).await;
    task.await.context("the producer task failed")?;
    // A failed read (or a file with no question) ends the run first.
    let read = reader.finish().await?;
    let sent = sent?;
    for row in read.rows.malformed.iter().take(5) {
        tracing::warn!("{data_name}: skipped {row}");
    }
    tracing::info!(
        "traffic agent: sent {sent} questions ({} already on the topic, which held {on_topic}); \
         {data_name}: {} distinct questions, {} rows, {} malformed, {} repeats",
        read.skipped,
        read.questions,
        read.rows.rows,
        read.rows.malformed.len(),
        read.rows.duplicates,
    );
    if !role.exit_when_done {
        let _ = stop.wait_for(|stop| *stop).await;
    }
    Ok(())
}

async fn run_llm(
    broker: Arc<dyn Broker>,
    home: &HomeArg,
    file: &FileConfig,
    role: LlmRoleArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let params = role.scoring.resolve(&file.scoring)?;
    let models = super::models::cache(home);
    let mut settings = role.llm.resolve(&file.llm, params, models.clone())?;
    settings.agent.member = role.member;
    settings.agent.exact = role.scorer.embedder(&models)?;
    let specs = settings.providers();
    let references = providers::references_for(&specs, role.data.as_deref(), None)?;
    let (providers, sim) = providers::connect(&specs, &role.sim.config()?, references).await?;
    let names: Vec<String> = providers
        .iter()
        .map(|p| format!("{} ({})", p.model(), p.name()))
        .collect();
    tracing::info!(
        "llm agent: {}, member {}",
        names.join(", then "),
        role.member
    );
    let stats = LlmStats::new();
    let result = llm_agent::run(broker, providers, settings.agent, stats.clone(), stop).await;
    if let Some(sim) = sim {
        sim.shutdown().await;
    }
    let failures: Vec<String> = stats
        .failure_counts()
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    tracing::info!(
        "llm agent: {} calls, {} failed [{}], {} retries, {} parked, circuits open {:.1}s ({} openings)",
        stats.calls(),
        stats.failures(),
        failures.join(", "),
        stats.retries(),
        stats.deferred(),
        stats.circuit_open_time().as_secs_f64(),
        stats.circuit_openings(),
    );
    result
}
