//! Provider outages cost no questions: the circuit breaker turns an outage
//! into a pause, fallback providers take the questions while the first
//! fails, and a flapping provider stays within the caps. Real llm-sim
//! servers on loopback (processes killed and restarted on the same port,
//! or server tasks stopped and started), the real pipeline and store.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use answerloop::pipeline;
use answerloop::tally::Tally;
use answerloop::traffic::dataset;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm_sim::{SimConfig, SimServer};
use answerloop_storage::Store;
use common::{binary, json_of, llm_sim_process, scrape, wait_for};
use serde_json::Value;

const OK_CALLS: &str = r#"answerloop_llm_calls_total{outcome="ok",class=""}"#;

fn circuit_metric(samples: &HashMap<String, f64>, family: &str, provider: &str) -> f64 {
    let name = format!("{family}{{provider=\"{provider}\"}}");
    samples.get(&name).copied().unwrap_or(-1.0)
}

#[test]
fn a_provider_down_for_ten_seconds_is_a_pause_and_no_question_is_lost() {
    let home = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let metrics = common::free_port();
    let knobs = ["--sim-latency-ms", "30"];
    let mut sim = llm_sim_process(port, &knobs);
    let run = binary()
        .args(["run", "--json", "--llm", "openai", "--base-url"])
        .arg(format!("http://127.0.0.1:{port}/v1"))
        .arg("--home")
        .arg(home.path())
        .args(["--metrics", &format!("127.0.0.1:{metrics}")])
        .args(["--circuit-open-secs", "1", "--circuit-open-cap-secs", "4"])
        .env_remove("OPENAI_API_KEY")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("60 answers before the outage", || {
        scrape(metrics).is_some_and(|s| s.get(OK_CALLS).copied().unwrap_or(0.0) >= 60.0)
    });
    sim.kill().unwrap();
    sim.wait().unwrap();
    wait_for("the circuit to open", || {
        scrape(metrics)
            .is_some_and(|s| circuit_metric(&s, "answerloop_llm_circuit_state", "openai") >= 1.0)
    });
    std::thread::sleep(Duration::from_secs(10));
    let during = scrape(metrics).expect("the run serves metrics during the outage");
    let open_during = circuit_metric(
        &during,
        "answerloop_llm_circuit_open_seconds_total",
        "openai",
    );
    let calls_during = during[OK_CALLS];
    let mut sim = llm_sim_process(port, &knobs);
    let out = run.wait_with_output().unwrap();
    sim.kill().unwrap();
    sim.wait().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let s: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();

    let total = dataset::sample().questions.len() as u64;
    assert_eq!(s["stored"].as_u64(), Some(total), "{s}");
    assert_eq!(s["dead_letters"].as_u64(), Some(0), "{s}");
    assert!(
        calls_during < total as f64,
        "the outage came in the middle of the run: {calls_during} answers before it"
    );
    assert!(
        s["llm_failures_by_class"]["overload"].as_u64().unwrap() > 0,
        "the outage was seen: {s}"
    );
    assert!(
        open_during > 0.0,
        "/metrics showed the circuit open: {during:?}"
    );
    let open_s = s["llm_circuit_open_s"].as_f64().unwrap();
    assert!(
        open_s >= open_during,
        "{open_s} s open in the summary, {open_during} s seen during the outage"
    );
    assert!(s["llm_circuit_openings"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(s["circuits"][0]["state"], "closed", "{s}");
    assert!(
        stderr.contains("circuit open"),
        "the opening is logged: {stderr}"
    );

    let page = home.path().join("report.html");
    let report = json_of([
        "report".as_ref(),
        "--json".as_ref(),
        "--out".as_ref(),
        page.as_os_str(),
        "--home".as_ref(),
        home.path().as_os_str(),
    ]);
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(
        html.contains("circuits open (last run)"),
        "the page shows the circuit"
    );
    assert_eq!(report["circuit_open_s"].as_f64(), Some(open_s), "{report}");
    assert_eq!(report["dead_letters"].as_u64(), Some(0), "{report}");
}

#[test]
fn questions_fall_back_to_the_second_provider_while_the_first_fails() {
    let home = tempfile::tempdir().unwrap();
    let (failing, healthy) = (common::free_port(), common::free_port());
    let mut first = llm_sim_process(
        failing,
        &["--sim-fail-rate", "1", "--sim-fail-kinds", "503"],
    );
    let mut second = llm_sim_process(healthy, &[]);
    // The fallback order from the configuration file.
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        format!(
            "[llm]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{failing}/v1\"\n\
             [llm.circuit]\nfailure_threshold = 3\nopen_secs = 0.5\nopen_cap_secs = 2\n\
             [[llm.fallback]]\nprovider = \"openai\"\nbase_url = \"http://127.0.0.1:{healthy}/v1\"\n"
        ),
    )
    .unwrap();
    let s = json_of([
        "run".as_ref(),
        "--json".as_ref(),
        "--limit".as_ref(),
        "30".as_ref(),
        "--config".as_ref(),
        config.path().as_os_str(),
        "--home".as_ref(),
        home.path().as_os_str(),
    ]);
    for sim in [&mut first, &mut second] {
        sim.kill().unwrap();
        sim.wait().unwrap();
    }
    assert_eq!(s["stored"].as_u64(), Some(30), "{s}");
    assert_eq!(s["dead_letters"].as_u64(), Some(0), "{s}");
    let by_model: BTreeMap<String, u64> =
        serde_json::from_value(s["stored_by_model"].clone()).unwrap();
    assert_eq!(
        by_model,
        BTreeMap::from([("openai#2/llm-sim".to_string(), 30)]),
        "every answer came from the second provider: {s}"
    );
    assert_eq!(s["fallbacks"][0], "gpt-4o-mini (openai)", "{s}");
    let circuits = s["circuits"].as_array().unwrap();
    assert_eq!(circuits[0]["provider"], "openai#1", "{s}");
    assert!(circuits[0]["openings"].as_u64().unwrap() >= 1, "{s}");
    assert_eq!(circuits[1]["openings"].as_u64(), Some(0), "{s}");

    let store = Store::open(&home.path().join("store")).unwrap();
    for answer in store.answers() {
        let answer = answer.unwrap();
        assert_eq!(
            (answer.provider.as_str(), answer.model.as_str()),
            ("openai#2", "llm-sim")
        );
    }
}

/// Stop and start an llm-sim server task on one port, `down` then `up`,
/// until told to stop; counts the requests every instance saw.
async fn flap(
    port: u16,
    down: Duration,
    up: Duration,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) {
    let questions = dataset::sample().questions;
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut server = Some(
        SimServer::start(addr, SimConfig::default(), &questions)
            .await
            .unwrap(),
    );
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(up).await;
        if let Some(s) = server.take() {
            seen.fetch_add(s.state.stats.snapshot().requests, Ordering::Relaxed);
            s.shutdown().await;
        }
        tokio::time::sleep(down).await;
        server = Some(loop {
            match SimServer::start(addr, SimConfig::default(), &questions).await {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        });
    }
    if let Some(s) = server {
        seen.fetch_add(s.state.stats.snapshot().requests, Ordering::Relaxed);
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_provider_cannot_cause_a_retry_storm() {
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let (stop, seen) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let flapper = tokio::spawn(flap(
        port,
        Duration::from_millis(400),
        Duration::from_millis(200),
        stop.clone(),
        seen.clone(),
    ));
    let questions = 40;
    let mut o = common::sim_run(dir.path(), SimConfig::default(), Some(questions));
    o.provider = ProviderSpec::new(
        ProviderKind::Openai,
        Some(format!("http://127.0.0.1:{port}/v1")),
        None,
        None,
        Duration::from_secs(5),
    );
    o.agent.breaker.failure_threshold = 3;
    o.agent.breaker.open_base = Duration::from_millis(100);
    o.agent.breaker.open_cap = Duration::from_millis(400);
    o.agent.retry.base = Duration::from_millis(10);
    o.agent.retry.cap = Duration::from_millis(50);
    let max_calls = o.agent.max_llm_attempts;
    let store_dir = o.home.store();
    let s = pipeline::run(o).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    flapper.await.unwrap();

    assert_eq!(s.stored + s.dead_letters, questions, "{s:?}");
    assert!(s.llm_circuit_openings >= 1, "the provider flapped: {s:?}");
    assert!(s.llm_failures_by_class["overload"] > 0, "{s:?}");
    let store = Store::open(&store_dir).unwrap();
    let tally = Tally::count(&store, None, u32::MAX).unwrap();
    assert_eq!(
        tally.llm_calls, s.llm_calls,
        "every call the agent made is on a question's record"
    );
    let answered = seen.load(Ordering::Relaxed);
    assert!(
        answered <= s.llm_calls,
        "the servers saw {answered} calls, the agent counted {}",
        s.llm_calls
    );
    for answer in store.answers() {
        let a = answer.unwrap();
        assert!(
            a.llm_attempts <= max_calls,
            "{} took {} calls",
            a.id,
            a.llm_attempts
        );
    }
    for letter in store.dead_letters() {
        let q = letter.unwrap().question.unwrap();
        assert!(
            q.llm_attempts <= max_calls,
            "{} took {} calls",
            q.id,
            q.llm_attempts
        );
    }
    assert!(
        s.llm_calls <= (questions as u64) * u64::from(max_calls),
        "{} calls for {questions} questions",
        s.llm_calls
    );
    println!(
        "flapping: {} calls ({} failed, {} retries) for {questions} questions, {} openings, {:.1} s open; servers saw {answered}",
        s.llm_calls, s.llm_failures, s.llm_retries, s.llm_circuit_openings, s.llm_circuit_open_s
    );
}

/// Regression: a run that stops while the circuit is open (its stall
/// timeout, or Ctrl-C) used to wait for the provider forever; now the
/// questions waiting for it go to `deferred`, and the next run answers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_stopped_while_the_circuit_is_open_keeps_its_questions_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let closed = common::free_port();
    let mut o = common::sim_run(dir.path(), SimConfig::default(), Some(3));
    o.provider = ProviderSpec::new(
        ProviderKind::Openai,
        Some(format!("http://127.0.0.1:{closed}/v1")),
        None,
        None,
        Duration::from_secs(5),
    );
    // Open at the first failure, for the whole stall timeout.
    o.agent.breaker.failure_threshold = 1;
    o.agent.breaker.open_base = Duration::from_secs(60);
    o.agent.breaker.open_cap = Duration::from_secs(60);
    o.stall_timeout = Duration::from_secs(20);
    let error = pipeline::run(o).await.unwrap_err();
    let message = format!("{error:#}");
    assert!(message.contains("circuit not closed"), "{message}");
    let store = Store::open(&dir.path().join("store")).unwrap();
    assert_eq!(
        store.dead_letter_count(),
        0,
        "an outage dead-letters nothing"
    );
    drop(store);

    let s = pipeline::run(common::sim_run(dir.path(), SimConfig::default(), Some(3)))
        .await
        .unwrap();
    assert_eq!((s.stored, s.dead_letters, s.sent), (3, 0, 0), "{s:?}");
}
