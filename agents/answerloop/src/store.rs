//! The store agent: writes what passes the quality gate to the answer store,
//! and every dead letter beside it, then commits its offsets, in that order:
//! write, flush, commit. Commits trail the flushes by at most
//! [`COMMIT_EVERY`] (one commit for many batches). A crash between flush and
//! commit replays records the store already has, and the store's idempotent
//! writes keep one entry each.

use std::sync::Arc;
use std::time::Duration;

use answerloop_schema::{topics, DeadLetter, FailureClass, InvalidRecord, Scored};
use answerloop_scoring::Params;
use answerloop_storage::{Store, StoredAnswer, Written};
use tokio::sync::{mpsc, watch};

use answerloop_broker::commit::COMMIT_EVERY;
use answerloop_broker::{Broker, Consumer, Member, Record};
use answerloop_schema::clock::now_ms;
use answerloop_telemetry::metrics::metrics;

pub const ANSWERS_CONSUMER: &str = "store-agent";
pub const DEAD_LETTERS_CONSUMER: &str = "store-agent-dead-letters";

const READ_WAIT: Duration = Duration::from_millis(500);

#[derive(Debug, Clone)]
pub struct StoreAgentConfig {
    /// The scoring params, passed to `answer-score` and `quality-gate`.
    pub params: Params,
    /// Records read from a topic at once.
    pub batch: usize,
    /// The share of the questions this agent stores (`--member K/M`); each
    /// member writes its share to its own store.
    pub member: Member,
}

impl StoreAgentConfig {
    pub fn new(params: Params) -> Self {
        Self {
            params,
            batch: 64,
            member: Member::ALONE,
        }
    }
}

/// A question that reached its final state in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finalised {
    pub id: String,
    pub kind: FinalKind,
    /// False when the store already had it (a replay after a crash).
    pub new: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinalKind {
    Stored,
    DeadLettered,
}

/// Run the store agent until `shutdown` turns true. Each finalised question
/// is reported on `events` when given.
pub async fn run(
    broker: Arc<dyn Broker>,
    store: Store,
    config: StoreAgentConfig,
    events: Option<mpsc::Sender<Finalised>>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let StoreAgentConfig {
        params,
        batch,
        member,
    } = config;
    let quality_gate = crate::chains::quality_gate(&params);
    let sources = [
        (
            topics::ANSWERS,
            ANSWERS_CONSUMER,
            Some(&quality_gate),
            write_answer as Writer,
        ),
        (
            topics::DEAD_LETTERS,
            DEAD_LETTERS_CONSUMER,
            None,
            write_dead_letter,
        ),
    ];
    let entries = &metrics().store_entries;
    entries
        .get_or_create(&kind_label(FinalKind::Stored))
        .set(store.answer_count() as i64);
    entries
        .get_or_create(&kind_label(FinalKind::DeadLettered))
        .set(store.dead_letter_count() as i64);
    let mut drains = Vec::new();
    for (topic, id, chain, write) in sources {
        for consumer in
            answerloop_broker::consumers(broker.as_ref(), topic, id, chain, member).await?
        {
            drains.push(drain(
                consumer,
                &store,
                batch,
                events.clone(),
                shutdown.clone(),
                write,
            ));
        }
    }
    futures::future::try_join_all(drains).await?;
    Ok(())
}

type Writer = fn(&Store, &Record) -> anyhow::Result<Finalised>;

