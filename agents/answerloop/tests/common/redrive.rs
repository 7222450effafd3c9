//! The redrive story, shared by the tests of every broker.

use std::path::Path;

use answerloop_storage::Store;
use serde_json::Value;

use super::{binary, json_from, llm_sim_process};

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
pub fn redrive_on(home: &Path, broker: &[String]) {
    let port = super::free_port();
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

pub fn check_store(home: &Path) {
    let store = Store::open(&home.join("store")).unwrap();
    assert_eq!((store.answer_count(), store.dead_letter_count()), (5, 0));
    for answer in store.answers() {
        let answer = answer.unwrap();
        assert_eq!(answer.redrives, 1, "{answer:?}");
        // One call for the first attempt, one a draw for each regenerated
        // one (best of n by default), counted afresh after the redrive.
        let draws = answerloop::llm_agent::LlmAgentConfig::default().regenerate_candidates;
        assert_eq!(
            answer.llm_attempts,
            1 + draws * (answer.attempts.max(1) - 1),
            "a fresh count of calls"
        );
        let record = store.redriven(&answer.id).unwrap().unwrap();
        assert_eq!(record.times, 1);
        assert_eq!(record.letter.status, Some(404));
    }
}
