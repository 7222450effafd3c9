//! The rate limiter every call to one provider passes: concurrency, requests and
//! tokens per minute, a pause while the quota is spent, and AIMD.
//!
//! - Concurrency and the per-minute limits keep us inside the provider's
//!   quota before it has to tell us (governor does the request bucket;
//!   tokens go by the server's own count, see [`crate::token_budget`]).
//! - When the provider does tell us (429 rate limit), the effective rate is
//!   halved at most once per cool-down, and every success adds a little back
//!   (additive increase, multiplicative decrease, as TCP does): repeated 429s
//!   lower the rate, quiet success restores it.
//! - A quota error pauses the limiter until the provider's quota returns: calls
//!   wait (no busy loop) and the agent, whose workers are all waiting, stops
//!   taking new questions.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;

use crate::token_budget::TokenBudget;
use tokio::time::Instant;

#[derive(Debug, Clone, PartialEq)]
pub struct RateConfig {
    /// Calls in flight at once, at full rate.
    pub concurrency: usize,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
    /// The effective rate never falls below this share of the configured one.
    pub min_share: f64,
    /// Each success adds this share back.
    pub increase: f64,
    /// At most one halving per this long: the 429s of calls already in flight
    /// describe the same overload.
    pub cooldown: Duration,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            requests_per_minute: None,
            tokens_per_minute: None,
            min_share: 0.1,
            increase: 0.05,
            cooldown: Duration::from_secs(1),
        }
    }
}

pub struct Limiter {
    config: RateConfig,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<TokenBudget>,
    state: Mutex<State>,
    /// Woken when a slot frees, the share grows or a pause ends.
    changed: Notify,
}

#[derive(Debug)]
struct State {
    in_flight: usize,
    /// The share of the configured rate in force, from `min_share` to 1.
    share: f64,
    last_decrease: Option<Instant>,
    paused_until: Option<Instant>,
}

/// A call slot; dropping it frees the slot.
pub struct Slot<'a> {
    limiter: &'a Limiter,
    /// Tokens reserved from the per-minute budget for this call.
    reserved: u32,
}

impl Slot<'_> {
    /// The call used `tokens` by the server's count: the token budget is
    /// charged that instead of the estimate reserved.
    pub fn settle(&mut self, tokens: u32) {
        if let Some(budget) = &self.limiter.tokens {
            budget.settle(self.reserved, tokens);
        }
        self.reserved = tokens;
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.limiter
            .state
            .lock()
            .expect("limiter poisoned")
            .in_flight -= 1;
        self.limiter.changed.notify_waiters();
    }
}

impl Limiter {
    pub fn new(config: RateConfig) -> Self {
        let per_minute =
            |n: u32| NonZeroU32::new(n).map(|n| RateLimiter::direct(Quota::per_minute(n)));
        let requests = config.requests_per_minute.and_then(per_minute);
        let tokens = config
            .tokens_per_minute
            .filter(|n| *n > 0)
            .map(TokenBudget::new);
        Self {
            config,
            requests,
            tokens,
            state: Mutex::new(State {
                in_flight: 0,
                share: 1.0,
                last_decrease: None,
                paused_until: None,
            }),
            changed: Notify::new(),
        }
    }

