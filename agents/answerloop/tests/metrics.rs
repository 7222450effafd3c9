//! Prometheus metrics and JSON logs: a pipeline run under faults in this
//! process, then its `/metrics` page read over HTTP; an agent process with
//! `--log-format json`.
//!
//! One test a binary for the metrics: the registry is the process's.

mod common;

use answerloop_llm_sim::{FaultKind, Quality};

use common::metric_samples as samples;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_is_counted_in_every_metric_family() {
    let dir = tempfile::tempdir().unwrap();
    let addr = answerloop_telemetry::metrics::serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let mut sim = common::sim(Quality::Uniform(0.1, 0.9));
    sim.fail_rate = 0.3;
    sim.fail_kinds = vec![FaultKind::Unavailable, FaultKind::Malformed];
    let mut options = common::sim_run(dir.path(), sim, Some(40));
    options.agent.retry.base = std::time::Duration::from_millis(5);
    options.agent.retry.cap = std::time::Duration::from_millis(20);
    let summary = answerloop::pipeline::run(options).await.unwrap();
    assert_eq!(summary.stored + summary.dead_letters, 40);

    let page = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = samples(&page);
    let get = |name: &str| {
        s.get(name)
            .copied()
            .unwrap_or_else(|| panic!("no {name} in\n{page}"))
    };

    assert_eq!(
        get(r#"answerloop_records_produced_total{topic="questions"}"#),
        40.0
    );
    assert_eq!(
        get(r#"answerloop_records_consumed_total{topic="questions",partition="0"}"#),
        40.0
    );
    let ok = get(r#"answerloop_llm_calls_total{outcome="ok",class=""}"#);
    assert_eq!(ok as u64, summary.llm_calls - summary.llm_failures);
    let failed: f64 = ["overload", "malformed"]
        .iter()
        .map(|c| {
            s.get(&format!(
                r#"answerloop_llm_calls_total{{outcome="error",class="{c}"}}"#
            ))
            .copied()
            .unwrap_or(0.0)
        })
        .sum();
    assert_eq!(failed as u64, summary.llm_failures, "{page}");
    assert!(failed > 0.0);
    assert_eq!(
        get("answerloop_llm_retries_total") as u64,
        summary.llm_retries
    );
    assert_eq!(
        get("answerloop_llm_retry_delay_seconds_count") as u64,
        summary.llm_retries
    );
    // Final scores by attempt add up to the stored answers.
    let finals: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("answerloop_final_score_count{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(finals as usize, summary.stored);
    assert_eq!(
        get(r#"answerloop_store_entries{kind="stored"}"#) as usize,
        summary.stored
    );
    // fluvio-smartengine's own counters, for each SmartModule of the pipeline.
    for module in ["answer-score", "regenerate", "quality-gate"] {
        let invocations = get(&format!(
            r#"answerloop_smartmodule_invocations_total{{smartmodule="{module}"}}"#
        ));
        assert!(invocations > 0.0, "{module}");
        get(&format!(
            r#"answerloop_smartmodule_fuel_used_total{{smartmodule="{module}"}}"#
        ));
    }
    // The store consumer caught up with every answer it read.
    assert_eq!(
        get(r#"answerloop_consumer_lag{topic="answers",partition="0",consumer="store-agent"}"#),
        0.0
    );
}

#[test]
fn json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::succeed(
        common::binary()
            .args([
                "--log-format",
                "json",
                "agent",
                "--metrics",
                "127.0.0.1:0",
                "traffic",
            ])
            .args(["--exit-when-done", "--limit", "3"])
            .env("ANSWERLOOP_HOME", dir.path().join("home"))
            .env_remove("RUST_LOG"),
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("traffic agent: sent 3 questions")),
        "{stderr}"
    );
    assert!(lines.iter().all(|l| l["timestamp"].is_string()), "{stderr}");
}
