//! A corpus of hostile inputs, each with the clear error (or the recorded
//! reason) it must produce: question files, configuration files, records
//! injected on each topic, and LLM HTTP replies. None may stop the pipeline
//! or lose what was already accepted.

use std::path::Path;
use std::time::Duration;

use answerloop::traffic::dataset;
use answerloop_broker::embedded::EmbeddedBroker;
use answerloop_broker::{Broker, Record};
use answerloop_llm::openai::{OpenAi, OpenAiConfig};
use answerloop_llm::prompt::{self, RegeneratePrompt};
use answerloop_llm::{ErrorClass, Provider};
use answerloop_schema::topics;
use answerloop_storage::Store;

mod common;

const GOOD_ROW: &str =
    "\"3\",\"Why is the sky blue?\",\"\",\"Air scatters blue light the most.\"\n";
const OTHER_ROW: &str =
    "\"5\",\"How do magnets work?\",\"\",\"Aligned electron spins make a magnetic field.\"\n";

/// `run` on `data` with the simulator; the parsed summary or the error text.
fn run_on(dir: &Path, data: &[u8]) -> Result<serde_json::Value, String> {
    let path = dir.join("questions.csv");
    std::fs::write(&path, data).unwrap();
    run_with(dir, &["--data", path.to_str().unwrap()])
}

fn run_with(dir: &Path, extra: &[&str]) -> Result<serde_json::Value, String> {
    let home = dir.join("home");
    let out = common::binary()
        .args([
            "run",
            "--llm",
            "sim",
            "--json",
            "--home",
            home.to_str().unwrap(),
        ])
        .args(extra)
        .output()
        .unwrap();
    if out.status.success() {
        let stdout = String::from_utf8(out.stdout).unwrap();
        Ok(serde_json::from_str(stdout.lines().last().unwrap()).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

// ---------------------------------------------------------------- CSV files

/// Files with no usable question: a clear error naming the file and why.
#[test]
fn question_files_with_nothing_to_answer_are_refused_clearly() {
    let cases: &[(&str, Vec<u8>, &str)] = &[
        ("empty", Vec::new(), "no question"),
        ("blank lines", b"\n\n   \n".to_vec(), "expected 4 fields"),
        (
            "binary",
            vec![0x7f, b'E', b'L', b'F', 0, 0, 1],
            "binary file",
        ),
        (
            "json lines",
            b"{\"a\":1}\n{\"b\":2}\n".to_vec(),
            "none of its 2 rows",
        ),
        (
            "three fields",
            b"1,a,b\n2,c,d\n".to_vec(),
            "expected 4 fields",
        ),
        (
            "bad classes",
            b"x,a,b,c\n99,d,e,f\n".to_vec(),
            "not a number from 1 to 10",
        ),
        (
            "no answers",
            b"1,\"a question\",\"\",\"\"\n".to_vec(),
            "no question",
        ),
    ];
    for (name, bytes, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let err = run_on(dir.path(), bytes).expect_err(name);
        assert!(
            err.contains("questions.csv"),
            "{name}: names the file: {err}"
        );
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!dir.path().join("home").exists(), "{name}: nothing written");
    }
}

#[test]
fn a_missing_file_and_a_directory_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let err = run_with(dir.path(), &["--data", "/no/such/questions.csv"]).unwrap_err();
    assert!(err.contains("cannot read /no/such/questions.csv"), "{err}");
    let err = run_with(dir.path(), &["--data", dir.path().to_str().unwrap()]).unwrap_err();
    assert!(err.contains("cannot read"), "{err}");
}

/// A bad row among good ones is reported with its line; the good rows are
/// answered.
#[test]
fn bad_rows_are_reported_and_the_good_ones_answered() {
    let huge = format!("\"1\",\"A huge one?\",\"\",\"{}\"\n", "a".repeat(200_000));
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "invalid UTF-8",
            b"\"2\",\"Caf\xe9?\",\"\",\"A place for coffee.\"\n".to_vec(),
            "not valid UTF-8",
        ),
        (
            "class 0",
            b"\"0\",\"Zero?\",\"\",\"No.\"\n".to_vec(),
            "from 1 to 10",
        ),
        ("five fields", b"1,a,b,c,d\n".to_vec(), "found 5"),
        ("huge field", huge.into_bytes(), "longer than"),
        (
            "unterminated quote",
            b"\"4\",\"Open quote?,\"\",\"never closed\n".to_vec(),
            "expected 4 fields",
        ),
    ];
    for (name, bad, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let mut data = GOOD_ROW.as_bytes().to_vec();
        data.extend_from_slice(&bad);
        // The unterminated quote swallows what follows it, so put the
        // second good row first.
        let mut data_all = OTHER_ROW.as_bytes().to_vec();
        data_all.extend_from_slice(&data);
        let summary = run_on(dir.path(), &data_all).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(summary["questions"], 2, "{name}: {summary}");
        assert_eq!(summary["stored"], 2, "{name}: both good rows answered");
        assert_eq!(summary["rows_malformed"], 1, "{name}: {summary}");
        let example = summary["malformed_examples"][0].as_str().unwrap();
        assert!(
            example.contains("line 3"),
            "{name}: names the line: {example}"
        );
        assert!(example.contains(expected), "{name}: {example}");
    }
}

