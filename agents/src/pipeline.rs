//! `answerloop run`: every agent in one process on the embedded broker, until
//! every question of the data set is final (stored or dead-lettered).
//!
//! The run is resumable: questions already final are not sent again, and
//! questions sent by an earlier, interrupted run are not sent twice (they
//! are still in `questions`, and the agents resume at their committed
//! offsets).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::Verdict;
use answerloop_schema::{topics, Question, Scored};
use answerloop_scoring::Params;
use answerloop_storage::Store;
use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

use crate::broker::producer::Producer;
use crate::broker::select::BrokerArgs;
use crate::broker::{self, Broker};
use crate::home::Home;
use crate::llm::agent::{LlmAgentConfig, LlmStats};
use crate::llm::spec::{ProviderKind, ProviderSpec};
use crate::llm::Provider;
use crate::sim::{SimConfig, SimServer};
use crate::store::{self, Finalised};
use crate::traffic::arrival::ScheduleArgs;
use crate::traffic::dataset::{self, ReadReport};
use crate::{llm, traffic};

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub home: Home,
    /// The question set; `None` for the built-in sample.
    pub data: Option<PathBuf>,
    /// Use only the first N distinct questions.
    pub limit: Option<usize>,
    pub provider: ProviderSpec,
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
    pub llm_failures_by_class: HashMap<&'static str, u64>,
    pub llm_retries: u64,
    /// Total backoff the agent slept before retries, in milliseconds.
    pub llm_retry_delay_ms: u64,
    /// Questions parked on `deferred` after a quota error.
    pub llm_deferred: u64,
    pub mean_score_first_attempt: Option<f64>,
    pub mean_score_stored: Option<f64>,
    /// Stored answers by the attempt that produced them (index 0 = attempt 1).
    pub stored_by_attempt: Vec<usize>,
    pub elapsed_s: f64,
    pub questions_per_s: f64,
    pub interrupted: bool,
    pub llm: String,
    pub model: String,
    pub data: String,
    pub rows: usize,
    pub rows_skipped: usize,
    pub rows_malformed: usize,
    /// The first few malformed rows, as `line N: reason`.
    pub malformed_examples: Vec<String>,
    pub params: SummaryParams,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct SummaryParams {
    pub threshold: f32,
    pub max_attempts: u32,
}

