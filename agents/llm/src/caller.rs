//! One question's calls to the model: through the rate limiter, retried by
//! error class, within the caps. What comes out is a [`CallOutcome`] the
//! agent turns into a record; the policy lives here, the plumbing in the
//! agent.
//!
//! - overload (5xx, 429 rate limit, time-outs, malformed replies): back off
//!   with full jitter, the server's `Retry-After` as a floor, while the retry
//!   budget and the per-call retry cap allow;
//! - quota: the limiter pauses and the question goes to the next provider
//!   in the fallback order, or is to be parked when there is none;
//! - permanent (400, 401, 403, 404), or a cap reached: give up with the reason.
//!
//! Calls go where the [`Router`] says: while every circuit is open the
//! question waits there and spends neither an attempt nor a retry. A failed
//! half-open probe costs its call (it counts towards the cap) but not a
//! retry: the circuit's open period, not the backoff, paces probes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::FailureClass;
use tokio::sync::watch;

use super::breaker::BreakerConfig;
use super::circuit;
use super::limiter::{Limiter, RateConfig};
use super::retry::{Backoff, RetryBudget, RetryConfig};
use super::router::Router;
use super::stats::LlmStats;
use super::{ChatRequest, Completion, ErrorClass, LlmError, Provider};

/// What one question's calls came to.
#[derive(Debug)]
pub enum CallOutcome {
    Answered {
        completion: Completion,
        latency: Duration,
        /// The provider that answered, as [`crate::router::labels`] names it.
        provider: String,
    },
    /// The provider's quota is spent: try again after this long.
    Park(Duration),
    /// The agent is stopping while every circuit is open: no call was
    /// made; the question is to wait for the next start.
    Interrupted,
    /// No more calls for this question.
    GiveUp {
        class: FailureClass,
        reason: String,
        status: Option<u16>,
    },
}

pub struct Caller {
    /// The providers in fallback order, each with its limiter and circuit.
    router: Router,
    budget: RetryBudget,
    retry: RetryConfig,
    /// LLM calls a question may take in all.
    max_llm_attempts: u32,
    pub stats: Arc<LlmStats>,
    /// Turns true when the agent stops: a question waiting for an open
    /// circuit then gives up waiting, so a stop never waits for a provider.
    shutdown: Option<watch::Receiver<bool>>,
}

impl Caller {
    /// A caller over `providers` in fallback order (at least one).
    pub fn new(
        providers: Vec<Arc<dyn Provider>>,
        rate: RateConfig,
        breaker: BreakerConfig,
        retry: RetryConfig,
        max_llm_attempts: u32,
        stats: Arc<LlmStats>,
    ) -> Self {
        let router = Router::new(providers, &rate, &breaker);
        for route in router.routes() {
            stats.watch_circuit(route.circuit.clone());
        }
        Self {
            router,
            budget: RetryBudget::new(&retry),
            retry,
            max_llm_attempts,
            stats,
            shutdown: None,
        }
    }

    /// Stop waiting for open circuits once `shutdown` turns true.
    pub fn stop_on(mut self, shutdown: watch::Receiver<bool>) -> Self {
        self.shutdown = Some(shutdown);
        self
    }

