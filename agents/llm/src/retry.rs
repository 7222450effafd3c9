//! How long to wait before calling again, and whether retrying is still
//! worth it.
//!
//! - [`Backoff`]: exponential delays from `backon` (base, factor, cap), with
//!   *full* jitter (a uniform draw from zero to the delay, as AWS recommends
//!   for many clients sharing one server) on top: backon's own jitter only
//!   adds to the delay, so clients that failed together retry together. A
//!   server's `Retry-After` is a floor.
//! - [`RetryBudget`]: tower's `TpsBudget`, so retries stay a bounded share of
//!   calls over a sliding window and an outage does not become a retry storm.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use tower::retry::budget::{Budget, TpsBudget};

#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// The first delay's envelope.
    pub base: Duration,
    /// Each retry's envelope is the last one times this.
    pub factor: f32,
    /// No envelope grows past this.
    pub cap: Duration,
    /// Retries of one call sequence before the question is dead-lettered.
    pub max_retries: u32,
    /// Retries may be at most this share of first calls over `budget_window`...
    pub budget_ratio: f32,
    /// ...plus this many retries a second, so a quiet agent can still retry.
    pub budget_min_per_sec: u32,
    pub budget_window: Duration,
    /// How long a quota error parks a question when the provider names no delay.
    pub quota_delay: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(500),
            factor: 2.0,
            cap: Duration::from_secs(30),
            max_retries: 6,
            budget_ratio: 0.5,
            budget_min_per_sec: 5,
            budget_window: Duration::from_secs(10),
            quota_delay: Duration::from_secs(60),
        }
    }
}

/// The delays of one call sequence.
pub struct Backoff {
    envelopes: backon::ExponentialBackoff,
}

impl Backoff {
    pub fn new(config: &RetryConfig) -> Self {
        let envelopes = ExponentialBuilder::default()
            .with_min_delay(config.base)
            .with_factor(config.factor.max(1.0))
            .with_max_delay(config.cap)
            .with_max_times(config.max_retries as usize)
            .build();
        Self { envelopes }
    }

    /// The wait before the next retry, at least `server_hint` when the server
    /// named one; `None` once the retries are used up.
    pub fn next_delay(
        &mut self,
        server_hint: Option<Duration>,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        let envelope = self.envelopes.next()?;
        let jittered = envelope.mul_f64(rng.gen_range(0.0..=1.0));
        Some(server_hint.map_or(jittered, |hint| hint.max(jittered)))
    }
}

/// Retries as a share of calls over a sliding window.
pub struct RetryBudget(TpsBudget);

impl RetryBudget {
    pub fn new(config: &RetryConfig) -> Self {
        let window = config
            .budget_window
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        Self(TpsBudget::new(
            window,
            config.budget_min_per_sec,
            config.budget_ratio.clamp(0.0, 1000.0),
        ))
    }

    /// A first call was made: it earns retry allowance.
    pub fn deposit(&self) {
        self.0.deposit();
    }

    /// Spend allowance on a retry; false when the budget is spent.
    pub fn withdraw(&self) -> bool {
        self.0.withdraw()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn config() -> RetryConfig {
        RetryConfig {
            base: Duration::from_millis(100),
            factor: 2.0,
            cap: Duration::from_millis(1000),
            max_retries: 5,
            ..RetryConfig::default()
        }
    }

    #[test]
    fn delays_stay_under_a_doubling_envelope_and_stop_at_the_cap_count() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..200 {
            let mut b = Backoff::new(&config());
            let delays: Vec<Duration> =
                std::iter::from_fn(|| b.next_delay(None, &mut rng)).collect();
            assert_eq!(delays.len(), 5);
            for (d, envelope_ms) in delays.iter().zip([100, 200, 400, 800, 1000]) {
                assert!(
                    *d <= Duration::from_millis(envelope_ms),
                    "{d:?} over {envelope_ms}ms"
                );
            }
        }
    }

    #[test]
    fn full_jitter_spreads_delays_across_the_whole_envelope() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let firsts: Vec<f64> = (0..1000)
            .map(|_| {
                Backoff::new(&config())
                    .next_delay(None, &mut rng)
                    .unwrap()
                    .as_secs_f64()
            })
            .collect();
        let below_half = firsts.iter().filter(|d| **d < 0.05).count();
        assert!(
            (400..600).contains(&below_half),
            "{below_half} of 1000 below half the envelope"
        );
    }

    #[test]
    fn a_server_hint_is_a_floor() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let mut b = Backoff::new(&config());
        assert_eq!(
            b.next_delay(Some(Duration::from_secs(7)), &mut rng),
            Some(Duration::from_secs(7))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_retries_in_proportion_to_calls() {
        let budget = RetryBudget::new(&RetryConfig {
            budget_ratio: 0.5,
            budget_min_per_sec: 0,
            ..RetryConfig::default()
        });
        for _ in 0..20 {
            budget.deposit();
        }
        let allowed = (0..100).take_while(|_| budget.withdraw()).count();
        assert!(
            (8..=11).contains(&allowed),
            "{allowed} retries for 20 calls at 50%"
        );
    }
}
