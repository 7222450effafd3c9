//! `answer-score` as a Redpanda Data Transform (built for `wasm32-wasip1`).
//!
//! Each record written to the input topic is scored with the very function
//! the Fluvio SmartModule `answer-score` runs
//! ([`answerloop_scoring::decide::score_record`]), so the output value is
//! byte for byte what the SmartModule gives for the same value and params.
//! The key and headers pass through unchanged.
//!
//! Params come from the transform's environment (`rpk transform deploy
//! --var KEY=VALUE`, or `env:` in `transform.yaml`):
//!
//! - `THRESHOLD`, `MAX_ATTEMPTS`: the SmartModule's `threshold` and
//!   `max_attempts`, with the same defaults (0.4 and 3). An unusable value
//!   stops the transform at start-up with a message naming it, as the
//!   SmartModule's `init` fails.
//! - `INVALID_TOPIC` (optional): where a record that is not an answer goes.
//!   Unset, it goes to the default output topic as the SmartModule's
//!   `invalid` tag (what answerloop's consumers dead-letter). Set, the
//!   record goes there unchanged instead; the topic must be one of the
//!   transform's output topics.
//!
//! Every scored answer goes to the default output topic (the first one).
//! No record makes the transform fail; only a refused write does, and
//! Redpanda then retries the batch.

use answerloop_schema::Answer;
use answerloop_scoring::{decide, Params};
use redpanda_transform_sdk::{
    on_record_written, BorrowedRecord, RecordWriter, WriteError, WriteEvent, WriteOptions,
};

fn main() {
    let params = Params::from_lookup(|name| std::env::var(name.to_ascii_uppercase()).ok())
        .unwrap_or_else(|e| {
            panic!(
                "answer-score-transform: environment variable {}: {e}",
                e.name.to_ascii_uppercase()
            )
        });
    let invalid_topic = std::env::var("INVALID_TOPIC")
        .ok()
        .filter(|t| !t.is_empty());
    on_record_written(move |event, writer| {
        score(&event, writer, &params, invalid_topic.as_deref())
    });
}

fn score(
    event: &WriteEvent,
    writer: &mut RecordWriter,
    params: &Params,
    invalid_topic: Option<&str>,
) -> Result<(), WriteError> {
    let record = &event.record;
    let value = record.value().unwrap_or_default();
    if let Some(topic) = invalid_topic {
        if serde_json::from_slice::<Answer>(value).is_err() {
            return writer.write_with_options(record, WriteOptions::to_topic(topic));
        }
    }
    let scored = decide::score_record(value, params);
    writer.write(BorrowedRecord::new_with_headers(
        record.key(),
        Some(&scored),
        record.headers().to_vec(),
    ))
}
