//! The API key never reaches the logs (at trace level, the HTTP stack's
//! included), the errors, or the dead letters, even when the server echoes
//! it back. One test in its own binary: it installs the global log
//! subscriber.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use answerloop::pipeline;
use answerloop_llm::secret::Secret;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm_sim::{SimConfig, SimServer};
use answerloop_storage::Store;
use common::sim_run;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const RIGHT: &str = "sk-right-7c1e0f5b";
const WRONG: &str = "sk-wrong-3d9a2b44";

#[test]
fn the_api_key_never_reaches_logs_errors_or_dead_letters() {
    let logs = Captured::default();
    let writer = logs.clone();
    // Everything that touches requests and replies, at trace level; the wasm
    // compiler's trace output is large and never sees a key.
    let filter = "answerloop=trace,reqwest=trace,hyper=trace,hyper_util=trace,axum=trace,tower=trace,h2=trace";
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(move || writer.clone())
        .init();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (wrong_home, right_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    runtime.block_on(async {
        let questions = answerloop::traffic::dataset::sample().questions;
        let config = SimConfig {
            api_key: Some(RIGHT.into()),
            ..SimConfig::default()
        };
        let sim = SimServer::start("127.0.0.1:0".parse().unwrap(), config, &questions)
            .await
            .unwrap();
        for (home, key) in [(&wrong_home, WRONG), (&right_home, RIGHT)] {
            let mut options = sim_run(home.path(), SimConfig::default(), Some(5));
            options.provider = ProviderSpec::new(
                ProviderKind::Openai,
                Some(sim.base_url()),
                None,
                Secret::new(key),
                Duration::from_secs(5),
            );
            let summary = pipeline::run(options).await.unwrap();
            let expected_dead = if key == WRONG { 5 } else { 0 };
            assert_eq!(summary.dead_letters, expected_dead, "{summary:?}");
        }
        sim.shutdown().await;
    });

    let letters: Vec<String> = Store::open(&wrong_home.path().join("store"))
        .unwrap()
        .dead_letters()
        .map(|l| serde_json::to_string(&l.unwrap()).unwrap())
        .collect();
    assert_eq!(letters.len(), 5);
    for letter in &letters {
        assert!(
            letter.contains("[redacted]"),
            "the server echoed the key and it was masked: {letter}"
        );
        assert!(!letter.contains(WRONG), "{letter}");
    }
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("LLM call failed"), "the capture works");
    assert!(
        !logs.contains(WRONG) && !logs.contains(RIGHT),
        "a key reached the logs"
    );
}
