//! What a Fluvio consumer decides, apart from the cluster it talks to: which
//! records it holds and hands out, where a reopened stream resumes, when a
//! refused stream is opened again and when that becomes an error, when a
//! stream skipped records and must be read again, what a commit must do,
//! when to ask the SC where the log ends.
//!
//! Skipped records: the published `fluvio` client (0.50.1) loses records
//! when a fetch response ends in a batch cut short by `max_bytes`: it
//! yields the whole records of that batch, then asks the SPU to go on after
//! the batch's last offset, so the records cut off are never delivered
//! (one every megabyte of backlog, measured; fixed upstream after that
//! release by "do not assume all batches in stream fetch response are
//! complete"). A stream without a chain yields every offset in order, so a
//! jump is that loss: the stream is dropped and read again from the first
//! missing offset. A chain's stream is not affected: the SPU tells the
//! client where to go on.
//!
//! CI cannot run a Fluvio cluster, so these decisions live here, as plain
//! data driven by [`Event`]s, where unit tests reach every branch; the
//! consumer in [`super`] only turns stream items into events and acts on
//! the [`Step`]s that come back. Nothing here may do I/O or wait.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Batch, BrokerError, ChainSpec, ConsumerConfig, Record};

/// Refusals in a row (about 30 s at [`REOPEN_DELAY`]) before a consumer
/// gives up with an error.
pub const REOPEN_LIMIT: u32 = 60;
/// Pause before a stream is opened again after the cluster refused it.
pub const REOPEN_DELAY: Duration = Duration::from_millis(500);
/// How often a committed consumer asks the SC where its partition ends.
pub const LOG_END_EVERY: Duration = Duration::from_secs(5);

/// What the stream yielded, in terms the cursor understands.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Record {
        offset: i64,
        record: Record,
    },
    /// An error code from the cluster; `transient` when the same stream
    /// request succeeds a moment later (a SmartModule not loaded yet, a
    /// leader moving).
    Error {
        code: String,
        transient: bool,
    },
    /// The stream ended.
    Closed,
}

/// What the consumer must do after an event.
#[derive(Debug)]
pub enum Step {
    /// Go on reading.
    Continue,
    /// A scan reached the end of the log.
    Ended,
    /// Drop the stream and open it again, after [`REOPEN_DELAY`], from
    /// [`Cursor::resume_from`].
    Reopen {
        refusal: String,
    },
    /// The stream skipped the records from offset `from` to before `to`
    /// (see the module docs): drop it and open it again at once from
    /// [`Cursor::resume_from`], which is `from`.
    Resync {
        from: u64,
        to: u64,
    },
    Fail(BrokerError),
}

/// How the next batch is to be read.
#[derive(Debug, PartialEq, Eq)]
pub enum ReadPlan {
    /// Records are buffered, or a scan has ended: hand out what there is.
    Ready,
    /// A scan without a chain: its stream ends at the end of the log, so
    /// read until it does.
    UntilEnd,
    /// Wait for a record up to the caller's limit.
    Wait,
}

/// Where the committer's plain stream stands against a commit target.
#[derive(Debug, PartialEq, Eq)]
pub enum CommitterStep {
    /// Read on: the record before the position is still ahead.
    Advance,
    /// The stream stands on the record before the position: commit here.
    Commit,
    /// Already committed at or past this position: nothing to do.
    AlreadyPast,
}

#[derive(Debug)]
pub struct Cursor {
    config: ConsumerConfig,
    /// For messages: `topic[partition] as id`.
    name: String,
    /// Records taken from the stream, not yet handed out (cancel safety).
    buffer: VecDeque<(i64, Record)>,
    /// An error or end taken from the stream while not waiting, for the
    /// next waiting read to deal with.
    stashed: Option<Event>,
    /// The offset after the last record handed out.
    position: Option<u64>,
    /// The offset after the last record taken from a stream (handed out or
    /// buffered): where a reopened stream must start.
    received: Option<u64>,
    committed: Option<u64>,
    /// A scan's stream reached the end of the log.
    ended: bool,
    /// Times in a row the cluster refused or closed the stream.
    refused: u32,
    /// The partition's high watermark as the SC last reported it, and when
    /// it was asked.
    log_end: Option<u64>,
    log_end_asked: Option<Instant>,
}

