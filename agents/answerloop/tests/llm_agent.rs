//! The LLM agent's retry policy, end to end: the pipeline against llm-sim
//! over real HTTP, with faults scripted so that every count is exact.
//! Delays are checked from the agent's recorded delays and the simulator's
//! request log, never against the wall clock.

mod common;

use std::time::Duration;

use answerloop::pipeline::{self, RunOptions, RunSummary};
use answerloop_llm::inflight::InFlightConfig;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm_sim::{FaultKind, Quality, SimConfig, SimServer};
use answerloop_schema::{DeadLetter, FailureClass};
use answerloop_storage::Store;
use common::sim_run;

/// A simulator that answers every known question perfectly, after `fail_first`
/// scripted faults, or fails `fail_rate` of requests with `kinds`.
fn scripted(kinds: &[FaultKind], fail_first: u64, fail_rate: f64) -> SimConfig {
    SimConfig {
        quality: Quality::Fixed(1.0),
        fail_kinds: kinds.to_vec(),
        fail_first,
        fail_rate,
        retry_after: Duration::from_millis(20),
        hang: Duration::from_secs(5),
        ..SimConfig::default()
    }
}

/// One question at a time, one scored attempt, quick backoff.
fn options(dir: &tempfile::TempDir, sim: SimConfig, questions: usize) -> RunOptions {
    let mut o = sim_run(dir.path(), sim, Some(questions));
    o.agent.rate.concurrency = 1;
    o.agent.params.max_attempts = 1;
    o.agent.retry.base = Duration::from_millis(1);
    o.agent.retry.cap = Duration::from_millis(5);
    o
}

async fn run(options: RunOptions) -> (RunSummary, Vec<DeadLetter>) {
    let store_dir = options.home.store();
    let summary = pipeline::run(options).await.unwrap();
    let store = Store::open(&store_dir).unwrap();
    let letters = store.dead_letters().map(Result::unwrap).collect();
    (summary, letters)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_retried_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (s, letters) = run(options(
        &dir,
        scripted(&[FaultKind::Unavailable, FaultKind::Internal], 2, 0.0),
        1,
    ))
    .await;
    assert_eq!((s.llm_calls, s.llm_retries, s.stored), (3, 2, 1), "{s:?}");
    assert!(letters.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_that_outlasts_the_retries_is_dead_lettered_with_its_last_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, scripted(&[FaultKind::Unavailable], 0, 1.0), 1);
    o.agent.retry.max_retries = 3;
    let (s, letters) = run(o).await;
    assert_eq!(
        (s.llm_calls, s.llm_retries, s.dead_letters),
        (4, 3, 1),
        "{s:?}"
    );
    assert_eq!(letters[0].class, FailureClass::Overload);
    assert_eq!(letters[0].status, Some(503));
    assert!(
        letters[0].reason.contains("gave up after 3 retries"),
        "{}",
        letters[0].reason
    );
}

