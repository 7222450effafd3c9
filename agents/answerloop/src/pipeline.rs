//! `answerloop run`: every agent in one process on the embedded broker, until
//! every question of the data set is final (stored or dead-lettered).
//!
//! The run is resumable: questions already final are not sent again, and
//! questions sent by an earlier, interrupted run are not sent twice (they
//! are still in `questions`, and the agents resume at their committed
//! offsets).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::{topics, Question};
use answerloop_storage::Store;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use answerloop_broker::producer::Producer;
use answerloop_broker::select::BrokerArgs;
use answerloop_broker::Broker;
use answerloop_llm::spec::ProviderSpec;
use answerloop_llm::{LlmStats, Provider};
use answerloop_llm_sim::SimConfig;

use crate::home::Home;
use crate::llm_agent::{self, LlmAgentConfig};
use crate::store::{self, Finalised};
use crate::tally::{self, Tally};
use crate::traffic::arrival::ScheduleArgs;
use crate::traffic::dataset::{self, IdSet, ReadReport};
use crate::traffic::feed::FeedReader;
use crate::{providers, traffic};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub home: Home,
    /// The question set; `None` for the built-in sample.
    pub data: Option<PathBuf>,
    /// Use only the first N distinct questions.
    pub limit: Option<usize>,
    pub provider: ProviderSpec,
    /// Providers to fall back on, in order, when the first's circuit is
    /// open or its quota spent.
    pub fallbacks: Vec<ProviderSpec>,
    /// The in-process simulator's settings, when the provider is `sim`.
    pub sim: SimConfig,
    pub agent: LlmAgentConfig,
    pub schedule: ScheduleArgs,
    pub broker: BrokerArgs,
    /// Give up when no question becomes final for this long.
    pub stall_timeout: Duration,
    pub progress: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunSummary {
    /// Distinct usable questions in the data (after --limit).
    pub questions: usize,
    /// Of those, final before this run started.
    pub already_final: usize,
    /// Produced to `questions` by this run.
    pub sent: usize,
    pub stored: usize,
    pub accepted: usize,
    pub exhausted: usize,
    pub dead_letters: usize,
    pub llm_calls: u64,
    pub llm_failures: u64,
    /// Failed calls by error class.
    pub llm_failures_by_class: BTreeMap<&'static str, u64>,
    pub llm_retries: u64,
    /// Total backoff the agent slept before retries, in milliseconds.
    pub llm_retry_delay_ms: u64,
    /// Questions parked on `deferred` after a quota error.
    pub llm_deferred: u64,
    /// Tokens of the answered calls as the provider reported them (what
    /// the tokens-per-minute budget was charged).
    pub llm_prompt_tokens: u64,
    pub llm_completion_tokens: u64,
    /// Answered calls that came with no usage (charged their estimate).
    pub llm_answers_without_usage: u64,
    /// Seconds the providers' circuits were open or half-open, summed.
    pub llm_circuit_open_s: f64,
    /// Times a circuit opened.
    pub llm_circuit_openings: u64,
    /// Each provider's circuit at the end of the run.
    pub circuits: Vec<CircuitSummary>,
    /// Stored answers by the provider and model that produced them
    /// (`provider/model`).
    pub stored_by_model: BTreeMap<String, usize>,
    pub mean_score_first_attempt: Option<f64>,
    pub mean_score_stored: Option<f64>,
    /// Stored answers by the attempt that produced them (index 0 = attempt 1).
    pub stored_by_attempt: Vec<usize>,
    /// Every scored answer by its attempt number: acceptance and mean score.
    pub by_attempt: Vec<tally::AttemptFigures>,
    pub elapsed_s: f64,
    pub questions_per_s: f64,
    pub interrupted: bool,
    pub llm: String,
    pub model: String,
    /// The providers fallen back on, in order, as `model (provider)`.
    pub fallbacks: Vec<String>,
    pub data: String,
    pub rows: usize,
    pub rows_skipped: usize,
    pub rows_malformed: usize,
    /// The first few malformed rows, as `line N: reason`.
    pub malformed_examples: Vec<String>,
    pub params: SummaryParams,
}

/// One provider's circuit, as a run's summary shows it.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct CircuitSummary {
    pub provider: String,
    pub state: String,
    pub openings: u64,
    pub open_s: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SummaryParams {
    pub threshold: f32,
    pub max_attempts: u32,
}

