//! A producer that takes records one at a time and appends them in batches.
//!
//! Agents finish records one by one, but each broker produce is a durable
//! write (an fsync in the embedded broker). Records that arrive while a
//! produce is under way go out together in the next one, so throughput grows
//! with load while a lone record still goes out at once. `send` returns only
//! when the record is durable. The queue is bounded: a full queue makes
//! senders wait (backpressure), it never drops.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Broker, BrokerError, ChainSpec, Record};

type Ack = oneshot::Sender<Result<(), String>>;

#[derive(Clone)]
pub struct Producer {
    topic: String,
    tx: mpsc::Sender<(Record, Ack)>,
}

impl Producer {
    /// Start the batching task for `topic`; it ends when every clone of the
    /// returned producer is dropped.
    pub fn spawn(
        broker: Arc<dyn Broker>,
        topic: &str,
        chain: Option<ChainSpec>,
        max_batch: usize,
    ) -> (Producer, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(max_batch.max(1) * 2);
        let task = tokio::spawn(run(broker, topic.to_string(), chain, max_batch.max(1), rx));
        (
            Producer {
                topic: topic.to_string(),
                tx,
            },
            task,
        )
    }

    /// Append one record; returns once it is durable.
    pub async fn send(&self, record: Record) -> Result<(), BrokerError> {
        self.enqueue(record).await?.durable().await
    }

    /// Queue one record and return at once (or when the queue has room),
    /// with a handle that tells when it is durable. Records go out in the
    /// order they are queued. A sender that waits for each record before it
    /// queues the next is bound by one produce's latency per record (on a
    /// replicated Fluvio partition, the follower's round trip); one that
    /// keeps many queued is bound by throughput.
    pub async fn enqueue(&self, record: Record) -> Result<Pending, BrokerError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send((record, ack))
            .await
            .map_err(|_| stopped(&self.topic))?;
        Ok(Pending {
            topic: self.topic.clone(),
            done,
        })
    }
}

/// A queued record, not yet known to be durable.
pub struct Pending {
    topic: String,
    done: oneshot::Receiver<Result<(), String>>,
}

impl Pending {
    /// Wait until the record is durable, or its produce has failed.
    pub async fn durable(self) -> Result<(), BrokerError> {
        self.done
            .await
            .map_err(|_| stopped(&self.topic))?
            .map_err(|e| BrokerError::Task(format!("produce to {} failed: {e}", self.topic)))
    }
}

fn stopped(topic: &str) -> BrokerError {
    BrokerError::Task(format!("the producer for {topic} has stopped"))
}

async fn run(
    broker: Arc<dyn Broker>,
    topic: String,
    chain: Option<ChainSpec>,
    max_batch: usize,
    mut rx: mpsc::Receiver<(Record, Ack)>,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let (records, acks): (Vec<Record>, Vec<Ack>) = batch.into_iter().unzip();
        let result = broker
            .produce(&topic, records, chain.as_ref())
            .await
            .map_err(|e| e.to_string());
        for ack in acks {
            let _ = ack.send(result.clone());
        }
    }
}
