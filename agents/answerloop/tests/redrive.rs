//! `answerloop dead-letters retry`: dead letters go back as questions,
//! permanent ones only when asked for, each question final once; with the
//! real binary, llm-sim on loopback, the embedded and the served broker.

mod common;

use std::path::Path;

use answerloop_storage::Store;
use common::{binary, json_from, llm_sim_process, wait_listening};
use serde_json::Value;

fn answerloop(home: &Path, args: &[&str], broker: &[String]) -> Value {
    json_from(
        binary()
            .args(args)
            .arg("--home")
            .arg(home)
            .args(broker)
            .env_remove("OPENAI_API_KEY"),
    )
}

fn run(home: &Path, base_url: &str, broker: &[String]) -> Value {
    answerloop(
        home,
        &[
            "run",
            "--json",
            "--limit",
            "5",
            "--llm",
            "openai",
            "--base-url",
            base_url,
        ],
        broker,
    )
}

/// The whole redrive story on one broker: a wrong URL dead-letters five
/// questions as permanent (404); a plain retry leaves them; `--class
/// permanent` sends them back once; the next run answers them, and the
/// store says they were redriven.
fn redrive_on(home: &Path, broker: &[String]) {
    let port = common::free_port();
    let mut sim = llm_sim_process(port, &[]);
    let wrong = format!("http://127.0.0.1:{port}/no-such-api");
    let s = run(home, &wrong, broker);
    assert_eq!(
        (s["dead_letters"].as_u64(), s["llm_calls"].as_u64()),
        (Some(5), Some(5)),
        "a 404 dead-letters at once: {s}"
    );

    let plain = answerloop(home, &["dead-letters", "retry", "--json"], broker);
    assert_eq!(plain["redriven"], serde_json::json!({}), "{plain}");
    assert_eq!(plain["skipped_permanent"].as_u64(), Some(5), "{plain}");

    let asked = answerloop(
        home,
        &["dead-letters", "retry", "--class", "permanent", "--json"],
        broker,
    );
    assert_eq!(asked["redriven"]["permanent"].as_u64(), Some(5), "{asked}");
    let ids: Vec<String> = serde_json::from_value(asked["ids"].clone()).unwrap();
    let again = answerloop(
        home,
        &["dead-letters", "retry", "--class", "permanent", "--json"],
        broker,
    );
    assert_eq!(
        again["redriven"],
        serde_json::json!({}),
        "idempotent: {again}"
    );

    let right = format!("http://127.0.0.1:{port}/v1");
    let s = run(home, &right, broker);
    assert_eq!(
        (
            s["stored"].as_u64(),
            s["dead_letters"].as_u64(),
            s["sent"].as_u64()
        ),
        (Some(5), Some(0), Some(0)),
        "the redriven questions were answered, none sent twice: {s}"
    );
    let by_id = answerloop(
        home,
        &["dead-letters", "retry", "--id", &ids[0], "--json"],
        broker,
    );
    assert_eq!(by_id["not_dead_lettered"][0], ids[0].as_str(), "{by_id}");
    sim.kill().unwrap();
    sim.wait().unwrap();
}

fn check_store(home: &Path) {
    let store = Store::open(&home.join("store")).unwrap();
    assert_eq!((store.answer_count(), store.dead_letter_count()), (5, 0));
    for answer in store.answers() {
        let answer = answer.unwrap();
        assert_eq!(answer.redrives, 1, "{answer:?}");
        assert_eq!(
            answer.llm_attempts,
            answer.attempts.max(1),
            "a fresh count of calls"
        );
        let record = store.redriven(&answer.id).unwrap().unwrap();
        assert_eq!(record.times, 1);
        assert_eq!(record.letter.status, Some(404));
    }
}

#[test]
fn dead_letters_are_redriven_once_and_permanent_ones_only_when_asked_for() {
    let home = tempfile::tempdir().unwrap();
    redrive_on(home.path(), &[]);
    check_store(home.path());
}

#[test]
fn the_redrive_works_through_the_served_broker() {
    let home = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let mut server = binary()
        .args(["broker", "serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--home")
        .arg(home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    let broker = [
        "--broker".to_string(),
        "remote".to_string(),
        "--broker-addr".to_string(),
        format!("127.0.0.1:{port}"),
    ];
    redrive_on(home.path(), &broker);
    server.kill().unwrap();
    server.wait().unwrap();
    check_store(home.path());
}
