//! The traffic agent on a user's file, as a process: it reads only as far
//! as `--limit` needs, leaves out questions already on the topic and
//! repeats, and reports malformed rows with their line numbers.

mod common;

use std::path::Path;

fn traffic(home: &Path, data: &Path, limit: Option<&str>) -> String {
    let mut command = common::binary();
    command
        .args(["agent", "traffic", "--exit-when-done", "--data"])
        .arg(data)
        .env("ANSWERLOOP_HOME", home)
        .env_remove("RUST_LOG");
    if let Some(limit) = limit {
        command.args(["--limit", limit]);
    }
    String::from_utf8(common::succeed(&mut command).stderr).unwrap()
}

#[test]
fn a_limit_stops_the_read_and_a_second_pass_sends_only_what_is_new() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("q.csv");
    let mut text = String::from(concat!(
        "1,\"Is tea healthy?\",\"\",\"In moderation.\"\n",
        "2,\"Why is the sea salty?\",\"\",\"Rivers carry salts.\"\n",
        "3,\"What is rent?\",\"\",\"Money for a home.\"\n",
        "1,\"is tea healthy? \",\"\",\"A repeat.\"\n",
        "4,\"Why do cats purr?\",\"\",\"Contentment, mostly.\"\n",
        "5,\"too few fields\"\n",
        "6,\"How far is the moon?\",\"\",\"About 384,000 km.\"\n",
    ));
    // A last row no reader may take, that a limit must never reach.
    text.push_str(&format!("7,\"{}\",\"\",\"x\"\n", "y".repeat(200 * 1024)));
    std::fs::write(&data, text).unwrap();
    let home = dir.path().join("home");

    let log = traffic(&home, &data, Some("3"));
    assert!(
        log.contains("sent 3 questions (0 already on the topic, which held 0)"),
        "{log}"
    );
    assert!(
        log.contains("3 distinct questions, 3 rows, 0 malformed, 0 repeats"),
        "{log}"
    );

    let log = traffic(&home, &data, None);
    assert!(
        log.contains("sent 2 questions (3 already on the topic, which held 3)"),
        "{log}"
    );
    assert!(
        log.contains("5 distinct questions, 8 rows, 2 malformed, 1 repeats"),
        "{log}"
    );
    assert!(log.contains("skipped line 6: expected 4 fields"), "{log}");
    assert!(log.contains("skipped line 8: field 2 is"), "{log}");
}
