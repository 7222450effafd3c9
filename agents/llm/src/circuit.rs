//! One provider's circuit breaker as the agent shares it: the pure
//! [`Breaker`] behind a lock, read with the clock, with its transitions
//! logged, and readable as a snapshot for summaries and `/metrics`.
//!
//! The decisions live in [`crate::breaker`]; this module only applies them
//! at `Instant::now()` and says what a call's result tells of the provider.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::breaker::{Admission, Breaker, BreakerConfig, CircuitState, Health};
use crate::{Completion, ErrorClass, LlmError};

/// A provider's circuit, shared by every call to it.
#[derive(Debug)]
pub struct Circuit {
    /// The provider as summaries and metrics name it (`openai`, `llm-sim#2`).
    label: String,
    breaker: Mutex<Breaker>,
}

/// What a circuit has come to, at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitSnapshot {
    pub label: String,
    pub state: CircuitState,
    /// Times it opened.
    pub opened: u64,
    /// Time spent open or half-open.
    pub open_time: Duration,
}

impl Circuit {
    pub fn new(label: impl Into<String>, config: BreakerConfig) -> Self {
        Self {
            label: label.into(),
            breaker: Mutex::new(Breaker::new(config)),
        }
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a call may go now (an expired open period hands out the probe).
    pub fn admit(&self) -> Admission {
        let mut breaker = self.lock();
        let before = breaker.state();
        let admission = breaker.admit(Instant::now());
        if before != breaker.state() {
            tracing::info!(provider = %self.label, "circuit half-open: probing the provider");
        }
        admission
    }

    /// Whether a call could go now, without taking the probe.
    pub fn would_admit(&self) -> bool {
        self.lock().would_admit(Instant::now())
    }

    /// When the open period ends, while the circuit is open.
    pub fn open_until(&self) -> Option<Instant> {
        self.lock().open_until()
    }

    /// Report a call admitted with `probe`; true when the state changed.
    pub fn record(&self, probe: bool, health: Health) -> bool {
        let mut breaker = self.lock();
        let before = breaker.state();
        let now = Instant::now();
        breaker.record(now, probe, health);
        let after = breaker.state();
        match (before, after) {
            (b, a) if b == a => return false,
            (_, CircuitState::Open) => {
                let wait = breaker.open_until().map_or(Duration::ZERO, |u| u - now);
                tracing::warn!(
                    provider = %self.label,
                    open_for_ms = wait.as_millis() as u64,
                    "circuit open: the provider is failing; no calls until the probe"
                );
            }
            (_, CircuitState::Closed) => tracing::info!(
                provider = %self.label,
                was_open_ms = breaker.open_time(now).as_millis() as u64,
                "circuit closed: the provider answers again"
            ),
            _ => {}
        }
        true
    }

    pub fn snapshot(&self) -> CircuitSnapshot {
        let breaker = self.lock();
        CircuitSnapshot {
            label: self.label.clone(),
            state: breaker.state(),
            opened: breaker.opened(),
            open_time: breaker.open_time(Instant::now()),
        }
    }
}

/// What a call's result says of the provider: connection failures,
/// time-outs and 5xx are `Down`; a rate limit that names its wait is
/// pacing (`Unknown`); any other reply shows it is up.
pub fn health(result: &Result<Completion, LlmError>) -> Health {
    match result {
        Ok(_) => Health::Up,
        Err(e) if e.class == ErrorClass::Overload => {
            if e.status == Some(429) && e.retry_after.is_some() {
                Health::Unknown
            } else {
                Health::Down
            }
        }
        Err(_) => Health::Up,
    }
}
