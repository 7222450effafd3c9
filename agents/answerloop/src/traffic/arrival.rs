//! When each question arrives: the arrival process of a load generator.
//!
//! Times are offsets from the start, computed from a seed, so a run is
//! repeatable and a slow producer catches up instead of drifting.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Arrival {
    /// Evenly spaced, `1 / rate` apart.
    Constant,
    /// A Poisson process: exponential gaps with mean `1 / rate`.
    Poisson,
    /// Bursts of `burst` questions at once, spaced so the mean rate is `rate`.
    Burst,
}

/// The arrival process as the command line sets it.
#[derive(Debug, Clone, clap::Args)]
pub struct ScheduleArgs {
    /// Questions per second produced by traffic; default: as fast as taken.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, value_enum, default_value = "poisson")]
    pub arrival: Arrival,
    /// Questions per burst with --arrival burst.
    #[arg(long, default_value_t = 10)]
    pub burst: u32,
    /// Seed for the arrival process.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Default for ScheduleArgs {
    /// As fast as the broker takes them.
    fn default() -> Self {
        Self {
            rate: None,
            arrival: Arrival::Constant,
            burst: 1,
            seed: 0,
        }
    }
}

impl ScheduleArgs {
    pub fn schedule(&self) -> Schedule {
        Schedule::new(self.arrival, self.rate, self.burst, self.seed)
    }
}

/// The arrival offsets for one run.
pub struct Schedule {
    arrival: Arrival,
    /// Questions per second; `None` sends as fast as the broker takes them.
    rate: Option<f64>,
    burst: u32,
    rng: StdRng,
    sent: u64,
    elapsed: Duration,
}

impl Schedule {
    pub fn new(arrival: Arrival, rate: Option<f64>, burst: u32, seed: u64) -> Self {
        Self {
            arrival,
            rate: rate.filter(|r| r.is_finite() && *r > 0.0),
            burst: burst.max(1),
            rng: StdRng::seed_from_u64(seed),
            sent: 0,
            elapsed: Duration::ZERO,
        }
    }

    /// The offset from the start at which the next question is due.
    pub fn next_offset(&mut self) -> Duration {
        let Some(rate) = self.rate else {
            return Duration::ZERO;
        };
        let gap = match self.arrival {
            Arrival::Constant if self.sent == 0 => 0.0,
            Arrival::Constant => 1.0 / rate,
            Arrival::Poisson => Exp::new(rate)
                .expect("rate is positive")
                .sample(&mut self.rng),
            Arrival::Burst if self.sent.is_multiple_of(u64::from(self.burst)) && self.sent > 0 => {
                f64::from(self.burst) / rate
            }
            Arrival::Burst => 0.0,
        };
        self.sent += 1;
        self.elapsed += Duration::from_secs_f64(gap);
        self.elapsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(
        arrival: Arrival,
        rate: Option<f64>,
        burst: u32,
        seed: u64,
        n: usize,
    ) -> Vec<Duration> {
        let mut s = Schedule::new(arrival, rate, burst, seed);
        (0..n).map(|_| s.next_offset()).collect()
    }

    #[test]
    fn constant_arrivals_are_evenly_spaced() {
        let o = offsets(Arrival::Constant, Some(4.0), 1, 0, 5);
        assert_eq!(o[0], Duration::ZERO);
        assert_eq!(o[4], Duration::from_secs(1));
    }

    #[test]
    fn poisson_arrivals_have_the_mean_rate_and_repeat_with_the_seed() {
        let o = offsets(Arrival::Poisson, Some(100.0), 1, 7, 20_000);
        let mean_rate = 20_000.0 / o.last().unwrap().as_secs_f64();
        assert!((mean_rate - 100.0).abs() < 3.0, "mean rate {mean_rate}");
        assert_eq!(o, offsets(Arrival::Poisson, Some(100.0), 1, 7, 20_000));
        assert_ne!(o, offsets(Arrival::Poisson, Some(100.0), 1, 8, 20_000));
    }

    #[test]
    fn bursts_arrive_together_at_the_mean_rate() {
        let o = offsets(Arrival::Burst, Some(10.0), 5, 0, 10);
        assert!(o[..5].iter().all(|d| *d == Duration::ZERO));
        assert!(o[5..].iter().all(|d| *d == Duration::from_millis(500)));
    }

    #[test]
    fn no_rate_means_no_waiting() {
        assert!(offsets(Arrival::Poisson, None, 1, 0, 3)
            .iter()
            .all(|d| d.is_zero()));
    }
}
