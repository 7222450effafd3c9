//! The store agent against the embedded broker: what passes the quality
//! gate is stored once, broken records become dead letters under their
//! question, and the offset is committed only behind durable writes.

use std::sync::Arc;
use std::time::Duration;

use answerloop::store::{self, FinalKind, ANSWERS_CONSUMER};
use answerloop_broker::embedded::EmbeddedBroker;
use answerloop_broker::{Broker, Record};
use answerloop_schema::{question_id, topics, Answer, FailureClass, Question};
use answerloop_scoring::Params;
use answerloop_storage::Store;
use tokio::sync::{mpsc, watch};

fn answer(title: &str, text: &str) -> Vec<u8> {
    let reference = "Ice floats because frozen water is less dense than liquid water.";
    serde_json::to_vec(&Answer::new(
        Question::new(title, "", reference, 2),
        text,
        "m",
        1,
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gated_answers_are_stored_once_and_broken_ones_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(EmbeddedBroker::open(&dir.path().join("broker")).unwrap());
    broker.create_topics(&topics::ALL).await.unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    let good = answer("q1", "Frozen water is less dense, so ice floats on top.");
    let mut broken = answer("q2", "whatever");
    broken.truncate(broken.len() / 2);
    let records = vec![
        Record::keyed("q1", good.clone()),
        Record::keyed("q1", good), // delivered twice, as after a crash
        Record::keyed("q3", answer("q3", "Mortgage rates.")), // regenerated, not stored
        Record::keyed("q2", broken),
    ];
    // As the LLM agent writes them: the store agent's chain scores them.
    broker
        .produce(topics::ANSWERS, records, None)
        .await
        .unwrap();

    let (stop, stopped) = watch::channel(false);
    let (events_tx, mut events) = mpsc::channel(16);
    let agent = tokio::spawn(store::run(
        broker.clone(),
        store.clone(),
        store::StoreAgentConfig::new(Params::default()),
        Some(events_tx),
        stopped,
    ));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(
            tokio::time::timeout(Duration::from_secs(30), events.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    stop.send(true).unwrap();
    agent.await.unwrap().unwrap();

    assert_eq!(store.answer_count(), 1);
    assert_eq!(
        seen.iter()
            .filter(|e| e.kind == FinalKind::Stored && e.new)
            .count(),
        1
    );
    assert_eq!(
        seen.iter()
            .filter(|e| e.kind == FinalKind::Stored && !e.new)
            .count(),
        1
    );
    let letter = store
        .dead_letter(&question_id("q2"))
        .unwrap()
        .expect("the broken record is dead-lettered under its question");
    assert_eq!(letter.class, FailureClass::Invalid);
    assert!(!letter.reason.is_empty());
    assert_eq!(
        broker.committed(topics::ANSWERS, ANSWERS_CONSUMER).unwrap(),
        Some(4)
    );
}
