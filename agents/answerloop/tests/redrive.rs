//! `answerloop dead-letters retry`: dead letters go back as questions,
//! permanent ones only when asked for, each question final once; with the
//! real binary, llm-sim on loopback, the embedded and the served broker.

mod common;

use common::redrive::{check_store, redrive_on};
use common::{binary, wait_listening};

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
