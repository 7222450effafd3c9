//! The circuit breaker's decisions, as a pure state machine over an injected
//! clock: whether a call may go to a provider now, and what a call's result
//! does to the circuit.
//!
//! Why: without it an outage turns every question in flight into a dead
//! letter, because each spends its retries against a provider that cannot
//! answer. With it, consecutive connection failures and overload replies
//! *open* the circuit; while it is open no call is made (so no question
//! spends an attempt or a retry), then one *half-open* probe at a time finds
//! out whether the provider is back. Each opening that follows a failed
//! probe lasts longer (base × factor^n, capped), as failsafe-style breakers
//! and LiteLLM's cooldowns do.
//!
//! This module never sleeps, reads a clock or does I/O: callers pass `now`
//! (see [`crate::circuit`] for the shared, awaiting wrapper).

use std::time::Duration;

use tokio::time::Instant;

/// The breaker's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerConfig {
    /// Consecutive unhealthy calls that open the circuit; 0 turns it off.
    pub failure_threshold: u32,
    /// How long the circuit stays open the first time.
    pub open_base: Duration,
    /// Each opening after a failed probe lasts this many times the last.
    pub open_factor: f64,
    /// No opening lasts longer than this.
    pub open_cap: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_base: Duration::from_secs(5),
            open_factor: 2.0,
            open_cap: Duration::from_secs(30),
        }
    }
}

/// The circuit's state, as users of breakers name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls go through; failures are counted.
    Closed,
    /// No calls until the open period ends.
    Open,
    /// One probe call at a time decides whether to close or open again.
    HalfOpen,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }

    /// The value of the `answerloop_llm_circuit_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            CircuitState::Closed => 0,
            CircuitState::Open => 1,
            CircuitState::HalfOpen => 2,
        }
    }
}

/// Whether a call may go now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Call; `probe` when this call is the half-open probe, whose result
    /// must be reported with `probe = true`.
    Call { probe: bool },
    /// Open: nothing before this time.
    WaitUntil(Instant),
    /// Half-open and the probe is out: wait for its result.
    WaitForProbe,
}

/// What a call's result says of the provider's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// The provider answered (an answer, or a reply that is the request's
    /// fault or the account's: 4xx, quota, malformed): it is up.
    Up,
    /// A connection failure, a time-out or an overload reply (5xx).
    Down,
    /// Says nothing either way (a rate limit that names its wait: pacing,
    /// which the rate limiter handles).
    Unknown,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe_out: bool },
}

