#![cfg(feature = "fluvio")]
//! The Fluvio transport against a real cluster. These tests run when one is
//! reachable (`FLUVIO_SC=HOST:PORT`, or an active Fluvio profile) and
//! otherwise skip, saying why. Set `ANSWERLOOP_REQUIRE_FLUVIO=1` to make a
//! missing cluster a failure instead.
//!
//! Each test works under its own topic prefix, so runs never share topics
//! or consumer offsets; the topics are deleted afterwards.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use answerloop::{chains, store};
use answerloop_broker::embedded::EmbeddedBroker;
use answerloop_broker::fluvio::smartmodules;
use answerloop_broker::fluvio::{FluvioBroker, FluvioOptions};
use answerloop_broker::{self, Broker, ChainSpec, ConsumerConfig, Member, Record};
use answerloop_schema::{topics, Answer, Question, Scored};
use answerloop_scoring::Params;
use answerloop_storage::Store;
use fluvio::consumer::ConsumerConfigExt;
use fluvio::metadata::smartmodule::SmartModuleSpec;
use fluvio::metadata::topic::TopicSpec;
use fluvio::Offset;
use futures::StreamExt;

mod common;

const BIN: &str = env!("CARGO_BIN_EXE_answerloop");
/// Guards against a hang, not a speed bound.
const HANG_GUARD: Duration = Duration::from_secs(300);

fn profile_is_active() -> bool {
    if std::env::var_os("FLV_PROFILE_PATH").is_some() {
        return true;
    }
    std::env::var_os("HOME").is_some_and(|home| Path::new(&home).join(".fluvio/config").is_file())
}

/// A connection under a fresh topic prefix, or `None` (after saying why)
/// when no cluster is reachable.
async fn cluster(test: &str) -> Option<(FluvioBroker, FluvioOptions)> {
    let required = std::env::var("ANSWERLOOP_REQUIRE_FLUVIO").is_ok_and(|v| v == "1");
    let skip = |reason: String| {
        assert!(
            !required,
            "{test}: ANSWERLOOP_REQUIRE_FLUVIO=1 but {reason}"
        );
        // Straight to stderr: the harness hides `eprintln!` of passing tests.
        let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
        None
    };
    let sc = std::env::var("FLUVIO_SC").ok().filter(|s| !s.is_empty());
    if sc.is_none() && !profile_is_active() {
        return skip(
            "no Fluvio cluster configured (set FLUVIO_SC=HOST:PORT or activate a Fluvio profile)"
                .into(),
        );
    }
    let options = FluvioOptions {
        sc,
        topic_prefix: format!("t{}-{}-", std::process::id(), test.replace('_', "-")),
        ..FluvioOptions::default()
    };
    match FluvioBroker::connect(options.clone()).await {
        Ok(broker) => Some((broker, options)),
        Err(e) => skip(format!(
            "the configured Fluvio cluster is not reachable: {e}"
        )),
    }
}

async fn delete_topics(broker: &FluvioBroker) {
    let admin = broker.client().admin().await;
    let mut names: Vec<String> = topics::ALL.iter().map(|t| broker.topic_name(t)).collect();
    names.push(broker.topic_name("answerloop-probe"));
    for name in names {
        let _ = admin.delete::<TopicSpec>(name).await;
    }
}

/// The binary with the cluster and the test's topic prefix.
fn answerloop(options: &FluvioOptions, home: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env("ANSWERLOOP_HOME", home)
        .env("ANSWERLOOP_BROKER", "fluvio")
        .env("ANSWERLOOP_TOPIC_PREFIX", &options.topic_prefix)
        .env("RUST_LOG", "warn,answerloop=info");
    if let Some(sc) = &options.sc {
        command.env("FLUVIO_SC", sc);
    }
    command
}