impl Cursor {
    pub fn new(topic: &str, config: ConsumerConfig) -> Self {
        let name = format!(
            "{topic}[{}] as {}",
            config.partition,
            config.id.as_deref().unwrap_or("a scan")
        );
        Self {
            config,
            name,
            buffer: VecDeque::new(),
            stashed: None,
            position: None,
            received: None,
            committed: None,
            ended: false,
            refused: 0,
            log_end: None,
            log_end_asked: None,
        }
    }

    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// `topic[partition] as id`, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the stream ends at the end of the log: scans without a
    /// chain. The client ends a stream after as many records as the log held
    /// when it opened, so a stream whose chain filters records out would
    /// never end; scans through a chain stop at the first read that waits
    /// in vain.
    pub fn ends_at_the_end(&self) -> bool {
        self.config.id.is_none() && self.config.chain.is_none()
    }

    /// Where a reopened stream starts: after the last record taken from a
    /// stream (the buffer outlives the stream), else at the committed
    /// position; `None` for the consumer's committed offset in the cluster
    /// (the beginning for a new consumer).
    pub fn resume_from(&self) -> Option<u64> {
        self.received.or(self.committed)
    }

    pub fn read_plan(&self) -> ReadPlan {
        if !self.buffer.is_empty() || self.ended {
            ReadPlan::Ready
        } else if self.ends_at_the_end() {
            ReadPlan::UntilEnd
        } else {
            ReadPlan::Wait
        }
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Whether to take more ready records without waiting.
    pub fn wants_more(&self, max: usize) -> bool {
        !self.ended && self.stashed.is_none() && self.buffer.len() < max
    }

    /// Take a record from the stream, waiting or not: kept for handing
    /// out, or, when the stream skipped records before it, a
    /// [`Step::Resync`] (the record is read again with them).
    pub fn take_record(&mut self, offset: i64, record: Record) -> Step {
        let offset = offset.max(0) as u64;
        if let Some(expected) = self.received {
            if offset < expected {
                // Already taken: a reopened stream starts at the batch
                // holding its start offset, and a client that let an
                // earlier record through is not trusted to drop it.
                return Step::Continue;
            }
            if self.config.chain.is_none() && skipped(expected as i64 - 1, offset as i64) {
                return Step::Resync {
                    from: expected,
                    to: offset,
                };
            }
        }
        self.refused = 0;
        self.received = Some(offset + 1);
        self.buffer.push_back((offset as i64, record));
        Step::Continue
    }

    /// Keep an error or an end taken without waiting, for the next read.
    pub fn stash(&mut self, event: Event) {
        self.stashed = Some(event);
    }

    /// The stashed event, which comes before anything the stream has next.
    pub fn take_stashed(&mut self) -> Option<Event> {
        self.stashed.take()
    }

    /// Take what a waiting read got from the stream.
    pub fn on_event(&mut self, event: Event) -> Step {
        let refusal = match event {
            Event::Record { offset, record } => return self.take_record(offset, record),
            Event::Closed if self.ends_at_the_end() => {
                self.ended = true;
                return Step::Ended;
            }
            Event::Error {
                code,
                transient: false,
            } => {
                return Step::Fail(BrokerError::Fluvio(format!(
                    "consuming {}: {code}",
                    self.name
                )))
            }
            Event::Error { code, .. } => code,
            // The client ends a stream the SPU refused without saying why:
            // most often a SmartModule the SPU has not loaded yet. It is
            // not the end of the topic: open the stream again.
            Event::Closed => "the cluster closed the stream".to_string(),
        };
        self.refused += 1;
        if self.refused > REOPEN_LIMIT {
            return Step::Fail(BrokerError::Fluvio(format!(
                "consuming {}: {refusal}, {REOPEN_LIMIT} times in a row; are the SmartModules \
                 [{}] registered? (answerloop deploy)",
                self.name,
                self.config
                    .chain
                    .as_ref()
                    .map(ChainSpec::describe)
                    .unwrap_or_default()
            )));
        }
        Step::Reopen { refusal }
    }

    /// Hand out up to `max` buffered records, with the position after each.
    pub fn take_batch(&mut self, max: usize) -> Batch {
        let take = self.buffer.len().min(max.max(1));
        let mut records = Vec::with_capacity(take);
        let mut positions = Vec::with_capacity(take);
        for (offset, record) in self.buffer.drain(..take) {
            positions.push(offset as u64 + 1);
            records.push(record);
        }
        if let Some(&last) = positions.last() {
            self.position = Some(last);
        }
        Batch {
            records,
            next: self.position.unwrap_or(0),
            positions,
            end: self.log_end,
        }
    }

    /// Whether to ask the SC where the log ends now: committed consumers
    /// at most every [`LOG_END_EVERY`] (for their lag), a scan once, before
    /// its first batch (what [`crate::records_in`] reads).
    pub fn log_end_due(&self, now: Instant) -> bool {
        match self.log_end_asked {
            None => true,
            Some(asked) => self.config.id.is_some() && now.duration_since(asked) >= LOG_END_EVERY,
        }
    }

    /// What the SC said (`None`: it did not say), asked at `now`.
    pub fn set_log_end(&mut self, end: Option<u64>, now: Instant) {
        self.log_end_asked = Some(now);
        if end.is_some() {
            self.log_end = end;
        }
    }

    /// The offset of the record the committer must commit at so that a
    /// restart begins at `next`; `None` when there is nothing to commit (a
    /// scan, position 0, or committed at or past it already).
    pub fn commit_target(&self, next: u64) -> Option<i64> {
        let behind = self.committed.is_some_and(|c| c >= next);
        (self.config.id.is_some() && next > 0 && !behind).then(|| next as i64 - 1)
    }

    /// A commit at `next` is durable.
    pub fn committed_at(&mut self, next: u64) {
        self.committed = Some(next);
    }
}

/// Whether a plain stream that stood on offset `seen` (-1 before its
/// first record) skipped records to reach `offset` (see the module docs).
pub fn skipped(seen: i64, offset: i64) -> bool {
    seen >= 0 && offset > seen + 1
}

/// The committer stands on the record at offset `seen` (-1 before the
/// first); what it does to commit at `target`.
pub fn committer_step(seen: i64, target: i64) -> CommitterStep {
    match seen.cmp(&target) {
        std::cmp::Ordering::Less => CommitterStep::Advance,
        std::cmp::Ordering::Equal => CommitterStep::Commit,
        std::cmp::Ordering::Greater => CommitterStep::AlreadyPast,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed() -> Cursor {
        let chain = ChainSpec::single("quality-gate", &answerloop_scoring::Params::default());
        Cursor::new("answers", ConsumerConfig::committed("store", Some(chain)))
    }

    fn record(offset: i64) -> Event {
        Event::Record {
            offset,
            record: Record::keyed(format!("k{offset}"), "v"),
        }
    }

    fn refused() -> Event {
        Event::Error {
            code: "SmartModule not found".into(),
            transient: true,
        }
    }

    #[test]
    fn records_are_handed_out_with_the_position_after_each() {
        let mut cursor = committed();
        for offset in [4, 5, 6] {
            assert!(matches!(cursor.on_event(record(offset)), Step::Continue));
        }
        assert_eq!(cursor.read_plan(), ReadPlan::Ready);
        let first = cursor.take_batch(2);
        assert_eq!((first.positions, first.next), (vec![5, 6], 6));
        let second = cursor.take_batch(10);
        assert_eq!((second.positions, second.next), (vec![7], 7));
        let empty = cursor.take_batch(10);
        assert!(empty.records.is_empty());
        assert_eq!(empty.next, 7, "an empty batch keeps the position");
        assert_eq!(cursor.read_plan(), ReadPlan::Wait);
    }

    #[test]
    fn a_reopened_stream_resumes_after_the_last_record_handed_out() {
        let mut cursor = committed();
        assert_eq!(
            cursor.resume_from(),
            None,
            "a new consumer: the cluster's offset"
        );
        cursor.committed_at(3);
        assert_eq!(cursor.resume_from(), Some(3));
        cursor.on_event(record(8));
        assert_eq!(
            cursor.resume_from(),
            Some(9),
            "a buffered record is not read again: the buffer outlives the stream"
        );
        assert_eq!(cursor.take_batch(1).next, 9);
        assert_eq!(cursor.resume_from(), Some(9));
    }

    fn plain() -> Cursor {
        Cursor::new("questions", ConsumerConfig::committed("llm-agent", None))
    }

    /// The published client's loss at a fetch cut short by max_bytes: the
    /// stream jumps from 1371 to 1373.
    #[test]
    fn records_a_plain_stream_skipped_are_read_again_from_the_first_missing() {
        let mut cursor = plain();
        for offset in 1366..1372 {
            assert!(matches!(cursor.on_event(record(offset)), Step::Continue));
        }
        assert_eq!(cursor.take_batch(2).next, 1368);
        match cursor.on_event(record(1373)) {
            Step::Resync { from, to } => assert_eq!((from, to), (1372, 1373)),
            other => panic!("expected a resync, got {other:?}"),
        }
        assert_eq!(
            cursor.resume_from(),
            Some(1372),
            "the buffered records are not read again"
        );
        // The reopened stream starts at the batch holding 1372.
        for offset in [1370, 1371, 1372, 1373] {
            assert!(matches!(cursor.on_event(record(offset)), Step::Continue));
        }
        let batch = cursor.take_batch(100);
        assert_eq!(batch.positions, vec![1369, 1370, 1371, 1372, 1373, 1374]);
    }

    #[test]
    fn a_chain_stream_may_leave_offsets_out() {
        let mut cursor = committed();
        cursor.on_event(record(4));
        assert!(
            matches!(cursor.on_event(record(9)), Step::Continue),
            "the chain filtered 5..9"
        );
        assert_eq!(cursor.take_batch(10).positions, vec![5, 10]);
    }

    #[test]
    fn the_first_record_of_a_stream_opened_at_the_committed_offset_is_taken() {
        let mut cursor = plain();
        assert!(matches!(cursor.on_event(record(500)), Step::Continue));
        assert_eq!(cursor.take_batch(1).next, 501);
    }

    #[test]
    fn a_scan_without_a_chain_ends_where_its_stream_ends() {
        let mut scan = Cursor::new("questions", ConsumerConfig::scan());
        assert_eq!(scan.read_plan(), ReadPlan::UntilEnd);
        assert!(matches!(scan.on_event(Event::Closed), Step::Ended));
        assert!(scan.has_ended());
        assert!(!scan.wants_more(10));
        assert_eq!(scan.read_plan(), ReadPlan::Ready);
    }

    #[test]
    fn a_closed_stream_of_a_committed_consumer_is_opened_again() {
        let mut cursor = committed();
        match cursor.on_event(Event::Closed) {
            Step::Reopen { refusal } => assert!(refusal.contains("closed"), "{refusal}"),
            other => panic!("expected a reopen, got {other:?}"),
        }
        assert!(!cursor.has_ended());
    }

    #[test]
    fn refusals_reopen_up_to_the_limit_then_fail_naming_the_chain() {
        let mut cursor = committed();
        for _ in 0..REOPEN_LIMIT {
            assert!(matches!(cursor.on_event(refused()), Step::Reopen { .. }));
        }
        match cursor.on_event(refused()) {
            Step::Fail(e) => {
                let e = e.to_string();
                assert!(
                    e.contains("answers[0] as store")
                        && e.contains("quality-gate")
                        && e.contains("answerloop deploy"),
                    "{e}"
                );
            }
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn a_record_resets_the_count_of_refusals() {
        let mut cursor = committed();
        for round in 0..3 {
            for _ in 0..REOPEN_LIMIT {
                assert!(
                    matches!(cursor.on_event(refused()), Step::Reopen { .. }),
                    "round {round}"
                );
            }
            cursor.on_event(record(round));
        }
    }

    #[test]
    fn an_error_the_cluster_does_not_recover_from_fails_at_once() {
        let mut cursor = committed();
        let step = cursor.on_event(Event::Error {
            code: "OffsetOutOfRange".into(),
            transient: false,
        });
        assert!(matches!(step, Step::Fail(e) if e.to_string().contains("OffsetOutOfRange")));
    }

    #[test]
    fn an_error_taken_without_waiting_comes_first_at_the_next_read() {
        let mut cursor = committed();
        cursor.take_record(0, Record::keyed("k", "v"));
        assert!(cursor.wants_more(10));
        cursor.stash(Event::Closed);
        assert!(
            !cursor.wants_more(10),
            "nothing is taken past a stashed event"
        );
        assert_eq!(cursor.take_batch(10).records.len(), 1);
        assert_eq!(cursor.take_stashed(), Some(Event::Closed));
        assert_eq!(cursor.take_stashed(), None);
    }

    #[test]
    fn a_commit_targets_the_record_before_the_position_once() {
        let mut cursor = committed();
        assert_eq!(cursor.commit_target(0), None);
        assert_eq!(cursor.commit_target(10), Some(9));
        cursor.committed_at(10);
        assert_eq!(cursor.commit_target(10), None);
        assert_eq!(cursor.commit_target(7), None, "never backwards");
        assert_eq!(cursor.commit_target(11), Some(10));
        let scan = Cursor::new("answers", ConsumerConfig::scan());
        assert_eq!(scan.commit_target(10), None, "a scan commits nothing");
    }

    #[test]
    fn the_committer_reads_up_to_the_target_and_commits_there() {
        assert_eq!(committer_step(-1, 9), CommitterStep::Advance);
        assert_eq!(committer_step(9, 9), CommitterStep::Commit);
        assert_eq!(committer_step(12, 9), CommitterStep::AlreadyPast);
    }

    #[test]
    fn a_jump_in_a_plain_stream_is_a_skip() {
        assert!(!skipped(-1, 40), "the first record may be anywhere");
        assert!(!skipped(40, 41));
        assert!(skipped(40, 42));
    }

    #[test]
    fn the_log_end_is_asked_for_committed_consumers_every_few_seconds() {
        let start = Instant::now();
        let mut cursor = committed();
        assert!(cursor.log_end_due(start));
        cursor.set_log_end(Some(40), start);
        assert!(!cursor.log_end_due(start + LOG_END_EVERY / 2));
        assert!(cursor.log_end_due(start + LOG_END_EVERY));
        cursor.set_log_end(None, start + LOG_END_EVERY);
        assert_eq!(
            cursor.take_batch(1).end,
            Some(40),
            "a silent SC keeps the last figure"
        );
        let mut scan = Cursor::new("answers", ConsumerConfig::scan());
        assert!(
            scan.log_end_due(start),
            "a scan asks before its first batch"
        );
        scan.set_log_end(Some(7), start);
        assert!(
            !scan.log_end_due(start + LOG_END_EVERY * 10),
            "and never again"
        );
    }
}
