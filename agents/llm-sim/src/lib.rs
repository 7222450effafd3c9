//! llm-sim — a TEST TOOL, not a model. It serves the OpenAI chat-completions
//! API on loopback and answers each known question with text whose
//! similarity to the question's reference answer is drawn from a chosen
//! distribution, so the pipeline's feedback loop has real work to do; and it
//! injects the faults real LLM APIs return (503, 500, 429 rate limits with
//! `Retry-After`, 429 `insufficient_quota`, hangs, malformed JSON).
//!
//! Tests use it to exercise answerloop's real HTTP client and retry paths.
//! Nothing that a test claims to verify is the simulator itself. It is a
//! crate of its own so that it is plainly a test tool: the pipeline never
//! depends on it, only the binary's `--llm sim` and `llm-sim` command do.
//!
//! - [`text`]: answer text of a chosen similarity.
//! - [`faults`]: which faults, how often.
//! - [`server`]: the HTTP routes.

pub mod faults;
pub mod server;
pub mod text;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use answerloop_dataset::RowIndex;
use answerloop_schema::{question_id, Question};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::FaultKind;
pub use text::Quality;

#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Mean added latency of a successful answer.
    pub latency: Duration,
    /// Latency varies uniformly by up to this much either side of the mean.
    pub latency_jitter: Duration,
    /// How close answers are to their references.
    pub quality: Quality,
    /// Share of requests that fail, from 0 to 1.
    pub fail_rate: f64,
    /// Faults to choose from, uniformly, when a request fails.
    pub fail_kinds: Vec<FaultKind>,
    /// The first this many requests fail, taking `fail_kinds` in turn,
    /// whatever `fail_rate` says: for tests that need an exact script.
    pub fail_first: u64,
    /// `Retry-After` sent with 429 rate limits.
    pub retry_after: Duration,
    /// How long a `timeout` fault holds the request before answering.
    pub hang: Duration,
    pub seed: u64,
    /// The model name in replies.
    pub model: String,
    /// When set, requests must carry this bearer key (401 otherwise).
    pub api_key: Option<String>,
    /// Answers a second the simulated account may take; past it, 429
    /// `rate_limit_exceeded` with the wait until the next one. Faults do not
    /// count against it.
    pub quota_per_sec: Option<u32>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            latency_jitter: Duration::ZERO,
            quality: Quality::Uniform(0.1, 0.9),
            fail_rate: 0.0,
            fail_kinds: FaultKind::ALL.to_vec(),
            fail_first: 0,
            retry_after: Duration::from_secs(1),
            hang: Duration::from_secs(120),
            seed: 0,
            model: "llm-sim".into(),
            api_key: None,
            quota_per_sec: None,
        }
    }
}

/// What the simulator has seen and done; `GET /sim/stats` serves the same.
#[derive(Debug, Default)]
pub struct SimStats {
    pub requests: AtomicU64,
    pub answered: AtomicU64,
    /// Requests refused because the simulated quota was used up.
    pub over_quota: AtomicU64,
    pub unknown_questions: AtomicU64,
    pub faults: [AtomicU64; FaultKind::ALL.len()],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimStatsSnapshot {
    pub requests: u64,
    pub answered: u64,
    pub over_quota: u64,
    pub unknown_questions: u64,
    pub faults: HashMap<&'static str, u64>,
}

impl SimStats {
    pub fn snapshot(&self) -> SimStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStatsSnapshot {
            requests: get(&self.requests),
            answered: get(&self.answered),
            over_quota: get(&self.over_quota),
            unknown_questions: get(&self.unknown_questions),
            faults: FaultKind::ALL
                .iter()
                .zip(&self.faults)
                .map(|(k, c)| (k.name(), get(c)))
                .collect(),
        }
    }
}

/// At most this many requests are kept in the request log.
const REQUEST_LOG_CAP: usize = 100_000;

/// One request as the simulator saw it: when it arrived, and the fault it
/// got (`None` for an answer).
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub at: tokio::time::Instant,
    pub fault: Option<FaultKind>,
}

/// Where the simulator finds a question's reference answer, by question
/// id: a map for a set held in memory, or a [`RowIndex`] that reads it from
/// the question set file, so a large set is not held.
pub trait References: Send + Sync {
    fn reference(&self, id: &str) -> Option<String>;
    /// Questions known.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl References for HashMap<String, String> {
    fn reference(&self, id: &str) -> Option<String> {
        self.get(id).cloned()
    }

    fn len(&self) -> usize {
        HashMap::len(self)
    }
}

impl References for RowIndex {
    fn reference(&self, id: &str) -> Option<String> {
        match self.get(id) {
            Ok(question) => question.map(|q| q.reference),
            Err(e) => {
                tracing::warn!("llm-sim: {e}");
                None
            }
        }
    }

