//! Summary figures over the store, for `answerloop answers stats` and `run`.

use answerloop_schema::Verdict;
use serde::Serialize;

use crate::{Store, StoreError};

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    pub stored: usize,
    pub accepted: usize,
    pub exhausted: usize,
    pub dead_letters: usize,
    /// Mean score of the stored answers.
    pub mean_score_stored: f64,
    /// Mean number of scored answers a stored question took.
    pub mean_attempts: f64,
    /// Stored answers per attempt that produced them (index 0 = attempt 1).
    pub stored_by_attempt: Vec<usize>,
}

impl Store {
    pub fn stats(&self) -> Result<Stats, StoreError> {
        let mut stats = Stats {
            dead_letters: self.dead_letter_count(),
            ..Stats::default()
        };
        let (mut score_sum, mut attempts_sum) = (0.0, 0.0);
        for answer in self.answers() {
            let answer = answer?;
            stats.stored += 1;
            match answer.verdict {
                Verdict::Accept => stats.accepted += 1,
                _ => stats.exhausted += 1,
            }
            score_sum += f64::from(answer.score);
            attempts_sum += f64::from(answer.attempts);
            let slot = answer.attempt.max(1) as usize - 1;
            if stats.stored_by_attempt.len() <= slot {
                stats.stored_by_attempt.resize(slot + 1, 0);
            }
            stats.stored_by_attempt[slot] += 1;
        }
        if stats.stored > 0 {
            stats.mean_score_stored = score_sum / stats.stored as f64;
            stats.mean_attempts = attempts_sum / stats.stored as f64;
        }
        Ok(stats)
    }
}