pub async fn run(options: RunOptions) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    // The question set is read as a stream, twice: here to learn which
    // questions are left, then by traffic as it sends them. Neither pass
    // holds it; the ids are held as numbers.
    let (data_name, mut questions) =
        dataset::open_or_sample(options.data.as_deref(), options.limit)?;
    // Whether it is a question set at all is known before anything is written.
    let first = questions.next().transpose()?;

    options.home.prepare()?;
    let store = Store::open(&options.home.store()).context("opening the answer store")?;
    let broker = options.broker.connect(&options.home.broker()).await?;
    broker.deploy(&topics::ALL).await?;

    let in_topic = traffic::already_sent(broker.as_ref()).await?;
    let mut remaining = IdSet::new();
    let mut already_final = 0;
    let mut to_send = 0;
    for q in first.map(Ok).into_iter().chain(questions.by_ref()) {
        let q = q?;
        if store.is_final(&q.id)? {
            already_final += 1;
        } else {
            remaining.insert(&q.id);
            to_send += usize::from(!in_topic.contains(&q.id));
        }
    }
    let (ids, report) = questions.into_parts();

    let specs: Vec<ProviderSpec> = std::iter::once(options.provider.clone())
        .chain(options.fallbacks.iter().cloned())
        .collect();
    let references = providers::references_for(&specs, options.data.as_deref(), options.limit)?;
    let (providers, sim) = providers::connect(&specs, &options.sim, references).await?;
    let mut summary = RunSummary {
        questions: ids.len(),
        already_final,
        sent: to_send,
        llm: providers[0].name().to_string(),
        model: providers[0].model().to_string(),
        fallbacks: providers[1..]
            .iter()
            .map(|p| format!("{} ({})", p.model(), p.name()))
            .collect(),
        data: data_name,
        params: SummaryParams {
            threshold: options.agent.params.threshold,
            max_attempts: options.agent.params.max_attempts,
        },
        ..RunSummary::default()
    };
    report_rows(&mut summary, &report);

    let stats = LlmStats::new();
    let interrupted = if remaining.is_empty() {
        false
    } else {
        let (data, limit) = (options.data.as_deref(), options.limit);
        let (_, questions) = dataset::open_or_sample(data, limit)?;
        // What was final when the run started is still final, and nothing
        // else is until it is sent: the store answers without a copy of
        // `remaining` (on a failed lookup the question is sent; the store
        // agent keeps one answer).
        let final_store = store.clone();
        // With `--scorer exact`, traffic embeds the references with the
        // LLM agent's embedder: one model loaded for the run.
        let exact = options.agent.exact.clone();
        let (to_send, reader) = traffic::feed::spawn(
            questions,
            move |q| !in_topic.contains(&q.id) && !final_store.is_final(&q.id).unwrap_or(false),
            exact,
        );
        let agents = Agents::start(
            &options,
            broker.clone(),
            store.clone(),
            providers,
            stats.clone(),
            (to_send, reader),
        );
        let bar = progress_bar(options.progress, remaining.len());
        let outcome = agents
            .wait_until_final(&mut remaining, &bar, options.stall_timeout, &stats)
            .await;
        bar.finish_and_clear();
        outcome?
    };
    if let Some(sim) = sim {
        sim.shutdown().await;
    }

    summary.interrupted = interrupted;
    summary.llm_calls = stats.calls();
    summary.llm_failures = stats.failures();
    summary.llm_failures_by_class = stats.failure_counts().into_iter().collect();
    summary.llm_retries = stats.retries();
    summary.llm_retry_delay_ms = stats.retry_delay_ms();
    summary.llm_deferred = stats.deferred();
    summary.llm_prompt_tokens = stats.prompt_tokens();
    summary.llm_completion_tokens = stats.completion_tokens();
    summary.llm_answers_without_usage = stats.answers_without_usage();
    summary.llm_circuit_open_s = stats.circuit_open_time().as_secs_f64();
    summary.llm_circuit_openings = stats.circuit_openings();
    summary.circuits = stats
        .circuits()
        .into_iter()
        .map(|c| CircuitSummary {
            provider: c.label,
            state: c.state.as_str().to_string(),
            openings: c.opened,
            open_s: c.open_time.as_secs_f64(),
        })
        .collect();
    let tally = Tally::count(&store, Some(&ids), options.agent.params.max_attempts)?;
    if tally.finals() > summary.questions {
        bail!("more final questions than questions: the store and the data disagree");
    }
    summary.stored = tally.stored;
    summary.accepted = tally.accepted;
    summary.exhausted = tally.exhausted;
    summary.dead_letters = tally.dead_letters;
    summary.stored_by_attempt = tally.stored_by_attempt;
    summary.stored_by_model = tally.stored_by_model;
    summary.mean_score_stored = tally.mean_score_stored;
    let scored = tally::scored_attempts(broker.as_ref(), &options.agent.params, Some(&ids)).await?;
    summary.by_attempt = tally::by_attempt(&scored);
    summary.mean_score_first_attempt = summary.by_attempt.first().and_then(|a| a.mean_score);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.questions_per_s = (summary.sent as f64 / summary.elapsed_s.max(1e-9)).max(0.0);
    let last_run = options.home.last_run();
    std::fs::write(&last_run, serde_json::to_vec_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", last_run.display()))?;
    Ok(summary)
}

