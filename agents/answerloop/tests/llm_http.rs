//! The providers against llm-sim over real HTTP on loopback, in each API's
//! own dialect: each injected fault reaches the agent as the right error
//! class, and the API key never shows in an error.

use std::time::Duration;

use answerloop_dataset as dataset;
use answerloop_llm::openai::{OpenAi, OpenAiConfig};
use answerloop_llm::prompt::{self, RegeneratePrompt};
use answerloop_llm::secret::Secret;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm::{ErrorClass, Provider};
use answerloop_llm_sim::{FaultKind, Quality, SimConfig, SimServer};
use std::sync::Arc;

async fn sim(config: SimConfig) -> SimServer {
    let questions = dataset::sample().questions;
    SimServer::start("127.0.0.1:0".parse().unwrap(), config, &questions)
        .await
        .unwrap()
}

fn client(server: &SimServer, key: Option<&str>, timeout: Duration) -> OpenAi {
    OpenAi::new(OpenAiConfig {
        base_url: server.base_url(),
        model: "llm-sim".into(),
        api_key: key.and_then(Secret::new),
        timeout,
        name: "test".into(),
        in_flight: Default::default(),
    })
    .unwrap()
}

fn request() -> answerloop_llm::ChatRequest {
    let q = &dataset::sample().questions[0];
    prompt::request(q, RegeneratePrompt::Feedback, 64, 0.0)
}

#[tokio::test]
async fn a_known_question_gets_an_answer_near_its_reference() {
    let server = sim(SimConfig {
        quality: Quality::Fixed(1.0),
        ..SimConfig::default()
    })
    .await;
    let completion = client(&server, None, Duration::from_secs(5))
        .complete(&request())
        .await
        .unwrap();
    let reference = &dataset::sample().questions[0].reference;
    assert_eq!(
        answerloop_scoring::lexical::score(&completion.text, reference),
        1.0
    );
    assert_eq!(completion.model, "llm-sim");
    assert!(completion.completion_tokens.unwrap() > 0);
    server.shutdown().await;
}

#[tokio::test]
async fn each_fault_maps_to_its_error_class() {
    let cases = [
        (FaultKind::Unavailable, ErrorClass::Overload, Some(503)),
        (FaultKind::Internal, ErrorClass::Overload, Some(500)),
        (FaultKind::RateLimit, ErrorClass::Overload, Some(429)),
        (FaultKind::Quota, ErrorClass::Quota, Some(429)),
        (FaultKind::Timeout, ErrorClass::Overload, None),
        (FaultKind::Malformed, ErrorClass::Malformed, Some(200)),
    ];
    for (kind, class, status) in cases {
        let server = sim(SimConfig {
            fail_rate: 1.0,
            fail_kinds: vec![kind],
            hang: Duration::from_secs(10),
            retry_after: Duration::from_millis(1500),
            ..SimConfig::default()
        })
        .await;
        let err = client(&server, None, Duration::from_millis(1500))
            .complete(&request())
            .await
            .unwrap_err();
        assert_eq!((err.class, err.status), (class, status), "{kind:?}: {err}");
        if kind == FaultKind::RateLimit {
            assert_eq!(
                err.retry_after,
                Some(Duration::from_millis(1500)),
                "Retry-After is read"
            );
        }
        assert_eq!(server.state.stats.snapshot().faults[kind.name()], 1);
        server.shutdown().await;
    }
}

#[tokio::test]
async fn an_unreachable_server_is_an_overload_error_naming_the_url() {
    let server = sim(SimConfig::default()).await;
    let url = server.base_url();
    server.shutdown().await;
    let err = OpenAi::new(OpenAiConfig {
        base_url: url.clone(),
        model: "m".into(),
        api_key: None,
        timeout: Duration::from_secs(2),
        name: "test".into(),
        in_flight: Default::default(),
    })
    .unwrap()
    .complete(&request())
    .await
    .unwrap_err();
    assert_eq!(err.class, ErrorClass::Overload);
    assert!(err.message.contains(&url), "{err}");
}