pub async fn run(options: RunOptions) -> anyhow::Result<RunSummary> {
    let started = Instant::now();
    let (data_name, dataset) = dataset::read_or_sample(options.data.as_deref())?;
    let mut questions = dataset.questions;
    if let Some(limit) = options.limit {
        questions.truncate(limit);
    }

    options.home.prepare()?;
    let store = Store::open(&options.home.store()).context("opening the answer store")?;
    let broker = options.broker.connect(&options.home).await?;
    broker.deploy(&topics::ALL).await?;

    let mut remaining = HashSet::new();
    let mut already_final = 0;
    for q in &questions {
        if store.is_final(&q.id)? {
            already_final += 1;
        } else {
            remaining.insert(q.id.clone());
        }
    }
    let in_topic = scan_ids(broker.as_ref(), topics::QUESTIONS).await?;
    let to_send: Vec<Question> = questions
        .iter()
        .filter(|q| remaining.contains(&q.id) && !in_topic.contains(&q.id))
        .cloned()
        .collect();

    let (provider, sim) = provider(&options.provider, &options.sim, &questions).await?;
    let mut summary = RunSummary {
        questions: questions.len(),
        already_final,
        sent: to_send.len(),
        llm: provider.name().to_string(),
        model: provider.model().to_string(),
        data: data_name,
        params: SummaryParams {
            threshold: options.agent.params.threshold,
            max_attempts: options.agent.params.max_attempts,
        },
        ..RunSummary::default()
    };
    report_rows(&mut summary, &dataset.report);

    let stats = Arc::new(LlmStats::default());
    let interrupted = if remaining.is_empty() {
        false
    } else {
        let agents = Agents::start(
            &options,
            broker.clone(),
            store.clone(),
            provider,
            stats.clone(),
            to_send,
        );
        let bar = progress_bar(options.progress, remaining.len());
        let outcome = agents
            .wait_until_final(&mut remaining, &bar, options.stall_timeout)
            .await;
        bar.finish_and_clear();
        outcome?
    };
    if let Some(sim) = sim {
        sim.shutdown().await;
    }

    summary.interrupted = interrupted;
    summary.llm_calls = LlmStats::get(&stats.calls);
    summary.llm_failures = stats.failures();
    summary.llm_failures_by_class = stats.failure_counts().into_iter().collect();
    summary.llm_retries = LlmStats::get(&stats.retries);
    summary.llm_retry_delay_ms = LlmStats::get(&stats.retry_delay_ms);
    summary.llm_deferred = LlmStats::get(&stats.deferred);
    tally(
        &mut summary,
        &store,
        broker.as_ref(),
        &questions,
        options.agent.params,
    )
    .await?;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.questions_per_s = (summary.sent as f64 / summary.elapsed_s.max(1e-9)).max(0.0);
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

/// The simulator (started here when chosen) and a client for the model.
pub(crate) async fn provider(
    spec: &ProviderSpec,
    sim: &SimConfig,
    questions: &[Question],
) -> anyhow::Result<(Arc<dyn Provider>, Option<SimServer>)> {
    match spec.kind() {
        ProviderKind::Sim => {}
        ProviderKind::Local => {
            // Fetching and loading are seconds of blocking work.
            let spec = spec.clone();
            let provider = tokio::task::spawn_blocking(move || {
                crate::commands::models::ensure_local_model(spec.models())?;
                Ok::<_, anyhow::Error>(spec.connect(None)?)
            })
            .await??;
            return Ok((provider, None));
        }
        _ => return Ok((spec.connect(None)?, None)),
    }
    let listen = "127.0.0.1:0".parse().expect("a socket address");
    let server = SimServer::start(listen, sim.clone(), questions)
        .await
        .context("starting the in-process llm-sim")?;
    Ok((spec.connect(Some(&server.base_url()))?, Some(server)))
}

/// Question ids already on `topic`, across its partitions.
pub(crate) async fn scan_ids(broker: &dyn Broker, topic: &str) -> anyhow::Result<HashSet<String>> {
    let mut ids = HashSet::new();
    broker::scan(broker, topic, None, |record| {
        if let Ok(q) = serde_json::from_slice::<Question>(&record.value) {
            ids.insert(q.id);
        }
    })
    .await?;
    Ok(ids)
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
        provider: Arc<dyn Provider>,
        stats: Arc<LlmStats>,
        to_send: Vec<Question>,
    ) -> Self {
        let (stop, stopped) = watch::channel(false);
        let (events_tx, events) = mpsc::channel(1024);
        let mut tasks = tokio::task::JoinSet::new();
        let params = options.agent.params;
        let batch = options.agent.batch;
        tasks.spawn({
            let (broker, stopped) = (broker.clone(), stopped.clone());
            async move {
                (
                    "store",
                    store::run(broker, store, params, batch, Some(events_tx), stopped).await,
                )
            }
        });
        tasks.spawn({
            let (broker, stopped, config) =
                (broker.clone(), stopped.clone(), options.agent.clone());
            async move {
                (
                    "llm",
                    llm::agent::run(broker, provider, config, stats, stopped).await,
                )
            }
        });
        let schedule = options.schedule.schedule();
        tasks.spawn(async move {
            let (producer, task) = Producer::spawn(broker, topics::QUESTIONS, None, 256);
            let result = traffic::run(to_send, producer, schedule, stopped).await;
            let _ = task.await;
            ("traffic", result.map(|_| ()).map_err(Into::into))
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
        remaining: &mut HashSet<String>,
        bar: &ProgressBar,
        stall_timeout: Duration,
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
                    let sample: Vec<&String> = remaining.iter().take(5).collect();
                    failure = Some(anyhow::anyhow!(
                        "no question became final for {}s; {} still open (e.g. {sample:?})",
                        stall_timeout.as_secs(), remaining.len()
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

/// Fill the summary's outcome figures from the store and the `answers` log.
async fn tally(
    summary: &mut RunSummary,
    store: &Store,
    broker: &dyn Broker,
    questions: &[Question],
    params: Params,
) -> anyhow::Result<()> {
    let ids: HashSet<&str> = questions.iter().map(|q| q.id.as_str()).collect();
    let mut stored_scores = Vec::new();
    for q in questions {
        if let Some(answer) = store.get(&q.id)? {
            summary.stored += 1;
            match answer.verdict {
                Verdict::Accept => summary.accepted += 1,
                _ => summary.exhausted += 1,
            }
            stored_scores.push(f64::from(answer.score));
            let slot = answer.attempt.clamp(1, params.max_attempts.max(1)) as usize - 1;
            if summary.stored_by_attempt.len() <= slot {
                summary.stored_by_attempt.resize(slot + 1, 0);
            }
            summary.stored_by_attempt[slot] += 1;
        } else if store.dead_letter(&q.id)?.is_some() {
            summary.dead_letters += 1;
        }
    }
    summary.mean_score_stored = mean(&stored_scores);

    // First-attempt scores come from the scored log: the store keeps finals only.
    let mut first: HashMap<String, f64> = HashMap::new();
    broker::scan(broker, topics::ANSWERS, None, |record| {
        if let Scored::Answer(a) = Scored::decode(&record.value) {
            if let (1, Some(score), true) = (
                a.question.attempt,
                a.score,
                ids.contains(a.question.id.as_str()),
            ) {
                first.entry(a.question.id).or_insert(f64::from(score));
            }
        }
    })
    .await?;
    summary.mean_score_first_attempt = mean(&first.into_values().collect::<Vec<_>>());
    if summary.stored + summary.dead_letters > summary.questions {
        bail!("more final questions than questions: the store and the data disagree");
    }
    Ok(())
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}