/// Read batches, write each record, flush, commit; until shutdown.
async fn drain(
    mut consumer: Box<dyn Consumer>,
    store: &Store,
    batch: usize,
    events: Option<mpsc::Sender<Finalised>>,
    mut shutdown: watch::Receiver<bool>,
    write: Writer,
) -> anyhow::Result<()> {
    // Where this consumer has committed, as far as it knows, and when.
    let mut committed = None;
    let mut last_commit = tokio::time::Instant::now();
    // The position after the last record flushed (or skipped as another
    // member's): what the next commit may cover.
    let mut durable = None;
    loop {
        let next = tokio::select! {
            next = consumer.next_batch(batch, READ_WAIT) => Some(next?),
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(next) = next else {
            if let Some(position) = durable.filter(|p| committed != Some(*p)) {
                consumer.commit(position).await?;
            }
            return Ok(());
        };
        let mut done = Vec::with_capacity(next.records.len());
        if !next.records.is_empty() {
            for record in &next.records {
                done.push(write(store, record)?);
            }
            store.flush().await?;
        }
        // An empty batch writes nothing, but its position may have moved
        // past records another member stores.
        if next.next > 0 {
            durable = Some(next.next);
        }
        // Commits lag the flush by at most COMMIT_EVERY (write, flush, then
        // commit, still): a crash in between replays what the store has.
        if let Some(position) = durable.filter(|p| committed != Some(*p)) {
            if last_commit.elapsed() >= COMMIT_EVERY {
                consumer.commit(position).await?;
                committed = Some(position);
                last_commit = tokio::time::Instant::now();
            }
        }
        count_writes(&done);
        if let Some(events) = &events {
            for event in done {
                let _ = events.send(event).await;
            }
        }
    }
}

/// One record from the quality gate: a final answer, or a dead letter for a
/// record that cannot be stored.
fn write_answer(store: &Store, record: &Record) -> anyhow::Result<Finalised> {
    let letter = match Scored::decode(&record.value) {
        Scored::Answer(answer) => match StoredAnswer::from_final(&answer, now_ms()) {
            Some(stored) => {
                let outcome = store.put_answer(&stored)?;
                if outcome == Written::Inserted {
                    metrics()
                        .final_score
                        .get_or_create(&[("attempt", stored.attempt.to_string())])
                        .observe(f64::from(stored.score));
                }
                return Ok(finalised(stored.id, FinalKind::Stored, outcome));
            }
            None => DeadLetter {
                id: answer.question.id.clone(),
                class: FailureClass::Invalid,
                reason: "answer reached the store without a score (answer-score did not run)"
                    .into(),
                status: None,
                question: Some(answer.question),
                raw: None,
                at_ms: now_ms(),
            },
        },
        Scored::Invalid(tag) => DeadLetter::unreadable(&tag, now_ms()),
    };
    let outcome = store.put_dead_letter(&letter)?;
    Ok(finalised(letter.id, FinalKind::DeadLettered, outcome))
}

/// One record from `dead-letters`.
fn write_dead_letter(store: &Store, record: &Record) -> anyhow::Result<Finalised> {
    let letter = serde_json::from_slice::<DeadLetter>(&record.value).unwrap_or_else(|e| {
        let tag = InvalidRecord::new(format!("not a dead letter: {e}"), &record.value);
        DeadLetter::unreadable(&tag, now_ms())
    });
    let outcome = store.put_dead_letter(&letter)?;
    Ok(finalised(letter.id, FinalKind::DeadLettered, outcome))
}

fn finalised(id: String, kind: FinalKind, outcome: Written) -> Finalised {
    Finalised {
        id,
        kind,
        new: outcome == Written::Inserted,
    }
}

fn kind_label(kind: FinalKind) -> [(&'static str, String); 1] {
    let kind = match kind {
        FinalKind::Stored => "stored",
        FinalKind::DeadLettered => "dead_letter",
    };
    [("kind", kind.to_string())]
}

/// Count the final states written (once durable), and the store's entries.
fn count_writes(done: &[Finalised]) {
    let m = metrics();
    for event in done {
        let labels = kind_label(event.kind);
        let [kind] = labels.clone();
        m.store_writes
            .get_or_create(&[kind, ("replay", (!event.new).to_string())])
            .inc();
        if event.new {
            m.store_entries.get_or_create(&labels).inc();
        }
    }
}