/// Run the binary to the end; require success.
fn run_ok(options: &FluvioOptions, home: &Path, args: &[&str]) {
    let output = answerloop(options, home).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "answerloop {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Start the binary in the background, its stderr going to a file in
/// `logs` named after the agent (a pipe nobody reads could fill and block
/// it; the home must stay the agent's own).
fn spawn(options: &FluvioOptions, home: &Path, logs: &Path, args: &[&str]) -> Child {
    let log = logs.join(log_name(args));
    answerloop(options, home)
        .args(args)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// The log file of the agent started with `args`.
fn log_name(args: &[&str]) -> String {
    format!("{}.log", args.join("-").replace('/', "of"))
}

/// What a spawned agent wrote to stderr.
fn log_of(logs: &Path, args: &[&str]) -> String {
    std::fs::read_to_string(logs.join(log_name(args))).unwrap()
}

fn final_answer() -> Vec<u8> {
    // The last allowed attempt: final whatever its score.
    let question = Question::new(
        "Why is the sky blue?",
        "",
        "Sunlight is scattered by the air, and blue light is scattered the most.",
        1,
    )
    .at_attempt(Params::default().max_attempts);
    let answer = Answer::new(
        question,
        "Air scatters the blue part of sunlight more than the red part.",
        "test",
        5,
    );
    serde_json::to_vec(&answer).unwrap()
}

/// The store agent's chain: `answer-score` then `quality-gate`.
fn gate() -> ChainSpec {
    chains::quality_gate(&Params::default())
}

#[tokio::test]
async fn the_cluster_runs_the_smartmodules_as_the_embedded_broker_does() {
    let Some((broker, _)) = cluster("smartmodules_in_the_cluster").await else {
        return;
    };
    broker.deploy(&topics::ALL).await.expect("deploy");
    // As the LLM agent writes it: unscored.
    let record = Record::keyed("q", final_answer());
    broker
        .produce(topics::ANSWERS, vec![record.clone()], None)
        .await
        .expect("produce");

    // Read back with the stock consumer API, the SPU running answer-score
    // then quality-gate by name.
    let gate = gate();
    let mut config = ConsumerConfigExt::builder();
    config
        .topic(broker.topic_name(topics::ANSWERS))
        .partition(0)
        .offset_start(Offset::beginning())
        .disable_continuous(true)
        .smartmodule(answerloop_broker::fluvio::invocations(&gate));
    let mut stream = broker
        .client()
        .consumer_with_config(config.build().unwrap())
        .await
        .expect("a stock consumer with quality-gate");
    let from_cluster = stream
        .next()
        .await
        .expect("quality-gate passes a final answer")
        .expect("no stream error")
        .value()
        .to_vec();

    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedBroker::open(dir.path()).unwrap();
    embedded.create_topics(&topics::ALL).await.unwrap();
    embedded
        .produce(topics::ANSWERS, vec![record], None)
        .await
        .unwrap();
    let mut consumer = embedded
        .consumer(topics::ANSWERS, ConsumerConfig::scan_through(Some(gate)))
        .await
        .unwrap();
    let batch = consumer.next_batch(10, Duration::ZERO).await.unwrap();
    assert_eq!(batch.records.len(), 1);
    let from_embedded = batch.records[0].value.clone();

    let Scored::Answer(scored) = Scored::decode(&from_cluster) else {
        panic!("the cluster's record is not a scored answer");
    };
    assert!(scored.score.is_some(), "answer-score ran in the SPU");
    assert_eq!(
        String::from_utf8_lossy(&from_cluster),
        String::from_utf8_lossy(&from_embedded),
        "the cluster and the embedded broker produce the same record"
    );
    delete_topics(&broker).await;
}

#[tokio::test]
async fn fifty_questions_end_to_end_on_the_cluster() {
    let Some((broker, options)) = cluster("fifty_end_to_end").await else {
        return;
    };
    let home = tempfile::tempdir().unwrap();
    let summary = common::json_from(
        answerloop(&options, home.path())
            .args(["run", "--llm", "sim", "--limit", "50", "--json"])
            .args([
                "--sim-fail-rate",
                "0.2",
                "--sim-fail-kinds",
                "503,429,timeout",
            ])
            .args(["--sim-hang-secs", "1", "--llm-timeout-secs", "0.5"]),
    );
    assert_eq!(summary["questions"], 50);
    let stored = summary["stored"].as_u64().unwrap();
    let dead = summary["dead_letters"].as_u64().unwrap();
    assert_eq!(stored + dead, 50, "every question final: {summary}");
    let store = Store::open(&home.path().join("store")).unwrap();
    assert_eq!(store.answer_count() as u64, stored);
    delete_topics(&broker).await;
}

/// Every record of `topic` (through `chain`) as JSON.
async fn scan(
    broker: &FluvioBroker,
    topic: &str,
    chain: Option<ChainSpec>,
) -> Vec<serde_json::Value> {
    let mut values = Vec::new();
    answerloop_broker::scan(broker, topic, chain.as_ref(), |record| {
        values.push(serde_json::from_slice(&record.value).unwrap())
    })
    .await
    .unwrap();
    values
}

/// How many first-attempt answers `answers` holds.
async fn first_attempts(broker: &FluvioBroker) -> usize {
    let answers = scan(broker, topics::ANSWERS, None).await;
    answers
        .iter()
        .filter(|a| a["question"]["attempt"] == 1)
        .count()
}

/// Distinct ids final so far: through quality-gate, plus dead letters.
async fn finals(broker: &FluvioBroker) -> HashSet<String> {
    let answers = scan(broker, topics::ANSWERS, Some(gate())).await;
    let letters = scan(broker, topics::DEAD_LETTERS, None).await;
    answers
        .iter()
        .map(|a| &a["question"]["id"])
        .chain(letters.iter().map(|l| &l["id"]))
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

/// For each partition, the position after the last record a scan of
/// `topic` (through `chain`) yields: where a consumer that took all of them
/// has committed.
async fn ends_of(broker: &FluvioBroker, topic: &str, chain: Option<ChainSpec>) -> Vec<u64> {
    answerloop_broker::scan(broker, topic, chain.as_ref(), |_| {})
        .await
        .unwrap()
}

/// Whether the store agents `members` have each committed every final
/// answer and dead letter, on every partition.
async fn store_caught_up(broker: &FluvioBroker, members: &[Member]) -> bool {
    let wanted = [
        (
            store::ANSWERS_CONSUMER,
            topics::ANSWERS,
            ends_of(broker, topics::ANSWERS, Some(gate())).await,
        ),
        (
            store::DEAD_LETTERS_CONSUMER,
            topics::DEAD_LETTERS,
            ends_of(broker, topics::DEAD_LETTERS, None).await,
        ),
    ];
    let offsets = broker.client().consumer_offsets().await.unwrap();
    wanted.iter().all(|(id, topic, ends)| {
        members.iter().all(|member| {
            let id = member.consumer_id(id);
            ends.iter().enumerate().all(|(partition, end)| {
                *end == 0
                    || offsets.iter().any(|o| {
                        o.consumer_id == id
                            && o.topic == broker.topic_name(topic)
                            && o.partition == partition as u32
                            && o.offset + 1 >= *end as i64
                    })
            })
        })
    })
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

fn wait_exit(mut child: Child, what: &str) {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        assert!(started.elapsed() < HANG_GUARD, "{what} did not stop");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_killed_llm_agent_resumes_at_its_committed_offsets() {
    let Some((broker, options)) = cluster("resume_after_kill").await else {
        return;
    };
    const QUESTIONS: usize = 50;
    const KILL_AFTER: usize = 20;
    let (home, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let run = |args: &[&str]| spawn(&options, home.path(), logs.path(), args);
    run_ok(&options, home.path(), &["deploy"]);

    let llm_args = [
        "agent",
        "llm",
        "--llm",
        "sim",
        "--sim-latency-ms",
        "300",
        "--concurrency",
        "4",
    ];
    let store = run(&["agent", "store"]);
    let mut llm = run(&llm_args);
    let traffic = run(&["agent", "traffic", "--limit", "50", "--exit-when-done"]);
    wait_exit(traffic, "the traffic agent");

    let started = Instant::now();
    loop {
        let first = first_attempts(&broker).await;
        if first >= KILL_AFTER {
            break;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "no progress: {first} answers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    llm.kill().unwrap(); // SIGKILL: no chance to commit
    llm.wait().unwrap();
    let llm = run(&llm_args);

    let finals = loop {
        let finals = finals(&broker).await;
        if finals.len() >= QUESTIONS {
            break finals;
        }
        assert!(
            started.elapsed() < HANG_GUARD,
            "only {} of {QUESTIONS} final",
            finals.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(finals.len(), QUESTIONS);
    let first_attempts = first_attempts(&broker).await;
    eprintln!("{first_attempts} first-attempt answers for {QUESTIONS} questions after the kill");
    // Starting over would answer every question a second time; resuming
    // repeats at most the calls that were in flight at the kill.
    assert!(
        first_attempts < QUESTIONS + KILL_AFTER,
        "{first_attempts} first-attempt answers for {QUESTIONS} questions: the agent started over"
    );

    signal(&llm, "TERM");
    wait_exit(llm, "the restarted LLM agent after SIGTERM");
    // The store agent commits only what it has stored: once its offsets
    // reach the last final record, the store holds everything.
    while !store_caught_up(&broker, &[Member::ALONE]).await {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the store agent did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal(&store, "TERM");
    wait_exit(store, "the store agent after SIGTERM");

    let store = Store::open(&home.path().join("store")).unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for answer in store.answers() {
        *seen.entry(answer.unwrap().id).or_default() += 1;
    }
    for letter in store.dead_letters() {
        *seen.entry(letter.unwrap().id).or_default() += 1;
    }
    assert_eq!(
        seen.len(),
        QUESTIONS,
        "every question stored or dead-lettered"
    );
    assert!(seen.values().all(|n| *n == 1), "none twice");
    delete_topics(&broker).await;
}

/// The "llm agent: N calls" line an agent prints when it stops.
fn calls_of(text: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.contains("llm agent:") && l.contains(" calls"))
        .unwrap_or_else(|| panic!("no call count in: {text}"));
    line.split("llm agent: ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Replicas a topic can have here: 2 on a cluster of two SPUs or more.
async fn replication(broker: &FluvioBroker) -> u32 {
    let admin = broker.client().admin().await;
    let spus = admin
        .all::<fluvio::metadata::spu::SpuSpec>()
        .await
        .unwrap()
        .len();
    if spus >= 2 {
        2
    } else {
        1
    }
}

#[tokio::test]
async fn three_llm_agents_and_two_store_agents_share_four_partitions() {
    let Some((broker, options)) = cluster("members").await else {
        return;
    };
    const QUESTIONS: usize = 60;
    let logs = tempfile::tempdir().unwrap();
    let homes: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let replication = replication(&broker).await.to_string();
    run_ok(
        &options,
        homes[0].path(),
        &[
            "deploy",
            "--topic-partitions",
            "4",
            "--topic-replication",
            &replication,
        ],
    );
    assert_eq!(broker.partitions(topics::QUESTIONS).await.unwrap(), 4);
    let llm_args = |member: &'static str| {
        [
            "agent",
            "llm",
            "--llm",
            "sim",
            "--sim-latency-ms",
            "20",
            "--member",
            member,
        ]
    };
    let llm_agents: Vec<(Child, [&str; 8])> = ["1/3", "2/3", "3/3"]
        .into_iter()
        .map(|m| {
            (
                spawn(&options, homes[0].path(), logs.path(), &llm_args(m)),
                llm_args(m),
            )
        })
        .collect();
    // Each store agent in a home of its own, with a store of its own.
    let store_agents: Vec<Child> = ["1/2", "2/2"]
        .iter()
        .enumerate()
        .map(|(i, m)| {
            spawn(
                &options,
                homes[i + 1].path(),
                logs.path(),
                &["agent", "store", "--member", m],
            )
        })
        .collect();
    run_ok(
        &options,
        homes[0].path(),
        &["agent", "traffic", "--limit", "60", "--exit-when-done"],
    );

    let started = Instant::now();
    while finals(&broker).await.len() < QUESTIONS {
        assert!(started.elapsed() < HANG_GUARD, "not every question final");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // The store agents commit only what they have stored: once both have
    // committed the last final record, their stores hold everything.
    let members = [Member::new(1, 2).unwrap(), Member::new(2, 2).unwrap()];
    while !store_caught_up(&broker, &members).await {
        assert!(
            started.elapsed() < HANG_GUARD,
            "the store agents did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut per_store = Vec::new();
    for agent in store_agents {
        signal(&agent, "TERM");
        wait_exit(agent, "a store agent after SIGTERM");
    }
    for home in &homes[1..] {
        let store = Store::open(&home.path().join("store")).unwrap();
        let mut n = 0;
        for id in store
            .answers()
            .map(|a| a.unwrap().id)
            .chain(store.dead_letters().map(|l| l.unwrap().id))
        {
            *seen.entry(id).or_default() += 1;
            n += 1;
        }
        per_store.push(n);
    }
    let mut calls = Vec::new();
    for (agent, args) in llm_agents {
        signal(&agent, "TERM");
        wait_exit(agent, "an LLM agent after SIGTERM");
        calls.push(calls_of(&log_of(logs.path(), &args)));
    }
    eprintln!("LLM calls by member {calls:?}, final questions by store {per_store:?}");
    assert_eq!(
        seen.len(),
        QUESTIONS,
        "every question final in one of the stores"
    );
    assert!(seen.values().all(|n| *n == 1), "none final twice");
    assert!(
        calls.iter().all(|c| *c > 0),
        "every LLM agent answered its share: calls {calls:?}"
    );
    assert!(
        per_store.iter().all(|n| *n > 0),
        "every store agent stored its share: {per_store:?}"
    );
    delete_topics(&broker).await;
}

#[tokio::test]
async fn a_consumer_waits_for_a_smartmodule_the_spu_does_not_have_yet() {
    let Some((broker, _)) = cluster("late_smartmodule").await else {
        return;
    };
    broker.deploy(&topics::ALL).await.expect("deploy");
    broker
        .produce(
            topics::ANSWERS,
            vec![Record::keyed("q", final_answer())],
            None,
        )
        .await
        .unwrap();

    // quality-gate under a name the cluster does not know yet.
    let name: &'static str =
        Box::leak(format!("late-gate-{}", std::process::id()).into_boxed_str());
    let late = answerloop_wasm::SmartModule {
        name,
        ..answerloop_wasm::QUALITY_GATE
    };
    let config = ConsumerConfig::committed(
        "late",
        Some(ChainSpec::single(late.name, &Params::default())),
    );
    let mut consumer = broker.consumer(topics::ANSWERS, config).await.unwrap();
    let batch = consumer
        .next_batch(10, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(
        batch.records.is_empty(),
        "nothing can pass a module that is not there"
    );

    smartmodules::register(broker.client(), &[late], false)
        .await
        .unwrap();
    let started = Instant::now();
    let record = loop {
        let batch = consumer
            .next_batch(10, Duration::from_secs(1))
            .await
            .expect("a refused stream is opened again, not an error");
        if let Some(record) = batch.records.into_iter().next() {
            break record;
        }
        assert!(started.elapsed() < HANG_GUARD, "the record never came");
    };
    assert!(matches!(Scored::decode(&record.value), Scored::Answer(_)));

    let admin = broker.client().admin().await;
    let _ = admin.delete::<SmartModuleSpec>(name.to_string()).await;
    delete_topics(&broker).await;
}
