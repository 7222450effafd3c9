//! The traffic agent: reads the question set, leaves out what is already
//! answered, and produces the rest to `questions` at a chosen arrival process.
//!
//! - [`dataset`]: the Yahoo! Answers CSV reader.
//! - [`arrival`]: constant, Poisson or burst arrival times from a seed.

pub mod arrival;
pub use answerloop_dataset as dataset;

use answerloop_schema::Question;
use tokio::sync::watch;

use crate::broker::producer::Producer;
use crate::broker::{BrokerError, Record};
use crate::clock::now_ms;
use arrival::Schedule;

/// Produce `questions` to the `questions` topic on `schedule`; stops early
/// when `shutdown` turns true. Returns how many were produced.
pub async fn run(
    questions: Vec<Question>,
    producer: Producer,
    mut schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) -> Result<usize, BrokerError> {
    let start = tokio::time::Instant::now();
    let mut sent = 0;
    for mut question in questions {
        let due = start + schedule.next_offset();
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        question.trace.queued_ms = now_ms();
        let value = serde_json::to_vec(&question).expect("a question always serialises");
        producer
            .send(Record::keyed(question.id.clone(), value))
            .await?;
        sent += 1;
    }
    Ok(sent)
}