    fn len(&self) -> usize {
        RowIndex::len(self)
    }
}

/// The references of `questions`, held in memory.
pub fn references_of(questions: &[Question]) -> Arc<dyn References> {
    let map: HashMap<String, String> = questions
        .iter()
        .map(|q| (q.id.clone(), q.reference.clone()))
        .collect();
    Arc::new(map)
}

/// Shared by every request.
pub struct SimState {
    config: SimConfig,
    /// Reference answers by question id.
    references: Arc<dyn References>,
    rng: Mutex<StdRng>,
    log: Mutex<Vec<Request>>,
    quota: Option<governor::DefaultDirectRateLimiter>,
    pub stats: SimStats,
}

impl SimState {
    pub fn new(config: SimConfig, references: Arc<dyn References>) -> Self {
        let quota = config
            .quota_per_sec
            .and_then(std::num::NonZeroU32::new)
            .map(|n| governor::RateLimiter::direct(governor::Quota::per_second(n)));
        Self {
            rng: Mutex::new(StdRng::seed_from_u64(config.seed)),
            quota,
            config,
            references,
            log: Mutex::new(Vec::new()),
            stats: SimStats::default(),
        }
    }

    /// `Err(wait)` when the simulated account's quota is used up for now.
    fn take_quota(&self) -> Result<(), Duration> {
        let Some(limiter) = &self.quota else {
            return Ok(());
        };
        limiter.check().map_err(|not_until| {
            use governor::clock::Clock;
            not_until.wait_time_from(governor::clock::DefaultClock::default().now())
        })
    }

    /// The requests seen so far, in arrival order (the first 100,000).
    pub fn request_log(&self) -> Vec<Request> {
        self.log.lock().expect("log poisoned").clone()
    }

    /// Count a request and decide its fault: scripted first, then by rate.
    fn admit(&self, rng: &mut StdRng) -> Option<FaultKind> {
        let index = self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let kinds = &self.config.fail_kinds;
        let fault = if index < self.config.fail_first && !kinds.is_empty() {
            Some(kinds[(index % kinds.len() as u64) as usize])
        } else {
            faults::draw(rng, self.config.fail_rate, kinds)
        };
        let mut log = self.log.lock().expect("log poisoned");
        if log.len() < REQUEST_LOG_CAP {
            log.push(Request {
                at: tokio::time::Instant::now(),
                fault,
            });
        }
        fault
    }

    /// The reference answer for a question text, if the simulator knows it.
    fn reference(&self, question_text: &str) -> Option<String> {
        self.references.reference(&question_id(question_text))
    }

    /// Questions the simulator knows.
    pub fn known_questions(&self) -> usize {
        self.references.len()
    }
}

/// A running simulator.
pub struct SimServer {
    pub addr: SocketAddr,
    pub state: Arc<SimState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl SimServer {
    /// Serve on `listen` (use port 0 for any free port), answering
    /// `questions`.
    pub async fn start(
        listen: SocketAddr,
        config: SimConfig,
        questions: &[Question],
    ) -> std::io::Result<Self> {
        Self::serve(listen, config, references_of(questions)).await
    }

    /// Serve on `listen`, answering the questions `references` knows.
    pub async fn serve(
        listen: SocketAddr,
        config: SimConfig,
        references: Arc<dyn References>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(SimState::new(config, references));
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let app = server::router(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await
        });
        Ok(Self {
            addr,
            state,
            stop,
            task,
        })
    }

    /// The OpenAI API root to point a client at.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Stop serving and wait for the server task.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        self.task.abort();
        let _ = self.task.await;
    }

    /// Serve until the process is told to stop.
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_question_set_file_is_answered_from_its_rows_not_held() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.csv");
        std::fs::write(
            &path,
            "1,\"Why is the sea salty?\",\"Asking.\",\"Rivers carry salts.\"\n\
             1,\"bad row\"\n\
             2,\"Is tea healthy?\",\"\",\"In moderation.\"\n",
        )
        .unwrap();
        let (index, _) = RowIndex::build(&path, None).unwrap();
        let state = SimState::new(SimConfig::default(), Arc::new(index));
        assert_eq!(state.known_questions(), 2);
        assert_eq!(
            state.reference("Is tea healthy?").as_deref(),
            Some("In moderation.")
        );
        assert_eq!(
            state.reference("Why is the sea salty?\nAsking.").as_deref(),
            Some("Rivers carry salts.")
        );
        assert_eq!(state.reference("Is coffee healthy?"), None);
        // The same answers as from the questions held in memory.
        let held = answerloop_dataset::open(&path, None)
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let in_memory = SimState::new(SimConfig::default(), references_of(&held));
        for q in &held {
            assert_eq!(in_memory.reference(&q.text()), state.reference(&q.text()));
        }
    }
}
