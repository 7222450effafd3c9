//! Commit positions for records finished out of order.
//!
//! An agent works on many records at once and they finish in any order, but
//! a consumer offset says "everything before this is done". The tracker
//! holds each batch's end position until every record of it, and of every
//! earlier batch, is done.

use std::collections::VecDeque;
use std::time::Duration;

/// How often at most an agent commits a consumer's position, working or
/// idle (and once more when it stops). A commit is a durable write, and on
/// a Fluvio cluster a round trip that can cost much more: an SPU that does
/// not hold the `consumer-offset` topic forwards every offset update to the
/// SPU that does, over a new connection each time (fluvio-spu
/// `send_private_request_to_leader`). Committing at every idle moment made
/// a loop pipeline whose `answers` partition sat on the other SPU 8x slower.
/// A later commit only means a restart repeats a little more work, which
/// the store's idempotent writes absorb.
pub const COMMIT_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, Default)]
pub struct CommitTracker {
    /// Batches in read order: (position after the batch, records not yet done).
    pending: VecDeque<(u64, usize)>,
    /// The last position handed out by `ready`, so an idle consumer's empty
    /// reads do not commit the same position again and again.
    committed: Option<u64>,
}

impl CommitTracker {
    /// Register a batch of `records` records ending before `next`; its records
    /// are later marked done with [`CommitTracker::done`]`(next)`. A batch
    /// ending where the last one does joins it.
    pub fn add_batch(&mut self, next: u64, records: usize) {
        match self.pending.back_mut() {
            Some((end, count)) if *end == next => *count += records,
            _ => self.pending.push_back((next, records)),
        }
    }

    /// One record of the batch ending at `next` is done.
    pub fn done(&mut self, next: u64) {
        if let Some(entry) = self.pending.iter_mut().find(|(end, _)| *end == next) {
            entry.1 = entry.1.saturating_sub(1);
        }
    }

    /// The furthest position that can be committed now, if it moved.
    pub fn ready(&mut self) -> Option<u64> {
        let mut position = None;
        while let Some(&(end, 0)) = self.pending.front() {
            position = Some(end);
            self.pending.pop_front();
        }
        let position = position.filter(|p| self.committed.is_none_or(|c| *p > c))?;
        self.committed = Some(position);
        Some(position)
    }

    /// Records taken but not yet done.
    pub fn in_flight(&self) -> usize {
        self.pending.iter().map(|(_, n)| n).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_only_past_batches_that_are_wholly_done() {
        let mut t = CommitTracker::default();
        t.add_batch(3, 2);
        t.add_batch(5, 1);
        t.done(5);
        assert_eq!(t.ready(), None, "the first batch is not done");
        t.done(3);
        assert_eq!(t.ready(), None);
        t.done(3);
        assert_eq!(t.ready(), Some(5));
        assert_eq!(t.ready(), None, "nothing new");
    }

    #[test]
    fn empty_batches_commit_at_once_when_nothing_is_before_them() {
        let mut t = CommitTracker::default();
        t.add_batch(10, 0);
        assert_eq!(t.ready(), Some(10));
        t.add_batch(11, 1);
        t.add_batch(20, 0);
        assert_eq!(t.ready(), None);
        assert_eq!(t.in_flight(), 1);
        t.done(11);
        assert_eq!(t.ready(), Some(20));
    }

    #[test]
    fn records_added_one_by_one_with_one_end_are_one_batch() {
        let mut t = CommitTracker::default();
        t.add_batch(7, 1);
        t.add_batch(7, 1);
        t.add_batch(7, 0);
        t.done(7);
        assert_eq!(t.ready(), None, "one of two is done");
        t.done(7);
        assert_eq!(t.ready(), Some(7));
    }

    #[test]
    fn an_unchanged_position_is_not_committed_twice() {
        let mut t = CommitTracker::default();
        t.add_batch(4, 0);
        assert_eq!(t.ready(), Some(4));
        t.add_batch(4, 0);
        assert_eq!(t.ready(), None);
    }
}
