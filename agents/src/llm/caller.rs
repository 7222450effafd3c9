//! One question's calls to the model: through the gate, retried by error
//! class, within the caps. What comes out is an [`Outcome`] the agent turns
//! into a record; the policy lives here, the plumbing in the agent.
//!
//! - overload (5xx, 429 rate limit, time-outs, malformed replies): back off
//!   with full jitter, the server's `Retry-After` as a floor, while the retry
//!   budget and the per-call retry cap allow;
//! - quota: the gate pauses and the question is to be parked;
//! - permanent (400, 401, 403, 404), or a cap reached: give up with the reason.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::FailureClass;

use super::gate::{Gate, RateConfig};
use super::retry::{Backoff, RetryBudget, RetryConfig};
use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};
use crate::metrics::metrics;

/// What the calls came to.
#[derive(Debug)]
pub enum Outcome {
    Answered {
        completion: Completion,
        latency: Duration,
    },
    /// The provider's quota is spent: try again after this long.
    Park(Duration),
    /// No more calls for this question.
    GiveUp {
        class: FailureClass,
        reason: String,
        status: Option<u16>,
    },
}

/// What the calls did, for summaries, benchmarks and metrics.
#[derive(Debug, Default)]
pub struct LlmStats {
    pub calls: AtomicU64,
    pub answers: AtomicU64,
    /// Failed calls by [`ErrorClass`], in [`ErrorClass::ALL`] order.
    pub failures_by_class: [AtomicU64; 4],
    pub retries: AtomicU64,
    /// Sum of the backoff delays slept, in milliseconds.
    pub retry_delay_ms: AtomicU64,
    pub deferred: AtomicU64,
    pub dead_letters: AtomicU64,
}

impl LlmStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn failures_of(&self, class: ErrorClass) -> u64 {
        Self::get(&self.failures_by_class[class.index()])
    }

    /// Failed calls by class name, every class.
    pub fn failure_counts(&self) -> Vec<(&'static str, u64)> {
        ErrorClass::ALL
            .iter()
            .map(|c| (c.as_str(), self.failures_of(*c)))
            .collect()
    }

    /// Failed calls of every class.
    pub fn failures(&self) -> u64 {
        self.failures_by_class.iter().map(Self::get).sum()
    }
}

pub struct Caller {
    provider: Arc<dyn Provider>,
    gate: Gate,
    budget: RetryBudget,
    retry: RetryConfig,
    /// LLM calls a question may take in all.
    max_llm_attempts: u32,
    pub stats: Arc<LlmStats>,
}

impl Caller {
    pub fn new(
        provider: Arc<dyn Provider>,
        rate: RateConfig,
        retry: RetryConfig,
        max_llm_attempts: u32,
        stats: Arc<LlmStats>,
    ) -> Self {
        Self {
            provider,
            gate: Gate::new(rate),
            budget: RetryBudget::new(&retry),
            retry,
            max_llm_attempts,
            stats,
        }
    }

    pub fn provider(&self) -> &dyn Provider {
        self.provider.as_ref()
    }