    /// Wait for a call slot and for the per-minute budgets to allow a call of
    /// about `tokens` tokens (an estimate: [`Slot::settle`] corrects it).
    pub async fn acquire(&self, tokens: u32) -> Slot<'_> {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let wait = {
                let mut state = self.state.lock().expect("limiter poisoned");
                let now = Instant::now();
                match state.paused_until {
                    Some(until) if until > now => Some(until),
                    _ => {
                        state.paused_until = None;
                        if state.in_flight < self.limit(state.share) {
                            state.in_flight += 1;
                            None
                        } else {
                            Some(now + Duration::from_secs(3600))
                        }
                    }
                }
            };
            match wait {
                None => break,
                Some(until) => {
                    let _ = tokio::time::timeout_at(until, notified).await;
                }
            }
        }
        let mut slot = Slot {
            limiter: self,
            reserved: 0,
        };
        let share = self.share();
        if let Some(limiter) = &self.requests {
            // A reduced share makes each call cost more cells of the bucket.
            let cells = NonZeroU32::new((1.0 / share).ceil() as u32).expect("at least one");
            let _ = limiter.until_n_ready(cells).await;
        }
        if let Some(budget) = &self.tokens {
            slot.reserved = budget.reserve(tokens).await;
        }
        slot
    }

    fn limit(&self, share: f64) -> usize {
        ((self.config.concurrency.max(1) as f64 * share).ceil() as usize).max(1)
    }

    pub fn share(&self) -> f64 {
        self.state.lock().expect("limiter poisoned").share
    }

    /// Calls that may be in flight now.
    pub fn concurrency_now(&self) -> usize {
        self.limit(self.share())
    }

    /// A call succeeded: add a little rate back.
    pub fn on_success(&self) {
        let mut state = self.state.lock().expect("limiter poisoned");
        if state.share < 1.0 {
            state.share = (state.share + self.config.increase).min(1.0);
            drop(state);
            self.changed.notify_waiters();
        }
    }

    /// The provider said we are too fast: halve the rate, once per cool-down.
    pub fn on_rate_limited(&self) {
        let mut state = self.state.lock().expect("limiter poisoned");
        let now = Instant::now();
        if state
            .last_decrease
            .is_none_or(|t| now >= t + self.config.cooldown)
        {
            state.share = (state.share / 2.0).max(self.config.min_share.clamp(0.01, 1.0));
            state.last_decrease = Some(now);
        }
    }

    /// The quota is spent until `until`: no call starts before then.
    pub fn pause_until(&self, until: Instant) {
        let mut state = self.state.lock().expect("limiter poisoned");
        if state.paused_until.is_none_or(|t| t < until) {
            state.paused_until = Some(until);
        }
    }

    /// When the current quota pause ends, if one is in force.
    pub fn paused_until(&self) -> Option<Instant> {
        let state = self.state.lock().expect("limiter poisoned");
        state.paused_until.filter(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn repeated_rate_limits_halve_the_concurrency_and_successes_restore_it() {
        let limiter = Limiter::new(RateConfig {
            concurrency: 8,
            cooldown: Duration::from_secs(1),
            ..RateConfig::default()
        });
        assert_eq!(limiter.concurrency_now(), 8);
        limiter.on_rate_limited();
        limiter.on_rate_limited(); // same overload, within the cool-down
        assert_eq!(limiter.concurrency_now(), 4);
        tokio::time::advance(Duration::from_secs(2)).await;
        limiter.on_rate_limited();
        assert_eq!(limiter.concurrency_now(), 2);
        for _ in 0..20 {
            limiter.on_success();
        }
        assert_eq!(limiter.concurrency_now(), 8);
    }

    #[tokio::test(start_paused = true)]
    async fn the_share_never_falls_below_its_floor() {
        let limiter = Limiter::new(RateConfig {
            concurrency: 10,
            min_share: 0.1,
            cooldown: Duration::ZERO,
            ..RateConfig::default()
        });
        for _ in 0..50 {
            limiter.on_rate_limited();
        }
        assert_eq!(limiter.concurrency_now(), 1);
        assert!((limiter.share() - 0.1).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_limiter_makes_callers_wait_until_a_slot_frees() {
        let limiter = Arc::new(Limiter::new(RateConfig {
            concurrency: 1,
            ..RateConfig::default()
        }));
        let first = limiter.acquire(1).await;
        let waiter = {
            let limiter = limiter.clone();
            tokio::spawn(async move {
                let _slot = limiter.acquire(1).await;
                Instant::now()
            })
        };
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished());
        let released = Instant::now();
        drop(first);
        assert_eq!(waiter.await.unwrap(), released);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quota_pause_holds_every_call_until_it_ends() {
        let limiter = Limiter::new(RateConfig::default());
        let start = Instant::now();
        limiter.pause_until(start + Duration::from_secs(30));
        limiter.pause_until(start + Duration::from_secs(10)); // an earlier end never shortens it
        assert!(limiter.paused_until().is_some());
        let _slot = limiter.acquire(1).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(30));
        assert!(limiter.paused_until().is_none());
    }
}
