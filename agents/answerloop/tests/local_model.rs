//! The local model end to end: `serve` answers a real HTTP request from the
//! `openai` provider, refuses with 503 when its queue is full, and `run`
//! answers questions with it. Needs the cached model (`.ci/run` fetches it
//! and sets ANSWERLOOP_REQUIRE_MODEL, so there these tests never skip).

mod common;

use std::sync::Arc;
use std::time::Duration;

use answerloop::commands::serve::router;
use answerloop::llm_agent::{chat_request, LlmAgentConfig};
use answerloop::pipeline;
use answerloop_llm::local::{Local, LocalConfig};
use answerloop_llm::openai::{OpenAi, OpenAiConfig};
use answerloop_llm::prompt::RegeneratePrompt;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm::{ChatRequest, ErrorClass, Message, Provider};
use answerloop_models::smollm::LoadOptions;
use answerloop_models::{ModelCache, SmolLm, SMOLLM2};
use answerloop_schema::Question;
use common::installed_or_skip;

fn model() -> Option<Arc<SmolLm>> {
    let cache = installed_or_skip(&SMOLLM2)?;
    Some(Arc::new(
        SmolLm::load(&cache.main_file(&SMOLLM2), LoadOptions::default()).unwrap(),
    ))
}

async fn serve(local: Local) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let app = router(Arc::new(local));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

fn client(url: String) -> OpenAi {
    OpenAi::new(OpenAiConfig {
        base_url: url,
        model: "SmolLM2-135M-Instruct".into(),
        api_key: None,
        // A guard against a hang, not a speed bound: a loaded machine
        // generates slowly.
        timeout: Duration::from_secs(600),
        name: "openai".into(),
        in_flight: Default::default(),
    })
    .unwrap()
}

fn ask(question: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        messages: vec![Message::user(question)],
        max_tokens,
        temperature: 0.0,
        seed: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_answers_the_openai_provider_over_http() {
    let Some(model) = model() else { return };
    let (url, task) = serve(Local::with_model(model, LocalConfig::default())).await;
    let completion = client(url)
        .complete(&ask("What is the capital of France?", 12))
        .await
        .unwrap();
    assert!(completion.text.contains("Paris"), "{:?}", completion.text);
    assert!(completion.completion_tokens.unwrap() <= 12);
    assert_eq!(completion.model, "SmolLM2-135M-Instruct");
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_and_the_client_sees_overload() {
    let Some(model) = model() else { return };
    let config = LocalConfig {
        workers: 1,
        queue: 1,
        ..LocalConfig::default()
    };
    let (url, task) = serve(Local::with_model(model, config)).await;
    // Four requests at once to one worker with room for one waiting: at
    // most two are taken, the others are refused at once (they arrive
    // within milliseconds; any generation outlasts that).
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                client(url)
                    .complete(&ask("Tell me a long story about a dragon.", 48))
                    .await
            })
        })
        .collect();
    let mut answered = 0;
    let mut refused = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => answered += 1,
            Err(err) => {
                assert_eq!(
                    (err.class, err.status),
                    (ErrorClass::Overload, Some(503)),
                    "{err}"
                );
                assert!(err.retry_after.is_some(), "503 carries Retry-After");
                refused += 1;
            }
        }
    }
    assert!(
        answered >= 1 && refused >= 1,
        "answered {answered}, refused {refused}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_answers_questions_with_the_local_model() {
    if model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut options = common::sim_run(dir.path(), Default::default(), Some(3));
    options.provider = ProviderSpec::new(
        ProviderKind::Local,
        None,
        None,
        None,
        Duration::from_secs(300),
    )
    .with_local(ModelCache::locate(None), LocalConfig::default());
    options.agent.max_tokens = 24;
    let summary = pipeline::run(options).await.unwrap();
    assert_eq!(summary.stored + summary.dead_letters, 3, "{summary:?}");
    assert_eq!(summary.dead_letters, 0, "{summary:?}");
    assert_eq!(summary.model, "SmolLM2-135M-Instruct");
    assert!(summary.llm_calls >= 3);
}

/// Regression: every attempt sampled from one seed, so a plain resample at
/// a temperature above 0 repeated the earlier answer word for word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_attempt_resamples_and_the_same_attempt_reproduces() {
    let Some(model) = model() else { return };
    let local = Local::with_model(model, LocalConfig::default());
    let config = LlmAgentConfig {
        regenerate_prompt: RegeneratePrompt::Plain,
        temperature: 0.9,
        max_tokens: 24,
        sample_seed: 11,
        ..LlmAgentConfig::default()
    };
    let question = Question::new(
        "What should I cook for dinner tonight?",
        "",
        "Something quick, like pasta.",
        1,
    );
    let first = chat_request(&config, &question);
    let second = chat_request(&config, &question.clone().at_attempt(2));
    assert_eq!(first.messages, second.messages, "plain asks the same again");
    let answer = |request: ChatRequest| {
        let local = &local;
        async move { local.complete(&request).await.unwrap().text }
    };
    let (one, two) = (answer(first.clone()).await, answer(second).await);
    assert_ne!(one, two, "attempt 2 repeated attempt 1");
    assert_eq!(
        one,
        answer(first).await,
        "the same seed, question and attempt"
    );
    let other_run = LlmAgentConfig {
        sample_seed: 12,
        ..config.clone()
    };
    assert_ne!(
        one,
        answer(chat_request(&other_run, &question)).await,
        "another --sample-seed draws anew"
    );
}

/// Regression: `models fetch --home DIR` left DIR holding `models/` and no
/// home marker, and `run --home DIR` refused DIR as "not an answerloop home".
/// The fetch is real (pip, checksums); the run answers from DIR/models.
#[test]
fn models_fetch_into_a_home_then_run_in_it() {
    if model().is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let in_home = |command: &mut std::process::Command| {
        command
            .env_remove("ANSWERLOOP_MODELS_DIR")
            .env_remove("ANSWERLOOP_HOME");
    };
    let mut fetch = common::binary();
    fetch.args(["models", "fetch", "--home"]).arg(&home);
    in_home(&mut fetch);
    common::succeed(&mut fetch);
    assert!(
        ModelCache::new(home.join("models")).is_installed(&SMOLLM2),
        "the fetch put the model in the home"
    );
    let mut run = common::binary();
    run.args([
        "run",
        "--json",
        "--limit",
        "1",
        "--max-tokens",
        "8",
        "--home",
    ])
    .arg(&home);
    in_home(&mut run);
    let summary = common::json_from(&mut run);
    assert_eq!(summary["stored"], 1, "{summary}");
    assert_eq!(summary["model"], "SmolLM2-135M-Instruct", "{summary}");
}