/// A request the server holds past the time-out is not sent again while it
/// is still there (a retry waits for it); once it is abandoned, its
/// connection closed, a retry sends it anew and is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_outs_are_overload_and_retried_without_resending_a_request_still_at_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let questions = answerloop_dataset::sample().questions;
    let sim = scripted(&[FaultKind::Timeout], 1, 0.0);
    let server = SimServer::start("127.0.0.1:0".parse().unwrap(), sim, &questions)
        .await
        .unwrap();
    let mut o = options(&dir, SimConfig::default(), 1);
    o.provider = ProviderSpec::new(
        ProviderKind::Openai,
        Some(server.base_url()),
        None,
        None,
        Duration::from_millis(1000),
    )
    .with_in_flight(InFlightConfig {
        max: Some(1),
        abandon: Some(Duration::from_secs(3)),
    });
    let (s, _) = run(o).await;
    assert_eq!(s.stored, 1, "{s:?}");
    assert!(s.llm_failures_by_class["overload"] >= 2, "{s:?}");
    assert_eq!(
        server.state.stats.snapshot().requests,
        2,
        "the held request, and one more once it was abandoned: {s:?}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_dead_lettered_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        api_key: Some("sk-required".into()),
        ..scripted(&[], 0, 0.0)
    };
    let (s, letters) = run(options(&dir, sim, 2)).await;
    assert_eq!(
        (s.llm_calls, s.llm_retries, s.dead_letters),
        (2, 0, 2),
        "{s:?}"
    );
    for letter in letters {
        assert_eq!(
            (letter.class, letter.status),
            (FailureClass::Permanent, Some(401))
        );
        assert!(
            letter.reason.contains("invalid_api_key"),
            "{}",
            letter.reason
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_are_retried_then_dead_lettered_as_permanent() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, scripted(&[FaultKind::Malformed], 0, 1.0), 1);
    o.agent.retry.max_retries = 2;
    let (s, letters) = run(o).await;
    assert_eq!((s.llm_calls, s.dead_letters), (3, 1), "{s:?}");
    assert_eq!(letters[0].class, FailureClass::Permanent);
    assert!(
        letters[0].reason.contains("malformed"),
        "{}",
        letters[0].reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_a_floor_for_the_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimConfig {
        retry_after: Duration::from_millis(700),
        ..scripted(&[FaultKind::RateLimit], 2, 0.0)
    };
    let mut o = options(&dir, sim, 1);
    o.agent.retry.cap = Duration::from_millis(50);
    let (s, _) = run(o).await;
    assert_eq!((s.llm_calls, s.llm_retries, s.stored), (3, 2, 1), "{s:?}");
    // Recorded by the agent: each retry waited the server's 700 ms, not the
    // at most 50 ms its own backoff would have chosen.
    assert_eq!(s.llm_retry_delay_ms, 1400);
}

/// The simulator outside the pipeline, so the test can read its request log.
async fn outside_sim(config: SimConfig) -> SimServer {
    let questions = answerloop::traffic::dataset::sample().questions;
    SimServer::start("127.0.0.1:0".parse().unwrap(), config, &questions)
        .await
        .unwrap()
}

fn against(o: &mut RunOptions, sim: &SimServer) {
    o.provider = ProviderSpec::new(
        ProviderKind::Openai,
        Some(sim.base_url()),
        None,
        None,
        Duration::from_secs(5),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_quota_parks_the_question_and_pauses_every_call_until_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let pause = Duration::from_millis(800);
    let sim = outside_sim(SimConfig {
        retry_after: pause,
        ..scripted(&[FaultKind::Quota], 1, 0.0)
    })
    .await;
    // One call at a time: the slot frees only after the agent has heard of
    // the quota error and paused, so the order below is exact.
    let mut o = options(&dir, SimConfig::default(), 5);
    against(&mut o, &sim);
    let (s, letters) = run(o).await;
    assert_eq!((s.llm_deferred, s.stored, s.llm_calls), (1, 5, 6), "{s:?}");
    assert!(letters.is_empty());
    let log = sim.state.request_log();
    assert_eq!(log[0].fault, Some(FaultKind::Quota));
    for later in &log[1..] {
        assert!(
            later.at >= log[0].at + pause,
            "a call started {:?} into the pause",
            later.at - log[0].at
        );
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_llm_attempt_cap_holds_across_deferrals() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, scripted(&[FaultKind::Quota], 0, 1.0), 1);
    o.agent.max_llm_attempts = 3;
    let (s, letters) = run(o).await;
    assert_eq!(
        (s.llm_calls, s.llm_deferred, s.dead_letters),
        (3, 3, 1),
        "{s:?}"
    );
    assert_eq!(letters[0].class, FailureClass::Cap);
    assert_eq!(letters[0].question.as_ref().unwrap().llm_attempts, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_a_retry_storm() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(&dir, scripted(&[FaultKind::Unavailable], 0, 1.0), 40);
    o.agent.rate.concurrency = 8;
    o.agent.retry.budget_ratio = 0.1;
    o.agent.retry.budget_min_per_sec = 0;
    // The budget alone: with the breaker on, the circuit would open first
    // (see `circuit.rs`).
    o.agent.breaker.failure_threshold = 0;
    let (s, letters) = run(o).await;
    assert_eq!(s.dead_letters, 40);
    assert!(
        s.llm_retries <= 6,
        "{} retries for 40 first calls at a 10% budget",
        s.llm_retries
    );
    assert_eq!(s.llm_calls, 40 + s.llm_retries);
    let spent = letters
        .iter()
        .filter(|l| l.class == FailureClass::Cap && l.reason.contains("retry budget"))
        .count();
    assert!(spent >= 30, "{spent} questions stopped by the budget");
}
