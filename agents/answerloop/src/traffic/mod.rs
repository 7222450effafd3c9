//! The traffic agent: reads the question set, leaves out what is already
//! answered, and produces the rest to `questions` at a chosen arrival process.
//!
//! - [`dataset`]: the Yahoo! Answers CSV reader.
//! - [`feed`]: the question set read ahead of the producer, row by row.
//! - [`arrival`]: constant, Poisson or burst arrival times from a seed.

pub mod arrival;
pub mod feed;
pub use answerloop_dataset as dataset;

use std::collections::VecDeque;

use answerloop_broker::producer::{Pending, Producer};
use answerloop_broker::{Broker, BrokerError, Record};
use answerloop_schema::clock::now_ms;
use answerloop_schema::{topics, Question};
use arrival::Schedule;
use dataset::IdSet;
use tokio::sync::{mpsc, watch};

/// The ids of the questions already on `questions`, across its partitions:
/// a restarted traffic agent or a resumed run does not send them again.
pub async fn already_sent(broker: &dyn Broker) -> Result<IdSet, BrokerError> {
    let mut ids = IdSet::new();
    answerloop_broker::scan(broker, topics::QUESTIONS, None, |record| {
        if let Ok(q) = serde_json::from_slice::<Question>(&record.value) {
            ids.insert(&q.id);
        }
    })
    .await?;
    Ok(ids)
}

/// How many questions traffic keeps queued and not yet durable. Waiting for
/// each before queueing the next bound it to one produce's latency a
/// question: about 25 questions/s on a Fluvio partition with replication 2.
const IN_FLIGHT: usize = 256;

/// What traffic logs once its first question is queued (`bench dataset`
/// times it).
pub const FIRST_QUESTION_LOG: &str = "first question queued";

/// Embed the question's reference once, as the feed reads it, so that
/// `answer-score` in the broker reads its vector from every attempt's
/// record instead of embedding the reference again (see
/// `answerloop_scoring::carried`). A vector already carried is kept.
pub fn carry_reference_vector(question: &mut Question) {
    if question.reference_vector.is_empty() {
        question.reference_vector =
            answerloop_scoring::semantic::model().carried_vector(&question.reference);
    }
}

/// Produce `questions`, as they come, to the `questions` topic on
/// `schedule`; stops early when `shutdown` turns true. Returns how many were
/// produced, each durable by then.
pub async fn run(
    mut questions: mpsc::Receiver<Question>,
    producer: Producer,
    mut schedule: Schedule,
    mut shutdown: watch::Receiver<bool>,
) -> Result<usize, BrokerError> {
    let start = tokio::time::Instant::now();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let mut sent = 0;
    loop {
        let mut question = tokio::select! {
            question = questions.recv() => match question {
                Some(question) => question,
                None => break,
            },
            _ = shutdown.wait_for(|stop| *stop) => break,
        };
        let due = start + schedule.next_offset();
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = shutdown.wait_for(|stop| *stop) => break,
        }
        question.trace.queued_ms = now_ms();
        let value = serde_json::to_vec(&question).expect("a question always serialises");
        if in_flight.len() == IN_FLIGHT {
            let oldest: Pending = in_flight.pop_front().expect("the window is full");
            oldest.durable().await?;
            sent += 1;
        }
        in_flight.push_back(
            producer
                .enqueue(Record::keyed(question.id.clone(), value))
                .await?,
        );
        if sent == 0 && in_flight.len() == 1 {
            tracing::info!(
                "traffic: {FIRST_QUESTION_LOG} after {} ms",
                start.elapsed().as_millis()
            );
        }
    }
    for pending in in_flight {
        pending.durable().await?;
        sent += 1;
    }
    Ok(sent)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traffic_carries_a_reference_vector_answer_score_reads() {
        let model = answerloop_scoring::semantic::model();
        let mut question = Question::new("Why?", "", "Ice is less dense than water.", 1);
        carry_reference_vector(&mut question);
        let mut bytes = Vec::new();
        let read = model
            .read_carried(&question.reference_vector, &mut bytes)
            .expect("a vector of the built-in table");
        assert_eq!(read.vector.len(), model.table().dims);
        assert!(read.norm2 > 0.0);
    }
}
