//! The embedded broker's semantics: dense offsets, committed consumer
//! offsets that survive a restart, and SmartModule chains on produce and
//! consume with the real `.wasm` files.

use std::time::Duration;

use answerloop_broker::embedded::EmbeddedBroker;
use answerloop_broker::{Broker, ChainSpec, ConsumerConfig, Record};
use answerloop_schema::{Answer, Question, Verdict};
use answerloop_scoring::Params;

const NO_WAIT: Duration = Duration::ZERO;

fn open(dir: &tempfile::TempDir) -> EmbeddedBroker {
    EmbeddedBroker::open(&dir.path().join("broker")).unwrap()
}

fn values(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8(r.value.clone()).unwrap())
        .collect()
}

async fn produce_n(broker: &EmbeddedBroker, topic: &str, from: usize, n: usize) {
    let records = (from..from + n)
        .map(|i| Record::keyed(format!("k{i}"), format!("v{i}")))
        .collect();
    broker.produce(topic, records, None).await.unwrap();
}

#[tokio::test]
async fn offsets_are_dense_and_a_consumer_reads_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir);
    broker.create_topics(&["t"]).await.unwrap();
    produce_n(&broker, "t", 0, 3).await;
    produce_n(&broker, "t", 3, 2).await;
    assert_eq!(broker.topic_len("t").unwrap(), 5);
    let mut c = broker
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    let batch = c.next_batch(3, NO_WAIT).await.unwrap();
    assert_eq!(values(&batch.records), ["v0", "v1", "v2"]);
    assert_eq!(batch.next, 3);
    assert_eq!(batch.records[0].key.as_deref(), Some(&b"k0"[..]));
    let batch = c.next_batch(10, NO_WAIT).await.unwrap();
    assert_eq!(values(&batch.records), ["v3", "v4"]);
    assert_eq!(batch.next, 5);
    assert!(c.next_batch(10, NO_WAIT).await.unwrap().records.is_empty());
}

#[tokio::test]
async fn a_restarted_consumer_resumes_at_its_committed_offset() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(&dir);
        broker.create_topics(&["t"]).await.unwrap();
        produce_n(&broker, "t", 0, 6).await;
        let mut c = broker
            .consumer("t", ConsumerConfig::committed("c", None))
            .await
            .unwrap();
        let first = c.next_batch(2, NO_WAIT).await.unwrap();
        c.commit(first.next).await.unwrap();
        // Read further without committing: a crash here must replay these.
        c.next_batch(2, NO_WAIT).await.unwrap();
    }
    let broker = open(&dir);
    assert_eq!(
        broker.topic_len("t").unwrap(),
        6,
        "records survive the restart"
    );
    assert_eq!(broker.committed("t", "c").unwrap(), Some(2));
    let mut c = broker
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    assert_eq!(
        values(&c.next_batch(10, NO_WAIT).await.unwrap().records),
        ["v2", "v3", "v4", "v5"]
    );
    // Another consumer id has its own offsets and starts at the beginning: no lost backlog.
    let mut other = broker
        .consumer("t", ConsumerConfig::committed("other", None))
        .await
        .unwrap();
    assert_eq!(other.next_batch(1, NO_WAIT).await.unwrap().records.len(), 1);
    assert_eq!(broker.committed("t", "other").unwrap(), None);
}

#[tokio::test]
async fn a_waiting_consumer_wakes_on_produce() {
    let dir = tempfile::tempdir().unwrap();
    let broker = std::sync::Arc::new(open(&dir));
    broker.create_topics(&["t"]).await.unwrap();
    let mut c = broker
        .consumer("t", ConsumerConfig::committed("c", None))
        .await
        .unwrap();
    let producer = {
        let broker = broker.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            produce_n(&broker, "t", 0, 1).await;
        })
    };
    let batch = c.next_batch(10, Duration::from_secs(60)).await.unwrap();
    assert_eq!(values(&batch.records), ["v0"]);
    producer.await.unwrap();
}

#[tokio::test]
async fn producing_to_an_unknown_topic_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir);
    let err = broker
        .produce("nope", vec![Record::keyed("k", "v")], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"nope\""), "{err}");
}

fn answer(text: &str, attempt: u32) -> Vec<u8> {
    let reference = "Ice floats because frozen water is less dense than liquid water.";
    let question = Question::new("Why does ice float?", "", reference, 2).at_attempt(attempt);
    serde_json::to_vec(&Answer::new(question, text, "m", 1)).unwrap()
}

#[tokio::test]
async fn produce_chain_scores_and_consume_chains_split_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir);
    broker.create_topics(&["answers"]).await.unwrap();
    let params = Params::default();
    let score = ChainSpec::single("answer-score", &params);
    let good = answer("Frozen water is less dense, so ice floats on top.", 1);
    let bad = answer("Mortgage rates depend on the central bank.", 1);
    let exhausted = answer("Mortgage rates depend on the central bank.", 3);
    let records = [good, bad, exhausted, b"garbage".to_vec()]
        .into_iter()
        .map(|v| Record::keyed("k", v))
        .collect();
    broker
        .produce("answers", records, Some(&score))
        .await
        .unwrap();

    // Every consumer sees the score written on produce.
    let mut raw = broker
        .consumer("answers", ConsumerConfig::scan())
        .await
        .unwrap();
    let stored = raw.next_batch(10, NO_WAIT).await.unwrap().records;
    let verdicts: Vec<Option<Verdict>> = stored
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.value).unwrap())
        .map(|v| serde_json::from_value(v["verdict"].clone()).ok())
        .collect();
    assert_eq!(
        verdicts,
        [
            Some(Verdict::Accept),
            Some(Verdict::Regenerate),
            Some(Verdict::Exhausted),
            Some(Verdict::Invalid)
        ]
    );

    let regenerate = ChainSpec::single("regenerate", &params);
    let mut regen = broker
        .consumer("answers", ConsumerConfig::committed("r", Some(regenerate)))
        .await
        .unwrap();
    let batch = regen.next_batch(10, NO_WAIT).await.unwrap();
    assert_eq!(batch.records.len(), 1);
    assert_eq!(
        batch.next, 4,
        "the position covers the records the chain dropped"
    );
    let q: Question = serde_json::from_slice(&batch.records[0].value).unwrap();
    assert_eq!(q.attempt, 2);

    let gate = ChainSpec::single("quality-gate", &params);
    let mut store = broker
        .consumer("answers", ConsumerConfig::committed("s", Some(gate)))
        .await
        .unwrap();
    assert_eq!(
        store.next_batch(10, NO_WAIT).await.unwrap().records.len(),
        3
    );
}

#[tokio::test]
async fn an_unknown_smartmodule_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(&dir);
    broker.create_topics(&["t"]).await.unwrap();
    let spec = ChainSpec::single("no-such-module", &Params::default());
    let err = broker
        .consumer("t", ConsumerConfig::committed("c", Some(spec)))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("no-such-module"), "{err}");
}