fn report_rows(summary: &mut RunSummary, report: &ReadReport) {
    summary.rows = report.rows;
    summary.rows_skipped = report.no_question + report.no_reference + report.duplicates;
    summary.rows_malformed = report.malformed.len();
    summary.malformed_examples = report
        .malformed
        .iter()
        .take(5)
        .map(|e| e.to_string())
        .collect();
}

/// The agents of one run, as tasks.
struct Agents {
    stop: watch::Sender<bool>,
    events: mpsc::Receiver<Finalised>,
    tasks: tokio::task::JoinSet<(&'static str, anyhow::Result<()>)>,
}

impl Agents {
    fn start(
        options: &RunOptions,
        broker: Arc<dyn Broker>,
        store: Store,
        providers: Vec<Arc<dyn Provider>>,
        stats: Arc<LlmStats>,
        (to_send, reader): (mpsc::Receiver<Question>, FeedReader),
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(1024);
        let mut tasks = tokio::task::JoinSet::new();
        let config = store::StoreAgentConfig {
            batch: options.agent.batch,
            ..store::StoreAgentConfig::new(options.agent.params)
        };
        tasks.spawn({
            let (broker, stopped) = (broker.clone(), stopped.clone());
            async move {
                (
                    "store",
                    store::run(broker, store, config, Some(events_tx), stopped).await,
                )
            }
        });
        tasks.spawn({
            let (broker, stopped, config) =
                (broker.clone(), stopped.clone(), options.agent.clone());
            async move {
                (
                    "llm",
                    llm_agent::run(broker, providers, config, stats, stopped).await,
                )
            }
        });
        let schedule = options.schedule.schedule();
        tasks.spawn(async move {
            let (producer, task) = Producer::spawn(broker, topics::QUESTIONS, None, 256);
            let result = traffic::run(to_send, producer, schedule, stopped).await;
            let _ = task.await;
            // A failed read of the question set is the first thing to say.
            let read = reader.finish().await.map(|_| ());
            ("traffic", read.and(result.map(|_| ()).map_err(Into::into)))
        });
        Self {
            stop,
            events,
            tasks,
        }
    }

    /// Wait until every id in `remaining` is final; returns whether the run
    /// was interrupted (Ctrl-C). Agents are stopped and drained either way.
    async fn wait_until_final(
        mut self,
        remaining: &mut IdSet,
        bar: &ProgressBar,
        stall_timeout: Duration,
        stats: &LlmStats,
    ) -> anyhow::Result<bool> {
        let mut interrupted = false;
        let mut failure = None;
        let mut last_progress = tokio::time::Instant::now();
        while !remaining.is_empty() {
            tokio::select! {
                event = self.events.recv() => match event {
                    Some(event) => {
                        if remaining.remove(&event.id) {
                            bar.inc(1);
                            last_progress = tokio::time::Instant::now();
                        }
                    }
                    None => {
                        failure = Some(anyhow::anyhow!("the store agent stopped"));
                        break;
                    }
                },
                Some(done) = self.tasks.join_next() => {
                    match done {
                        Ok(("traffic", Ok(()))) => {}
                        Ok((name, Ok(()))) => {
                            failure = Some(anyhow::anyhow!("the {name} agent stopped early"));
                            break;
                        }
                        Ok((name, Err(e))) => {
                            failure = Some(e.context(format!("the {name} agent failed")));
                            break;
                        }
                        Err(e) => {
                            failure = Some(anyhow::anyhow!("an agent task failed: {e}"));
                            break;
                        }
                    }
                }
                _ = tokio::time::sleep_until(last_progress + stall_timeout) => {
                    failure = Some(anyhow::anyhow!(
                        "no question became final for {}s; {} still open{}",
                        stall_timeout.as_secs(), remaining.len(), open_circuits(stats)
                    ));
                    break;
                }
                _ = tokio::signal::ctrl_c() => {
                    interrupted = true;
                    break;
                }
            }
        }
        let _ = self.stop.send(true);
        while let Some(done) = self.tasks.join_next().await {
            if let Ok((name, Err(e))) = done {
                if failure.is_none() {
                    failure = Some(e.context(format!("the {name} agent failed while stopping")));
                }
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(interrupted),
        }
    }
}

/// Why a stalled run may be waiting: the providers whose circuit is not
/// closed (unreachable or failing), for the stall error.
fn open_circuits(stats: &LlmStats) -> String {
    let open: Vec<String> = stats
        .circuits()
        .into_iter()
        .filter(|c| c.state != answerloop_llm::breaker::CircuitState::Closed)
        .map(|c| {
            format!(
                "{} ({}, open {:.0}s)",
                c.label,
                c.state.as_str(),
                c.open_time.as_secs_f64()
            )
        })
        .collect();
    match open.is_empty() {
        true => String::new(),
        false => format!(
            "; the LLM provider is failing, its circuit not closed: {} (check --base-url and that the server is up; the questions stay queued for the next run)",
            open.join(", ")
        ),
    }
}

fn progress_bar(visible: bool, len: usize) -> ProgressBar {
    if !visible {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} final  {per_sec}  eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}