#[test]
fn a_byte_order_mark_and_windows_line_ends_are_read_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = b"\xef\xbb\xbf".to_vec();
    data.extend_from_slice(GOOD_ROW.replace('\n', "\r\n").as_bytes());
    data.extend_from_slice(OTHER_ROW.replace('\n', "\r\n").as_bytes());
    let summary = run_on(dir.path(), &data).unwrap();
    assert_eq!(summary["stored"], 2, "{summary}");
    assert_eq!(summary["rows_malformed"], 0, "{summary}");
}

// ------------------------------------------------------- configuration files

#[test]
fn bad_configuration_files_are_refused_naming_the_problem() {
    let cases: &[(&str, &[u8], &str)] = &[
        ("not TOML", b"[llm\nprovider = ", "answerloop.toml"),
        ("unknown key", b"[llm]\nconcurency = 4\n", "concurency"),
        ("unknown section", b"[llms]\nprovider = \"sim\"\n", "llms"),
        (
            "wrong type",
            b"[llm]\nconcurrency = \"many\"\n",
            "concurrency",
        ),
        (
            "a key in the file",
            b"[llm]\napi_key = \"sk-abc\"\n",
            "api_key",
        ),
        (
            "threshold above 1",
            b"[scoring]\nthreshold = 2.5\n",
            "threshold",
        ),
        ("unknown provider", b"[llm]\nprovider = \"gpt\"\n", "gpt"),
        ("binary", b"\x00\x01\x02", "answerloop.toml"),
    ];
    for (name, text, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("answerloop.toml");
        std::fs::write(&config, text).unwrap();
        let err = run_with(
            dir.path(),
            &["--limit", "1", "--config", config.to_str().unwrap()],
        )
        .expect_err(name);
        assert!(err.contains(expected), "{name}: {err}");
        assert!(!err.contains("sk-abc"), "{name}: a key is never echoed");
    }
}

// ------------------------------------------------- records injected on topics

/// Junk produced straight onto each topic of a home, then a run of five
/// sample questions: the run ends, the five are stored, and each junk record
/// that reaches the store becomes a dead letter with a reason.
#[tokio::test]
async fn junk_on_every_topic_becomes_dead_letters_and_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let run = |limit: &str| {
        common::json_of([
            "run".as_ref(),
            "--llm".as_ref(),
            "sim".as_ref(),
            "--json".as_ref(),
            "--limit".as_ref(),
            std::ffi::OsStr::new(limit),
            "--home".as_ref(),
            home.as_os_str(),
        ])
    };
    let first = run("1");
    assert_eq!(first["stored"], 1);

    let junk: Vec<(&str, Vec<u8>)> = vec![
        (topics::QUESTIONS, b"not json at all".to_vec()),
        (topics::QUESTIONS, Vec::new()),
        (
            topics::QUESTIONS,
            br#"{"title": 42, "reference": []}"#.to_vec(),
        ),
        (
            topics::QUESTIONS,
            br#"{"content": "no title, no reference"}"#.to_vec(),
        ),
        (topics::QUESTIONS, vec![b'x'; 2 << 20]),
        (topics::QUESTIONS, b"\xff\xfe\x00garbage".to_vec()),
        (topics::ANSWERS, b"{\"answer\": \"no question\"}".to_vec()),
        (topics::ANSWERS, b"][".to_vec()),
        (topics::DEFERRED, b"{\"not_before_ms\": \"soon\"}".to_vec()),
        (topics::DEAD_LETTERS, b"not a dead letter".to_vec()),
    ];
    {
        let broker = EmbeddedBroker::open(&home.join("broker")).unwrap();
        for (topic, value) in &junk {
            broker
                .produce(
                    topic,
                    vec![Record {
                        key: None,
                        value: value.clone(),
                    }],
                    None,
                )
                .await
                .unwrap();
        }
    }
    let summary = run("5");
    assert_eq!(summary["questions"], 5);
    assert_eq!(summary["stored"], 5, "{summary}");

    let store = Store::open(&home.join("store")).unwrap();
    let letters: Vec<_> = store.dead_letters().map(Result::unwrap).collect();
    assert_eq!(
        letters.len(),
        junk.len(),
        "one dead letter a junk record: {letters:#?}"
    );
    for letter in &letters {
        assert!(!letter.reason.is_empty(), "{letter:?}");
        assert!(
            letter.raw.is_some() || letter.question.is_some(),
            "{letter:?}"
        );
    }
    let huge = letters
        .iter()
        .find(|l| l.raw.as_deref().is_some_and(|r| r.starts_with("xxx")))
        .expect("the 2 MB record");
    assert!(
        huge.raw.as_ref().unwrap().len() <= 512,
        "a dead letter keeps a bounded sample"
    );
}