/// One provider's circuit.
#[derive(Debug, Clone)]
pub struct Breaker {
    config: BreakerConfig,
    inner: Inner,
    /// Openings since the circuit was last closed: the growth exponent.
    trips: u32,
    /// When the circuit left `Closed`, while it is not closed.
    open_since: Option<Instant>,
    /// Time spent not closed, over closed spells.
    open_total: Duration,
    /// Times the circuit opened.
    opened: u64,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
            trips: 0,
            open_since: None,
            open_total: Duration::ZERO,
            opened: 0,
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.inner {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Whether a call may go at `now`. An open circuit whose period is
    /// over turns half-open and hands out the probe.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.inner {
            Inner::Closed { .. } => Admission::Call { probe: false },
            Inner::Open { until } if now < until => Admission::WaitUntil(until),
            Inner::Open { .. } | Inner::HalfOpen { probe_out: false } => {
                self.inner = Inner::HalfOpen { probe_out: true };
                Admission::Call { probe: true }
            }
            Inner::HalfOpen { probe_out: true } => Admission::WaitForProbe,
        }
    }

    /// Whether [`Breaker::admit`] would let a call go at `now`, without
    /// handing out the probe.
    pub fn would_admit(&self, now: Instant) -> bool {
        match self.inner {
            Inner::Closed { .. } | Inner::HalfOpen { probe_out: false } => true,
            Inner::Open { until } => now >= until,
            Inner::HalfOpen { probe_out: true } => false,
        }
    }

    /// When an open circuit's period ends, if it is open.
    pub fn open_until(&self) -> Option<Instant> {
        match self.inner {
            Inner::Open { until } => Some(until),
            _ => None,
        }
    }

    /// A call admitted with `probe` finished at `now` showing `health`.
    pub fn record(&mut self, now: Instant, probe: bool, health: Health) {
        match (self.inner, health) {
            // The probe learnt nothing: let the next call probe.
            (Inner::HalfOpen { probe_out: true }, Health::Unknown) if probe => {
                self.inner = Inner::HalfOpen { probe_out: false };
            }
            (_, Health::Unknown) => {}
            (Inner::Closed { .. }, Health::Up) => self.inner = Inner::Closed { failures: 0 },
            (Inner::Closed { failures }, Health::Down) => {
                let failures = failures + 1;
                if self.config.failure_threshold > 0 && failures >= self.config.failure_threshold {
                    self.open(now);
                } else {
                    self.inner = Inner::Closed { failures };
                }
            }
            (Inner::HalfOpen { .. }, Health::Up) if probe => self.close(now),
            (Inner::HalfOpen { .. }, Health::Down) if probe => self.open(now),
            // Calls admitted before the circuit opened report late; only
            // the probe decides a half-open circuit.
            _ => {}
        }
    }

    /// How long the next opening lasts: base × factor^(openings since the
    /// last close), capped.
    fn open_period(&self) -> Duration {
        let grown = self.config.open_base.as_secs_f64()
            * self.config.open_factor.max(1.0).powi(self.trips as i32);
        Duration::from_secs_f64(grown.min(self.config.open_cap.as_secs_f64()))
    }

    fn open(&mut self, now: Instant) {
        self.inner = Inner::Open {
            until: now + self.open_period(),
        };
        self.trips = self.trips.saturating_add(1);
        self.opened += 1;
        self.open_since.get_or_insert(now);
    }

    fn close(&mut self, now: Instant) {
        self.inner = Inner::Closed { failures: 0 };
        self.trips = 0;
        if let Some(since) = self.open_since.take() {
            self.open_total += now.saturating_duration_since(since);
        }
    }

    /// Time the circuit has spent open or half-open, up to `now`.
    pub fn open_time(&self, now: Instant) -> Duration {
        self.open_total
            + self
                .open_since
                .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }

    /// Times the circuit opened.
    pub fn opened(&self) -> u64 {
        self.opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig {
            failure_threshold: 3,
            open_base: Duration::from_secs(5),
            open_factor: 2.0,
            open_cap: Duration::from_secs(12),
        })
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_between_resets_the_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record(t0, false, Health::Down);
        b.record(t0, false, Health::Down);
        b.record(t0, false, Health::Up);
        b.record(t0, false, Health::Down);
        b.record(t0, false, Health::Down);
        assert_eq!(b.state(), CircuitState::Closed);
        b.record(t0, false, Health::Down);
        assert_eq!(b.state(), CircuitState::Open);
        assert_eq!(b.admit(t0), Admission::WaitUntil(t0 + secs(5)));
        assert_eq!(b.opened(), 1);
    }

    #[test]
    fn pacing_says_nothing_and_does_not_reset_the_count() {
        let t0 = Instant::now();
        let mut b = breaker();
        b.record(t0, false, Health::Down);
        b.record(t0, false, Health::Down);
        b.record(t0, false, Health::Unknown);
        b.record(t0, false, Health::Down);
        assert_eq!(b.state(), CircuitState::Open);
    }

    #[test]
    fn one_probe_at_a_time_when_the_open_period_ends() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(t0, false, Health::Down);
        }
        assert!(!b.would_admit(t0 + secs(4)));
        assert!(b.would_admit(t0 + secs(5)));
        assert_eq!(b.admit(t0 + secs(5)), Admission::Call { probe: true });
        assert_eq!(b.state(), CircuitState::HalfOpen);
        assert_eq!(b.admit(t0 + secs(5)), Admission::WaitForProbe);
        // A call admitted before the circuit opened reports late: no change.
        b.record(t0 + secs(6), false, Health::Up);
        assert_eq!(b.state(), CircuitState::HalfOpen);
        b.record(t0 + secs(7), true, Health::Up);
        assert_eq!(b.state(), CircuitState::Closed);
        assert_eq!(b.open_time(t0 + secs(100)), secs(7));
    }

    #[test]
    fn failed_probes_grow_the_open_period_up_to_the_cap_and_a_close_resets_it() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(t0, false, Health::Down);
        }
        let mut now = t0;
        let mut periods = Vec::new();
        for _ in 0..4 {
            let until = b.open_until().unwrap();
            periods.push(until - now);
            now = until;
            assert_eq!(b.admit(now), Admission::Call { probe: true });
            b.record(now, true, Health::Down);
        }
        assert_eq!(periods, [secs(5), secs(10), secs(12), secs(12)]);
        assert_eq!(b.opened(), 5);
        let until = b.open_until().unwrap();
        assert_eq!(b.admit(until), Admission::Call { probe: true });
        b.record(until, true, Health::Up);
        assert_eq!(b.open_time(until), until - t0);
        for _ in 0..3 {
            b.record(until, false, Health::Down);
        }
        assert_eq!(b.open_until(), Some(until + secs(5)), "growth starts over");
    }

    #[test]
    fn a_probe_that_learns_nothing_frees_the_probe_slot() {
        let t0 = Instant::now();
        let mut b = breaker();
        for _ in 0..3 {
            b.record(t0, false, Health::Down);
        }
        assert_eq!(b.admit(t0 + secs(5)), Admission::Call { probe: true });
        b.record(t0 + secs(5), true, Health::Unknown);
        assert_eq!(b.admit(t0 + secs(5)), Admission::Call { probe: true });
    }

    #[test]
    fn a_threshold_of_zero_never_opens() {
        let t0 = Instant::now();
        let mut b = Breaker::new(BreakerConfig {
            failure_threshold: 0,
            ..BreakerConfig::default()
        });
        for _ in 0..1000 {
            b.record(t0, false, Health::Down);
        }
        assert_eq!(b.admit(t0), Admission::Call { probe: false });
        assert_eq!(b.open_time(t0 + secs(9)), Duration::ZERO);
    }
}
