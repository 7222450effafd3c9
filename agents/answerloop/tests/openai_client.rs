//! `answerloop serve` used by a client no one here wrote: the official
//! `openai` Python package, for a plain and a streaming chat completion.
//! Needs the cached model and the client (`.ci/run` installs it, pinned and
//! hash-checked, and sets ANSWERLOOP_REQUIRE_OPENAI_CLIENT so that there
//! this test fails rather than skips).

mod common;

use std::sync::Arc;

use answerloop::commands::serve::router;
use answerloop_llm::local::{Local, LocalConfig};
use answerloop_models::smollm::LoadOptions;
use answerloop_models::{SmolLm, SMOLLM2};
use common::installed_or_skip;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_client.py");

/// Whether `python3` can import `openai`; otherwise the test fails when
/// ANSWERLOOP_REQUIRE_OPENAI_CLIENT is set, or says why it skips.
fn client_or_skip() -> bool {
    let found = std::process::Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !found {
        common::skip_unless_required(
            "ANSWERLOOP_REQUIRE_OPENAI_CLIENT",
            &"python3 cannot import the openai package (.ci/run installs it)",
        );
    }
    found
}

/// Regression: `stream=True` got an empty answer and no error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_client_gets_plain_and_streamed_completions() {
    let Some(cache) = installed_or_skip(&SMOLLM2) else {
        return;
    };
    if !client_or_skip() {
        return;
    }
    let model = SmolLm::load(&cache.main_file(&SMOLLM2), LoadOptions::default()).unwrap();
    let local = Local::with_model(Arc::new(model), LocalConfig::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, router(Arc::new(local)))
            .await
            .unwrap();
    });
    let out = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(&url)
        .env("OPENAI_API_KEY", "not-checked-by-serve")
        .output()
        .await
        .unwrap();
    server.abort();
    assert!(
        out.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{got}");
    let plain = got["plain"].as_str().unwrap();
    assert!(plain.contains("Paris"), "{got}");
    assert_eq!(got["plain_object"], "chat.completion", "{got}");
    assert_eq!(
        got["streamed"], plain,
        "the streamed pieces add up to the plain answer"
    );
    assert!(
        got["pieces"].as_u64().unwrap() >= 2,
        "the text comes piece by piece, not in one block: {got}"
    );
    assert_eq!(got["roles"], serde_json::json!(["assistant"]), "{got}");
    assert_eq!(
        got["objects"],
        serde_json::json!(["chat.completion.chunk"]),
        "{got}"
    );
    assert_eq!(got["finish_reasons"].as_array().unwrap().len(), 1, "{got}");
    assert_eq!(
        got["last_chunk_choices"], 0,
        "usage comes in a chunk of its own: {got}"
    );
    assert_eq!(got["stream_usage"], got["plain_usage"], "{got}");
    assert!(
        got["stream_usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{got}"
    );
}
