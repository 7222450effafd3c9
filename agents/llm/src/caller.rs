//! One question's calls to the model: through the rate limiter, retried by
//! error class, within the caps. What comes out is a [`CallOutcome`] the
//! agent turns into a record; the policy lives here, the plumbing in the
//! agent.
//!
//! - overload (5xx, 429 rate limit, time-outs, malformed replies): back off
//!   with full jitter, the server's `Retry-After` as a floor, while the retry
//!   budget and the per-call retry cap allow;
//! - quota: the limiter pauses and the question is to be parked;
//! - permanent (400, 401, 403, 404), or a cap reached: give up with the reason.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::FailureClass;

use super::limiter::{Limiter, RateConfig};
use super::retry::{Backoff, RetryBudget, RetryConfig};
use super::stats::LlmStats;
use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};

/// What one question's calls came to.
#[derive(Debug)]
pub enum CallOutcome {
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

pub struct Caller {
    provider: Arc<dyn Provider>,
    limiter: Limiter,
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
            limiter: Limiter::new(rate),
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
    ) -> CallOutcome {
        let mut backoff = Backoff::new(&self.retry);
        let mut retried = 0u32;
        loop {
            if *llm_attempts >= self.max_llm_attempts {
                let reason = format!(
                    "reached the cap of {} LLM calls for one question",
                    self.max_llm_attempts
                );
                return CallOutcome::GiveUp {
                    class: FailureClass::Cap,
                    reason,
                    status: None,
                };
            }
            let started = Instant::now();
            let result = {
                let mut slot = self.limiter.acquire(estimate_tokens(request)).await;
                *llm_attempts += 1;
                self.stats.called();
                if retried == 0 {
                    self.budget.deposit();
                }
                let result = self.provider.complete(request).await;
                if let Ok(completion) = &result {
                    // The server's count replaces the estimate in the
                    // tokens-per-minute budget.
                    if let Some(used) = completion.tokens_used() {
                        slot.settle(used);
                    }
                    self.stats.used_tokens(completion);
                }
                // Tell the limiter before the slot frees, so no waiting call
                // slips out between a quota error and the pause it causes.
                self.inform_limiter(&result);
                result
            };
            let error = match result {
                Ok(completion) => {
                    self.stats.answered(started.elapsed());
                    return CallOutcome::Answered {
                        completion,
                        latency: started.elapsed(),
                    };
                }
                Err(error) => error,
            };
            self.stats.failed(error.class, started.elapsed());
            *failed_calls
                .entry(error.class.as_str().to_string())
                .or_default() += 1;
            tracing::debug!(%error, "LLM call failed");
            match error.class {
                ErrorClass::Permanent => return give_up(&error, retried),
                ErrorClass::Quota => return CallOutcome::Park(self.quota_delay(&error)),
                ErrorClass::Overload | ErrorClass::Malformed => {
                    // A 429 that names its wait is pacing, not a storm: it
                    // does not spend the retry budget.
                    let paced = error.status == Some(429) && error.retry_after.is_some();
                    if !paced && !self.budget.withdraw() {
                        let reason = format!(
                            "retry budget spent (too many retries across all questions); last error: {error}"
                        );
                        return CallOutcome::GiveUp {
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
                    self.stats.retrying(delay);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Success adds rate back; a rate limit halves it; a spent quota pauses it.
    fn inform_limiter(&self, result: &Result<Completion, LlmError>) {
        match result {
            Ok(_) => self.limiter.on_success(),
            Err(e) if e.class == ErrorClass::Quota => {
                self.limiter
                    .pause_until(tokio::time::Instant::now() + self.quota_delay(e));
            }
            Err(e) if e.status == Some(429) => self.limiter.on_rate_limited(),
            Err(_) => {}
        }
    }

    /// How long a quota error parks: the provider's word, else the configured delay.
    fn quota_delay(&self, error: &LlmError) -> Duration {
        error.retry_after.unwrap_or(self.retry.quota_delay)
    }
}

/// A call that failed for good.
fn give_up(error: &LlmError, retries: u32) -> CallOutcome {
    let class = match error.class {
        ErrorClass::Overload => FailureClass::Overload,
        ErrorClass::Quota => FailureClass::Quota,
        ErrorClass::Permanent | ErrorClass::Malformed => FailureClass::Permanent,
    };
    let reason = match retries {
        0 => error.to_string(),
        n => format!("gave up after {n} retries: {error}"),
    };
    CallOutcome::GiveUp {
        class,
        reason,
        status: error.status,
    }
}

/// A rough token count to reserve from the per-minute token budget before a
/// call: four characters a token for the prompt, plus the most the reply
/// may take. The server's reported usage replaces it after the call.
fn estimate_tokens(request: &ChatRequest) -> u32 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    (chars / 4) as u32 + request.max_tokens
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use async_trait::async_trait;

    /// Answers at once, reporting `usage` (prompt, completion) tokens.
    struct Reports(Option<(u32, u32)>);

    #[async_trait]
    impl Provider for Reports {
        fn name(&self) -> &str {
            "reports"
        }
        fn model(&self) -> &str {
            "m"
        }
        async fn complete(&self, _: &ChatRequest) -> Result<Completion, LlmError> {
            Ok(Completion {
                text: "a".into(),
                model: "m".into(),
                prompt_tokens: self.0.map(|u| u.0),
                completion_tokens: self.0.map(|u| u.1),
            })
        }
    }

    /// How long two calls take under 600 tokens a minute, each estimated
    /// at 11 tokens (a 4-character prompt and 10 for the reply).
    async fn two_calls(usage: Option<(u32, u32)>) -> (Duration, Arc<LlmStats>) {
        let stats = Arc::new(LlmStats::default());
        let rate = RateConfig {
            tokens_per_minute: Some(600),
            ..RateConfig::default()
        };
        let caller = Caller::new(
            Arc::new(Reports(usage)),
            rate,
            RetryConfig::default(),
            10,
            stats.clone(),
        );
        let request = ChatRequest {
            messages: vec![Message::user("why?")],
            max_tokens: 10,
            temperature: 0.0,
            seed: None,
        };
        let start = tokio::time::Instant::now();
        for _ in 0..2 {
            let outcome = caller.call(&request, &mut 0, &mut BTreeMap::new()).await;
            assert!(
                matches!(outcome, CallOutcome::Answered { .. }),
                "{outcome:?}"
            );
        }
        (start.elapsed(), stats)
    }

    #[tokio::test(start_paused = true)]
    async fn the_tokens_the_server_reports_feed_the_token_budget() {
        // The server counted 600 tokens for the first call: the budget is
        // spent, and the second call waits for 11 tokens to come back.
        let (took, stats) = two_calls(Some((100, 500))).await;
        assert_eq!(took, Duration::from_millis(1100));
        assert_eq!(stats.prompt_tokens(), 200);
        assert_eq!(stats.completion_tokens(), 1000);
        assert_eq!(stats.answers_without_usage(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn without_reported_usage_the_estimate_stands() {
        let (took, stats) = two_calls(None).await;
        assert_eq!(took, Duration::ZERO, "22 of 600 tokens");
        assert_eq!(stats.answers_without_usage(), 2);
    }
}
