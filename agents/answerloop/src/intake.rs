//! The consume loop every agent shares: take records from a consumer, hand
//! each to a handler with bounded concurrency, and commit the consumer's
//! offset only behind records that are wholly done.
//!
//! Records are tracked one by one when the transport says where each one
//! ends, so a restart repeats only the records that were in flight.
//!
//! Backpressure: a new batch is read only when the previous one has been
//! handed out, and a record is handed out only when the agent is ready (the
//! LLM agent is not while every provider's circuit is open) and the shared
//! semaphore has a permit. The handler gets the permit and may give it back before it
//! returns: the LLM agent does once the model has answered, so a record
//! waiting for the broker to acknowledge its answer (a replicated produce
//! on a cluster) does not hold up the next call; the producer's bounded
//! queue bounds those. On shutdown the loop stops taking records, lets the ones in
//! flight finish, commits, and returns; what it had read but not started is
//! read again by the next consumer with the same id.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use answerloop_broker::commit::{CommitTracker, COMMIT_EVERY};
use answerloop_broker::{Consumer, Record};

/// How long one read waits for new records before the loop looks around.
const READ_WAIT: Duration = Duration::from_millis(500);

pub struct Intake {
    pub consumer: Box<dyn Consumer>,
    /// Shared between the intakes of one agent: the agent's concurrency.
    pub permits: Arc<Semaphore>,
    pub batch: usize,
    /// When set, no record is handed out until it says the agent can work
    /// (the LLM agent's: while every provider's circuit is open).
    pub ready: Option<Arc<dyn Ready>>,
}

/// Whether an agent can take new work now.
pub trait Ready: Send + Sync {
    /// Return once new work can be taken.
    fn ready(&self) -> futures::future::BoxFuture<'_, ()>;
}

impl Intake {
    /// Run until `shutdown` turns true or a handler fails. A handler error is
    /// fatal for the agent (the record stays uncommitted, so nothing is lost).
    pub async fn run<H, F>(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        handle: H,
    ) -> anyhow::Result<()>
    where
        H: Fn(Record, OwnedSemaphorePermit) -> F,
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let mut tracker = CommitTracker::default();
        let mut buffer: std::collections::VecDeque<(u64, Record)> = Default::default();
        let mut in_flight: JoinSet<(u64, anyhow::Result<()>)> = JoinSet::new();
        let mut stopping = *shutdown.borrow();
        // The furthest position done but not yet committed.
        let mut pending: Option<u64> = None;
        let mut last_commit = tokio::time::Instant::now();
        loop {
            if stopping && in_flight.is_empty() {
                break;
            }
            tokio::select! {
                Some(done) = in_flight.join_next(), if !in_flight.is_empty() => {
                    let (ticket, result) = done.map_err(|e| anyhow::anyhow!("handler task failed: {e}"))?;
                    result?;
                    tracker.done(ticket);
                }
                permit = permit(&self.permits, self.ready.as_deref()), if !buffer.is_empty() && !stopping => {
                    let permit = permit.expect("the semaphore is never closed");
                    let (ticket, record) = buffer.pop_front().expect("buffer is not empty");
                    let work = handle(record, permit);
                    in_flight.spawn(async move { (ticket, work.await) });
                }
                batch = self.consumer.next_batch(self.batch, READ_WAIT), if buffer.is_empty() && !stopping => {
                    let batch = batch?;
                    // Where the transport says where each record ends, each is
                    // its own ticket: one slow record holds back the commit
                    // only of the records after it. Otherwise the batch is one.
                    let tickets = if batch.positions.len() == batch.records.len() {
                        batch.positions
                    } else {
                        vec![batch.next; batch.records.len()]
                    };
                    for (ticket, record) in tickets.into_iter().zip(batch.records) {
                        tracker.add_batch(ticket, 1);
                        buffer.push_back((ticket, record));
                    }
                    tracker.add_batch(batch.next, 0);
                }
                _ = shutdown.wait_for(|stop| *stop), if !stopping => {
                    stopping = true;
                    buffer.clear();
                }
                _ = tokio::time::sleep_until(last_commit + COMMIT_EVERY), if pending.is_some() => {}
            }
            if let Some(position) = tracker.ready() {
                pending = Some(position);
            }
            // At most every COMMIT_EVERY, working or idle (the timer above
            // wakes the loop for it); a stopping intake commits at once.
            let done = stopping && in_flight.is_empty();
            if let Some(position) = pending {
                if done || last_commit.elapsed() >= COMMIT_EVERY {
                    self.consumer.commit(position).await?;
                    pending = None;
                    last_commit = tokio::time::Instant::now();
                }
            }
        }
        Ok(())
    }
}

/// A permit to hand out a record, once the agent is ready for new work.
async fn permit(
    permits: &Arc<Semaphore>,
    ready: Option<&dyn Ready>,
) -> Result<OwnedSemaphorePermit, tokio::sync::AcquireError> {
    if let Some(ready) = ready {
        ready.ready().await;
    }
    permits.clone().acquire_owned().await
}