    /// Resolves once the agent stops; never without a shutdown signal.
    async fn stopping(&self) {
        match self.shutdown.clone() {
            Some(mut shutdown) => {
                if shutdown.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        }
    }

    /// Return once some provider would take a call (its circuit is not
    /// open): the agent waits here before it takes new work.
    pub async fn ready(&self) {
        self.router.ready().await
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
            let pick = tokio::select! {
                pick = self.router.pick() => pick,
                () = self.stopping() => return CallOutcome::Interrupted,
            };
            let route = self.router.route(pick);
            let started = Instant::now();
            let result = {
                let mut slot = route.limiter.acquire(estimate_tokens(request)).await;
                *llm_attempts += 1;
                self.stats.called();
                if retried == 0 {
                    self.budget.deposit();
                }
                let result = route.provider.complete(request).await;
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
                self.inform_limiter(&route.limiter, &result);
                self.router.record(pick, circuit::health(&result));
                result
            };
            let error = match result {
                Ok(completion) => {
                    self.stats.answered(started.elapsed());
                    return CallOutcome::Answered {
                        completion,
                        latency: started.elapsed(),
                        provider: route.label().to_string(),
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
                ErrorClass::Quota if self.router.fallback_for_quota(pick) => {}
                ErrorClass::Quota => return CallOutcome::Park(self.quota_delay(&error)),
                ErrorClass::Overload | ErrorClass::Malformed if pick.probe => {
                    // The circuit is open again: the next pick waits for it.
                }
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
    fn inform_limiter(&self, limiter: &Limiter, result: &Result<Completion, LlmError>) {
        match result {
            Ok(_) => limiter.on_success(),
            Err(e) if e.class == ErrorClass::Quota => {
                limiter.pause_until(tokio::time::Instant::now() + self.quota_delay(e));
            }
            Err(e) if e.status == Some(429) => limiter.on_rate_limited(),
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
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use async_trait::async_trait;

    use super::*;
    use crate::Message;

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

    /// A provider that is down (connection refused) until told otherwise.
    struct Fake {
        up: AtomicBool,
        calls: AtomicU32,
    }

    impl Fake {
        fn new(up: bool) -> Arc<Self> {
            Arc::new(Self {
                up: AtomicBool::new(up),
                calls: AtomicU32::new(0),
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
            vec![Arc::new(Reports(usage))],
            rate,
            BreakerConfig::default(),
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

    #[async_trait]
    impl Provider for Fake {
        fn name(&self) -> &str {
            "fake"
        }
        fn model(&self) -> &str {
            "fake-model"
        }
        async fn complete(&self, _: &ChatRequest) -> Result<Completion, LlmError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            if !self.up.load(Ordering::SeqCst) {
                return Err(LlmError::new(
                    ErrorClass::Overload,
                    None,
                    "connection refused",
                ));
            }
            Ok(Completion {
                text: "an answer".into(),
                model: "fake-model".into(),
                prompt_tokens: None,
                completion_tokens: None,
            })
        }
    }

    fn caller(providers: Vec<Arc<dyn Provider>>) -> Arc<Caller> {
        let breaker = BreakerConfig {
            failure_threshold: 2,
            open_base: Duration::from_secs(5),
            open_factor: 2.0,
            open_cap: Duration::from_secs(20),
        };
        let retry = RetryConfig {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(1),
            ..RetryConfig::default()
        };
        let stats = Arc::new(LlmStats::default());
        Arc::new(Caller::new(
            providers,
            RateConfig::default(),
            breaker,
            retry,
            10,
            stats,
        ))
    }

    fn request() -> ChatRequest {
        ChatRequest {
            messages: vec![Message::user("Why?")],
            max_tokens: 16,
            temperature: 0.0,
            seed: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_waited_out_with_one_probe_an_open_period_and_no_retries() {
        let fake = Fake::new(false);
        let caller = caller(vec![fake.clone()]);
        let question = {
            let caller = caller.clone();
            tokio::spawn(async move {
                let (mut attempts, mut failed) = (0, BTreeMap::new());
                let outcome = caller.call(&request(), &mut attempts, &mut failed).await;
                (outcome, attempts)
            })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 2, "two failures open it");
        let ready = tokio::time::timeout(Duration::from_secs(1), caller.ready()).await;
        assert!(ready.is_err(), "no new work while the circuit is open");
        // Down for a minute: probes at 5, 15, 35 and 55 s fail.
        tokio::time::sleep(Duration::from_secs(59)).await;
        assert_eq!(fake.calls.load(Ordering::SeqCst), 6);
        fake.up.store(true, Ordering::SeqCst);
        let (outcome, attempts) = question.await.unwrap();
        assert!(
            matches!(outcome, CallOutcome::Answered { .. }),
            "{outcome:?}"
        );
        assert_eq!((attempts, fake.calls.load(Ordering::SeqCst)), (7, 7));
        assert_eq!(caller.stats.retries(), 2, "the probes spent no retry");
        assert_eq!(caller.stats.circuit_openings(), 5);
        let open = caller.stats.circuit_open_time();
        assert!(open >= Duration::from_secs(75), "{open:?}");
        tokio::time::timeout(Duration::from_millis(1), caller.ready())
            .await
            .expect("ready once the circuit closes");
    }

    #[tokio::test(start_paused = true)]
    async fn calls_fall_back_to_the_next_provider_while_the_first_is_open() {
        let (down, up) = (Fake::new(false), Fake::new(true));
        let caller = caller(vec![down.clone(), up.clone()]);
        let (mut attempts, mut failed) = (0, BTreeMap::new());
        for _ in 0..3 {
            let outcome = caller.call(&request(), &mut attempts, &mut failed).await;
            let CallOutcome::Answered { provider, .. } = outcome else {
                panic!("{outcome:?}");
            };
            assert_eq!(provider, "fake#2");
        }
        assert_eq!(down.calls.load(Ordering::SeqCst), 2);
        assert_eq!(up.calls.load(Ordering::SeqCst), 3);
        assert_eq!(attempts, 5);
    }
}