// ---------------------------------------------------------- LLM HTTP replies

/// A server that answers every request with `status`, `content_type` and `body`.
async fn canned(status: u16, content_type: &'static str, body: Vec<u8>) -> String {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let app = axum::Router::new().fallback(move || {
        let body = body.clone();
        async move {
            (
                StatusCode::from_u16(status).unwrap(),
                [(header::CONTENT_TYPE, content_type)],
                body,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/v1")
}

/// A canned reply and the error class and words it must give.
struct Reply {
    name: &'static str,
    status: u16,
    content_type: &'static str,
    body: Vec<u8>,
    expected: (ErrorClass, &'static str),
}

impl Reply {
    fn new(
        name: &'static str,
        status: u16,
        content_type: &'static str,
        body: &[u8],
        expected: (ErrorClass, &'static str),
    ) -> Self {
        Self {
            name,
            status,
            content_type,
            body: body.to_vec(),
            expected,
        }
    }
}

#[tokio::test]
async fn broken_llm_replies_are_errors_of_the_right_class_naming_the_cause() {
    let big = vec![b'{'; 8 << 20];
    let json = "application/json";
    let not_completion = (ErrorClass::Malformed, "not a chat completion");
    let cases = vec![
        Reply::new(
            "HTML page",
            200,
            "text/html",
            b"<html>oops</html>",
            not_completion,
        ),
        Reply::new(
            "no choices",
            200,
            json,
            br#"{"choices": []}"#,
            (ErrorClass::Malformed, "no message content"),
        ),
        Reply::new("empty body", 200, json, b"", not_completion),
        Reply::new(
            "truncated JSON",
            200,
            json,
            br#"{"choices": [{"message": {"content": "hal"#,
            not_completion,
        ),
        Reply::new("8 MB of junk", 200, json, &big, not_completion),
        Reply::new(
            "404",
            404,
            "text/plain",
            b"no such model",
            (ErrorClass::Permanent, "no such model"),
        ),
        Reply::new(
            "400",
            400,
            json,
            br#"{"error": {"message": "bad request"}}"#,
            (ErrorClass::Permanent, "bad request"),
        ),
    ];
    let q = &dataset::sample().questions[0];
    let request = prompt::request(q, RegeneratePrompt::Feedback, 32, 0.0);
    for Reply {
        name,
        status,
        content_type,
        body,
        expected: (class, expected),
    } in cases
    {
        let base_url = canned(status, content_type, body).await;
        let client = OpenAi::new(OpenAiConfig {
            base_url,
            model: "m".into(),
            api_key: None,
            timeout: Duration::from_secs(10),
            name: "test".into(),
            in_flight: Default::default(),
        })
        .unwrap();
        let err = client.complete(&request).await.expect_err(name);
        assert_eq!(err.class, class, "{name}: {err}");
        let text = err.to_string();
        assert!(text.to_lowercase().contains(expected), "{name}: {text}");
        assert!(
            text.len() < 2048,
            "{name}: the error quotes a bounded part of the body"
        );
    }
}