    /// Call until answered, parked or given up. `llm_attempts` is the
    /// question's running count of calls, capped at `max_llm_attempts`;
    /// `failed_calls` its failed calls by error class.
    pub async fn call(
        &self,
        request: &ChatRequest,
        llm_attempts: &mut u32,
        failed_calls: &mut BTreeMap<String, u32>,
    ) -> Outcome {
        let mut backoff = Backoff::new(&self.retry);
        let mut retried = 0u32;
        loop {
            if *llm_attempts >= self.max_llm_attempts {
                let reason = format!(
                    "reached the cap of {} LLM calls for one question",
                    self.max_llm_attempts
                );
                return Outcome::GiveUp {
                    class: FailureClass::Cap,
                    reason,
                    status: None,
                };
            }
            let started = Instant::now();
            let result = {
                let _slot = self.gate.acquire(estimate_tokens(request)).await;
                *llm_attempts += 1;
                LlmStats::add(&self.stats.calls, 1);
                if retried == 0 {
                    self.budget.deposit();
                }
                let result = self.provider.complete(request).await;
                // Tell the gate before the slot frees, so no waiting call
                // slips out between a quota error and the pause it causes.
                self.inform_gate(&result);
                result
            };
            let error = match result {
                Ok(completion) => {
                    LlmStats::add(&self.stats.answers, 1);
                    record_call(started, "ok", "");
                    return Outcome::Answered {
                        completion,
                        latency: started.elapsed(),
                    };
                }
                Err(error) => error,
            };
            LlmStats::add(&self.stats.failures_by_class[error.class.index()], 1);
            record_call(started, "error", error.class.as_str());
            *failed_calls
                .entry(error.class.as_str().to_string())
                .or_default() += 1;
            tracing::debug!(%error, "LLM call failed");
            match error.class {
                ErrorClass::Permanent => return give_up(&error, retried),
                ErrorClass::Quota => return Outcome::Park(self.quota_delay(&error)),
                ErrorClass::Overload | ErrorClass::Malformed => {
                    // A 429 that names its wait is pacing, not a storm: it
                    // does not spend the retry budget.
                    let paced = error.status == Some(429) && error.retry_after.is_some();
                    if !paced && !self.budget.withdraw() {
                        let reason = format!(
                            "retry budget spent (too many retries across all questions); last error: {error}"
                        );
                        return Outcome::GiveUp {
                            class: FailureClass::Cap,
                            reason,
                            status: error.status,
                        };
                    }
                    let Some(delay) =
                        backoff.next_delay(error.retry_after, &mut rand::thread_rng())
                    else {
                        return give_up(&error, retried);
                    };
                    retried += 1;
                    LlmStats::add(&self.stats.retries, 1);
                    LlmStats::add(&self.stats.retry_delay_ms, delay.as_millis() as u64);
                    metrics().llm_retries.inc();
                    metrics()
                        .llm_retry_delay_seconds
                        .observe(delay.as_secs_f64());
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Success adds rate back; a rate limit halves it; a spent quota pauses it.
    fn inform_gate(&self, result: &Result<Completion, LlmError>) {
        match result {
            Ok(_) => self.gate.on_success(),
            Err(e) if e.class == ErrorClass::Quota => {
                self.gate
                    .pause_until(tokio::time::Instant::now() + self.quota_delay(e));
            }
            Err(e) if e.status == Some(429) => self.gate.on_rate_limited(),
            Err(_) => {}
        }
    }

    /// How long a quota error parks: the provider's word, else the configured delay.
    fn quota_delay(&self, error: &LlmError) -> Duration {
        error.retry_after.unwrap_or(self.retry.quota_delay)
    }
}

/// A call that failed for good.
fn give_up(error: &LlmError, retries: u32) -> Outcome {
    let class = match error.class {
        ErrorClass::Overload => FailureClass::Overload,
        ErrorClass::Quota => FailureClass::Quota,
        ErrorClass::Permanent | ErrorClass::Malformed => FailureClass::Permanent,
    };
    let reason = match retries {
        0 => error.to_string(),
        n => format!("gave up after {n} retries: {error}"),
    };
    Outcome::GiveUp {
        class,
        reason,
        status: error.status,
    }
}

/// A rough token count for the per-minute token budget: four characters a
/// token for the prompt, plus the most the reply may take.
fn estimate_tokens(request: &ChatRequest) -> u32 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    (chars / 4) as u32 + request.max_tokens
}

/// One finished LLM call, in the process's metrics.
fn record_call(started: Instant, outcome: &'static str, class: &'static str) {
    let m = metrics();
    m.llm_call_seconds.observe(started.elapsed().as_secs_f64());
    m.llm_calls
        .get_or_create(&[
            ("outcome", outcome.to_string()),
            ("class", class.to_string()),
        ])
        .inc();
}
