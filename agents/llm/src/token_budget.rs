//! The tokens-per-minute budget, charged with what the server counted.
//!
//! A call cannot know its size before it is made, so it reserves an estimate
//! (four characters a token of prompt, plus the most the reply may take)
//! and, once the server reports its usage (`usage.prompt_tokens` and
//! `completion_tokens`), the reservation is settled to that count: the
//! difference is given back, or charged as a debt that later calls wait
//! out. So the budget follows the provider's own count, not our guess, and
//! a call whose server reports no usage keeps its estimate.
//!
//! A token bucket refilled continuously at the per-minute rate, holding at
//! most a minute's worth; tokio's clock, so tests can pause it.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

pub struct TokenBudget {
    per_minute: f64,
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Tokens available; negative while a settled call's usage is a debt.
    level: f64,
    at: Instant,
}

impl TokenBudget {
    /// A budget of `per_minute` tokens a minute (at least one), starting full.
    pub fn new(per_minute: u32) -> Self {
        let per_minute = f64::from(per_minute.max(1));
        Self {
            per_minute,
            state: Mutex::new(Bucket {
                level: per_minute,
                at: Instant::now(),
            }),
        }
    }

    /// Wait until the budget holds `tokens` (at most a minute's worth) and
    /// take them; returns what was taken, to settle later.
    pub async fn reserve(&self, tokens: u32) -> u32 {
        let need = f64::from(tokens).min(self.per_minute);
        loop {
            let short = {
                let mut bucket = self.refilled();
                if bucket.level >= need {
                    bucket.level -= need;
                    return need as u32;
                }
                need - bucket.level
            };
            let wait = Duration::from_secs_f64(short * 60.0 / self.per_minute);
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }

    /// A call that reserved `reserved` tokens used `used`: give back the
    /// difference, or charge it.
    pub fn settle(&self, reserved: u32, used: u32) {
        let mut bucket = self.refilled();
        bucket.level += f64::from(reserved) - f64::from(used);
        bucket.level = bucket.level.min(self.per_minute);
    }

    /// Tokens available now (negative while in debt).
    pub fn available(&self) -> f64 {
        self.refilled().level
    }

    fn refilled(&self) -> std::sync::MutexGuard<'_, Bucket> {
        let mut bucket = self.state.lock().expect("token budget poisoned");
        let now = Instant::now();
        let gained = (now - bucket.at).as_secs_f64() * self.per_minute / 60.0;
        bucket.level = (bucket.level + gained).min(self.per_minute);
        bucket.at = now;
        bucket
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_is_charged_the_usage_the_server_reported_not_the_estimate() {
        let budget = TokenBudget::new(600); // 10 tokens a second
        let start = Instant::now();
        let reserved = budget.reserve(300).await;
        assert_eq!(reserved, 300);
        // The server counted 500: 200 more than the estimate are charged.
        budget.settle(reserved, 500);
        assert_eq!(budget.available(), 100.0);
        let _ = budget.reserve(300).await;
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(20),
            "200 tokens short at 10 a second"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn usage_below_the_estimate_is_given_back() {
        let budget = TokenBudget::new(600);
        let reserved = budget.reserve(600).await;
        budget.settle(reserved, 50);
        assert_eq!(budget.available(), 550.0);
        let start = Instant::now();
        let _ = budget.reserve(500).await;
        assert_eq!(Instant::now(), start, "no wait: the estimate came back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_usage_above_a_minute_is_a_debt_waited_out() {
        let budget = TokenBudget::new(60); // one token a second
        let reserved = budget.reserve(10).await;
        budget.settle(reserved, 130); // 70 in debt after the full 60
        assert_eq!(budget.available(), -70.0);
        let start = Instant::now();
        let _ = budget.reserve(1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(71));
    }
}