#[tokio::test]
async fn a_rejected_key_is_permanent_and_never_echoed() {
    let server = sim(SimConfig {
        api_key: Some("sk-right-key".into()),
        ..SimConfig::default()
    })
    .await;
    let wrong = "sk-wrong-key-4f1a9";
    let err = client(&server, Some(wrong), Duration::from_secs(5))
        .complete(&request())
        .await
        .unwrap_err();
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(401)));
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(wrong), "the key leaked: {shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
    let ok = client(&server, Some("sk-right-key"), Duration::from_secs(5))
        .complete(&request())
        .await;
    assert!(ok.is_ok());
    server.shutdown().await;
}

/// A client of `kind` for the simulator at `server`.
fn provider(
    kind: ProviderKind,
    server: &SimServer,
    key: Option<&str>,
    timeout: Duration,
) -> Arc<dyn Provider> {
    let base = match kind {
        ProviderKind::Openai => server.base_url(),
        _ => format!("http://{}", server.addr),
    };
    ProviderSpec::new(
        kind,
        Some(base),
        Some("sim-model".into()),
        key.and_then(Secret::new),
        timeout,
    )
    .connect(None)
    .unwrap()
}

#[tokio::test]
async fn ollama_and_gemini_answer_through_their_own_apis() {
    let server = sim(SimConfig {
        quality: Quality::Fixed(1.0),
        ..SimConfig::default()
    })
    .await;
    let reference = &dataset::sample().questions[0].reference;
    for kind in [ProviderKind::Ollama, ProviderKind::Gemini] {
        let completion = provider(kind, &server, None, Duration::from_secs(5))
            .complete(&request())
            .await
            .unwrap();
        assert_eq!(
            answerloop_scoring::lexical::score(&completion.text, reference),
            1.0,
            "{kind:?}"
        );
        assert!(completion.completion_tokens.unwrap() > 0, "{kind:?}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn ollama_and_gemini_faults_map_to_their_classes() {
    use ErrorClass::*;
    let cases = [
        (
            ProviderKind::Ollama,
            FaultKind::Unavailable,
            Overload,
            Some(503),
        ),
        (
            ProviderKind::Ollama,
            FaultKind::Internal,
            Overload,
            Some(500),
        ),
        (
            ProviderKind::Ollama,
            FaultKind::Malformed,
            Malformed,
            Some(200),
        ),
        (ProviderKind::Ollama, FaultKind::Timeout, Overload, None),
        (
            ProviderKind::Gemini,
            FaultKind::Unavailable,
            Overload,
            Some(503),
        ),
        (
            ProviderKind::Gemini,
            FaultKind::Internal,
            Overload,
            Some(500),
        ),
        (
            ProviderKind::Gemini,
            FaultKind::RateLimit,
            Overload,
            Some(429),
        ),
        (ProviderKind::Gemini, FaultKind::Quota, Quota, Some(429)),
        (
            ProviderKind::Gemini,
            FaultKind::Malformed,
            Malformed,
            Some(200),
        ),
        (ProviderKind::Gemini, FaultKind::Timeout, Overload, None),
    ];
    for (kind, fault, class, status) in cases {
        let server = sim(SimConfig {
            fail_rate: 1.0,
            fail_kinds: vec![fault],
            hang: Duration::from_secs(10),
            retry_after: Duration::from_millis(2500),
            ..SimConfig::default()
        })
        .await;
        let err = provider(kind, &server, None, Duration::from_millis(1500))
            .complete(&request())
            .await
            .unwrap_err();
        assert_eq!(
            (err.class, err.status),
            (class, status),
            "{kind:?} {fault:?}: {err}"
        );
        if kind == ProviderKind::Gemini && status == Some(429) {
            assert_eq!(
                err.retry_after,
                Some(Duration::from_millis(2500)),
                "RetryInfo.retryDelay is read"
            );
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn a_rejected_gemini_key_is_permanent_and_never_echoed() {
    let server = sim(SimConfig {
        api_key: Some("gem-right".into()),
        ..SimConfig::default()
    })
    .await;
    let wrong = "gem-wrong-51c0";
    let err = provider(
        ProviderKind::Gemini,
        &server,
        Some(wrong),
        Duration::from_secs(5),
    )
    .complete(&request())
    .await
    .unwrap_err();
    assert_eq!((err.class, err.status), (ErrorClass::Permanent, Some(400)));
    assert!(!format!("{err} {err:?}").contains(wrong));
    let ok = provider(
        ProviderKind::Gemini,
        &server,
        Some("gem-right"),
        Duration::from_secs(5),
    )
    .complete(&request())
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    server.shutdown().await;
}
