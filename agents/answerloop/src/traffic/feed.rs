//! The question set read on a thread of its own, a bounded channel ahead of
//! the producer: traffic sends its first question as soon as the first row
//! is read, and holds a window of rows, never the file.
//!
//! The reader also embeds each reference (see
//! [`carry_reference_vector`](super::carry_reference_vector)), off the async
//! executor and ahead of the arrival schedule; with `--scorer exact` with
//! the transformer (see [`crate::exact`]), in batches that grow from one
//! question (the first goes out at once) to [`MAX_BATCH`].

use std::io::Read;
use std::sync::Arc;

use answerloop_schema::Question;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::dataset::{Questions, ReadReport};
use crate::exact::{ExactEmbedder, MAX_BATCH};

/// Questions read ahead of the producer.
const READ_AHEAD: usize = 1024;

/// What the reader went through.
#[derive(Debug, Clone, Default)]
pub struct FeedReport {
    /// Distinct questions read.
    pub questions: usize,
    /// Of those, left out (already sent or final).
    pub skipped: usize,
    pub rows: ReadReport,
}

/// Read `questions` on a blocking thread, keeping those `send` says to
/// send (the others are counted as skipped), their references' exact
/// vectors filled in when `exact` is given: the questions to send, as they
/// are read, and the reader to wait for once they are taken. The reader
/// stops when the receiver is dropped.
pub fn spawn<R: Read + Send + 'static>(
    mut questions: Questions<R>,
    send: impl Fn(&Question) -> bool + Send + 'static,
    exact: Option<Arc<ExactEmbedder>>,
) -> (mpsc::Receiver<Question>, FeedReader) {
    let (tx, rx) = mpsc::channel(READ_AHEAD);
    let reader = tokio::task::spawn_blocking(move || {
        let mut skipped = 0;
        let mut ready = Vec::new();
        let mut batch = 1;
        for question in questions.by_ref() {
            let question = question?;
            if !send(&question) {
                skipped += 1;
                continue;
            }
            ready.push(question);
            if ready.len() >= batch {
                if !pass_on(&mut ready, exact.as_deref(), &tx)? {
                    break;
                }
                if exact.is_some() {
                    batch = (batch * 2).min(MAX_BATCH);
                }
            }
        }
        pass_on(&mut ready, exact.as_deref(), &tx)?;
        let (ids, rows) = questions.into_parts();
        Ok(FeedReport {
            questions: ids.len(),
            skipped,
            rows,
        })
    });
    (rx, FeedReader(reader))
}

/// Send the `ready` questions on, their references embedded first (with
/// `exact` when given); false once the receiver is gone.
fn pass_on(
    ready: &mut Vec<Question>,
    exact: Option<&ExactEmbedder>,
    tx: &mpsc::Sender<Question>,
) -> anyhow::Result<bool> {
    if ready.is_empty() {
        return Ok(true);
    }
    if let Some(exact) = exact {
        let references = ready.iter().map(|q| q.reference.clone()).collect();
        let vectors = exact.vectors_blocking(references)?;
        for (question, vector) in ready.iter_mut().zip(vectors) {
            question.reference_vector = vector;
        }
    }
    for question in ready.drain(..) {
        let mut question = question;
        super::carry_reference_vector(&mut question);
        if tx.blocking_send(question).is_err() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The reader of [`spawn`], to wait for once its questions are taken.
pub struct FeedReader(JoinHandle<anyhow::Result<FeedReport>>);

impl FeedReader {
    /// How the read went: the rows' report, or why the file could not be
    /// read to its end (a failed read, or not a question set).
    pub async fn finish(self) -> anyhow::Result<FeedReport> {
        self.0.await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::dataset::{IdSet, SAMPLE_CSV};

    fn questions(text: &str, limit: Option<usize>) -> Questions<std::io::Cursor<Vec<u8>>> {
        Questions::new(std::io::Cursor::new(text.as_bytes().to_vec()), "t", limit).unwrap()
    }

    async fn drain(mut rx: mpsc::Receiver<Question>) -> Vec<Question> {
        let mut out = Vec::new();
        while let Some(q) = rx.recv().await {
            out.push(q);
        }
        out
    }

    #[tokio::test]
    async fn sends_each_question_once_leaving_out_those_already_sent() {
        let all = crate::traffic::dataset::sample().questions;
        let sent: IdSet = all.iter().step_by(3).map(|q| q.id.as_str()).collect();
        // The sample twice over: every question repeated.
        let text = format!("{SAMPLE_CSV}{SAMPLE_CSV}");
        let (rx, reader) = spawn(questions(&text, None), move |q| !sent.contains(&q.id), None);
        let mut got = drain(rx).await;
        let report = reader.finish().await.unwrap();
        for question in &mut got {
            assert!(
                question.reference_vector.starts_with("static:"),
                "the reader carries each reference's vector"
            );
            question.reference_vector.clear();
        }
        let expected: Vec<&Question> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 3 != 0)
            .map(|(_, q)| q)
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected);
        assert_eq!(report.questions, all.len());
        assert_eq!(report.skipped, all.len().div_ceil(3));
        assert_eq!(report.rows.duplicates, all.len());
    }

    #[tokio::test]
    async fn malformed_rows_keep_their_line_numbers_and_a_limit_stops_the_read() {
        let text = "1,\"a?\",\"\",\"x\"\n1,\"too few\"\n1,\"b?\",\"\",\"y\"\n1,\"c?\",\"\",\"z\"\n\"unclosed";
        let (rx, reader) = spawn(questions(text, Some(2)), |_| true, None);
        let titles: Vec<String> = drain(rx).await.into_iter().map(|q| q.title).collect();
        assert_eq!(titles, ["a?", "b?"]);
        let report = reader.finish().await.unwrap();
        assert_eq!(
            report.rows.rows, 3,
            "the fourth row and the tail are not read"
        );
        let lines: Vec<u64> = report.rows.malformed.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2]);
    }

    #[tokio::test]
    async fn a_file_with_no_question_fails_the_reader() {
        let (rx, reader) = spawn(questions("1,\"only a title\"\n", None), |_| true, None);
        assert!(drain(rx).await.is_empty());
        let err = reader.finish().await.unwrap_err().to_string();
        assert!(err.contains("t is not a Yahoo! Answers CSV"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    #[tokio::test]
    async fn the_reader_stops_when_the_sender_stops_taking() {
        let rows = 5 * READ_AHEAD;
        let text: String = (0..rows)
            .map(|i| format!("1,\"question {i}?\",\"\",\"answer\"\n"))
            .collect();
        let (rx, reader) = spawn(questions(&text, None), |_| true, None);
        drop(rx);
        let report = reader.finish().await.unwrap();
        // At most a channel's worth ahead of a sender that stopped at once.
        assert!(
            report.rows.rows <= READ_AHEAD + 1,
            "read {} rows",
            report.rows.rows
        );
    }
}
