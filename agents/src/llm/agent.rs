//! The LLM agent: takes new questions from `questions`, regenerated ones
//! from `answers` through the `regenerate` chain, and parked ones from
//! `deferred` when they fall due; calls the provider through its [`Gate`];
//! and produces each answer to `answers` through `answer-score`.
//!
//! Failures are handled by class: overload is retried with backoff (the
//! server's `Retry-After` as a floor) within a retry budget; a spent quota
//! parks the question on `deferred` and pauses the gate; anything permanent,
//! or past a cap, becomes a dead letter with the reason. Every record taken
//! ends as an answer, a parked question or a dead letter before its offset
//! is committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use answerloop_schema::{question_id, topics, Answer, DeadLetter, FailureClass, Question};
use answerloop_scoring::Params;
use tokio::sync::{watch, Semaphore};

use super::gate::{Gate, RateConfig};
use super::prompt::{self, RegeneratePrompt};
use super::retry::{Backoff, RetryBudget, RetryConfig};
use super::{ChatRequest, ErrorClass, LlmError, Provider};
use crate::broker::producer::Producer;
use crate::broker::{Broker, ChainSpec, ConsumerConfig, Record};
use crate::clock::now_ms;
use crate::intake::Intake;

/// Consumer ids, stable so that a restarted agent resumes where it stopped.
pub const QUESTIONS_CONSUMER: &str = "llm-agent";
pub const REGENERATE_CONSUMER: &str = "llm-agent-regenerate";
pub const DEFERRED_CONSUMER: &str = "llm-agent-deferred";

/// Parked questions held at once while they wait to fall due.
const MAX_PARKED: usize = 4096;

#[derive(Debug, Clone)]
pub struct LlmAgentConfig {
    /// Concurrency, per-minute limits and AIMD for calls to the provider.
    pub rate: RateConfig,
    pub retry: RetryConfig,
    /// LLM calls a question may take in all, across retries, regenerations
    /// and deferrals; past it, a dead letter.
    pub max_llm_attempts: u32,
    /// The scoring params, passed to `answer-score` and `regenerate`.
    pub params: Params,
    pub regenerate_prompt: RegeneratePrompt,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Records read from a topic at once.
    pub batch: usize,
}

impl Default for LlmAgentConfig {
    fn default() -> Self {
        Self {
            rate: RateConfig::default(),
            retry: RetryConfig::default(),
            max_llm_attempts: 10,
            params: Params::default(),
            regenerate_prompt: RegeneratePrompt::Feedback,
            max_tokens: 256,
            temperature: 0.0,
            batch: 64,
        }
    }
}

/// What the agent did, for summaries and metrics.
#[derive(Debug, Default)]
pub struct LlmStats {
    pub calls: AtomicU64,
    pub answers: AtomicU64,
    pub failures: AtomicU64,
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

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn failures_of(&self, class: ErrorClass) -> u64 {
        Self::get(&self.failures_by_class[class.index()])
    }
}

struct Context {
    provider: Arc<dyn Provider>,
    gate: Gate,
    budget: RetryBudget,
    config: LlmAgentConfig,
    answers: Producer,
    deferred: Producer,
    dead_letters: Producer,
    stats: Arc<LlmStats>,
}

/// Run the LLM agent until `shutdown` turns true.
pub async fn run(
    broker: Arc<dyn Broker>,
    provider: Arc<dyn Provider>,
    config: LlmAgentConfig,
    stats: Arc<LlmStats>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let score_chain = ChainSpec::single(answerloop_wasm::ANSWER_SCORE.name, &config.params);
    let regenerate_chain = ChainSpec::single(answerloop_wasm::REGENERATE.name, &config.params);
    let producer = |topic, chain| Producer::spawn(broker.clone(), topic, chain, 256);
    let (answers, answers_task) = producer(topics::ANSWERS, Some(score_chain));
    let (deferred, deferred_task) = producer(topics::DEFERRED, None);
    let (dead_letters, dead_task) = producer(topics::DEAD_LETTERS, None);
    // New work is read a little ahead of the calls the gate lets through;
    // parked questions wait apart, so they never hold up fresh work.
    let fresh = Arc::new(Semaphore::new(config.rate.concurrency.max(1) * 2));
    let parked = Arc::new(Semaphore::new(MAX_PARKED));
    let batch = config.batch;
    let context = Arc::new(Context {
        provider,
        gate: Gate::new(config.rate.clone()),
        budget: RetryBudget::new(&config.retry),
        config,
        answers,
        deferred,
        dead_letters,
        stats,
    });

    let intake = |topic, id, chain, permits: &Arc<Semaphore>| {
        let (broker, permits) = (broker.clone(), permits.clone());
        let config = ConsumerConfig::committed(id, chain);
        async move {
            let consumer = broker.consumer(topic, config).await?;
            Ok::<_, anyhow::Error>(Intake {
                consumer,
                permits,
                batch,
            })
        }
    };
    let new_questions = intake(topics::QUESTIONS, QUESTIONS_CONSUMER, None, &fresh).await?;
    let regenerated = intake(
        topics::ANSWERS,
        REGENERATE_CONSUMER,
        Some(regenerate_chain),
        &fresh,
    )
    .await?;
    let due = intake(topics::DEFERRED, DEFERRED_CONSUMER, None, &parked).await?;
    let handler = |context: Arc<Context>| move |record: Record| answer(context.clone(), record);
    let result = tokio::try_join!(
        new_questions.run(shutdown.clone(), handler(context.clone())),
        regenerated.run(shutdown.clone(), handler(context.clone())),
        due.run(shutdown, handler(context.clone())),
    );
    drop(context);
    let _ = tokio::join!(answers_task, deferred_task, dead_task);
    result.map(|_| ())
}

/// Answer one question record: an answer, a parked question or a dead
/// letter, never nothing.
async fn answer(context: Arc<Context>, record: Record) -> anyhow::Result<()> {
    let mut question: Question = match serde_json::from_slice(&record.value) {
        Ok(q) => q,
        Err(e) => return dead_letter(&context, unreadable_letter(&record.value, &e)).await,
    };
    if let Some(due) = question.not_before_ms.take() {
        let wait = due.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let config = &context.config;
    let mut backoff = Backoff::new(&config.retry);
    let mut retried = 0u32;
    loop {
        if question.llm_attempts >= config.max_llm_attempts {
            let reason = format!(
                "reached the cap of {} LLM calls for one question",
                config.max_llm_attempts
            );
            return dead_letter(
                &context,
                letter_for(question, FailureClass::Cap, reason, None),
            )
            .await;
        }
        let request = prompt::request(
            &question,
            config.regenerate_prompt,
            config.max_tokens,
            config.temperature,
        );
        let started = Instant::now();
        let result = {
            let _slot = context.gate.acquire(estimate_tokens(&request)).await;
            question.llm_attempts += 1;
            LlmStats::add(&context.stats.calls, 1);
            if retried == 0 {
                context.budget.deposit();
            }
            let result = context.provider.complete(&request).await;
            // Tell the gate before the slot frees, so no waiting call slips
            // out between a quota error and the pause it causes.
            inform_gate(&context, &result);
            result
        };
        let error = match result {
            Ok(completion) => {
                question.trace.answered_ms = Some(now_ms());
                let latency_ms = started.elapsed().as_millis() as u64;
                let answer = Answer::new(question, completion.text, completion.model, latency_ms);
                let value = serde_json::to_vec(&answer)?;
                let key = answer.question.id.clone();
                context.answers.send(Record::keyed(key, value)).await?;
                LlmStats::add(&context.stats.answers, 1);
                return Ok(());
            }
            Err(error) => error,
        };
        LlmStats::add(&context.stats.failures, 1);
        LlmStats::add(&context.stats.failures_by_class[error.class.index()], 1);
        tracing::debug!(question = %question.id, %error, "LLM call failed");
        match error.class {
            ErrorClass::Permanent => {
                return dead_letter(&context, failure_letter(question, &error, retried)).await;
            }
            ErrorClass::Quota => return park(&context, question, &error).await,
            ErrorClass::Overload | ErrorClass::Malformed => {
                let rate_limited = error.status == Some(429);
                // A 429 that names its wait is pacing, not a storm: it does
                // not spend the retry budget.
                let paced = rate_limited && error.retry_after.is_some();
                if !paced && !context.budget.withdraw() {
                    let reason = format!(
                        "retry budget spent (too many retries across all questions); last error: {error}"
                    );
                    let letter = letter_for(question, FailureClass::Cap, reason, error.status);
                    return dead_letter(&context, letter).await;
                }
                let delay = backoff.next_delay(error.retry_after, &mut rand::thread_rng());
                let Some(delay) = delay else {
                    return dead_letter(&context, failure_letter(question, &error, retried)).await;
                };
                retried += 1;
                LlmStats::add(&context.stats.retries, 1);
                LlmStats::add(&context.stats.retry_delay_ms, delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Success adds rate back; a rate limit halves it; a spent quota pauses it.
fn inform_gate(context: &Context, result: &Result<super::Completion, LlmError>) {
    match result {
        Ok(_) => context.gate.on_success(),
        Err(e) if e.class == ErrorClass::Quota => {
            context
                .gate
                .pause_until(tokio::time::Instant::now() + quota_delay(context, e));
        }
        Err(e) if e.status == Some(429) => context.gate.on_rate_limited(),
        Err(_) => {}
    }
}

/// How long a quota error parks: the provider's word, else the configured delay.
fn quota_delay(context: &Context, error: &LlmError) -> Duration {
    error
        .retry_after
        .unwrap_or(context.config.retry.quota_delay)
}

/// A rough token count for the per-minute token budget: four characters a
/// token for the prompt, plus the most the reply may take.
fn estimate_tokens(request: &ChatRequest) -> u32 {
    let chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
    (chars / 4) as u32 + request.max_tokens
}

/// The quota is spent (the gate is already paused): park the question on
/// `deferred` until the quota returns.
async fn park(context: &Context, mut question: Question, error: &LlmError) -> anyhow::Result<()> {
    let delay = quota_delay(context, error);
    question.not_before_ms = Some(now_ms() + delay.as_millis() as u64);
    let value = serde_json::to_vec(&question)?;
    context
        .deferred
        .send(Record::keyed(question.id.clone(), value))
        .await?;
    LlmStats::add(&context.stats.deferred, 1);
    tracing::info!(question = %question.id, delay_ms = delay.as_millis() as u64, "quota spent: question parked");
    Ok(())
}

fn unreadable_letter(raw: &[u8], error: &serde_json::Error) -> DeadLetter {
    let raw = String::from_utf8_lossy(raw);
    DeadLetter {
        id: answerloop_schema::salvage_id(&raw)
            .unwrap_or_else(|| format!("raw-{}", question_id(&raw))),
        class: FailureClass::Invalid,
        reason: format!("not a question record: {error}"),
        status: None,
        question: None,
        raw: Some(raw.chars().take(512).collect()),
        at_ms: now_ms(),
    }
}

/// The dead letter for a call that failed for good.
fn failure_letter(question: Question, error: &LlmError, retries: u32) -> DeadLetter {
    let class = match error.class {
        ErrorClass::Overload => FailureClass::Overload,
        ErrorClass::Quota => FailureClass::Quota,
        ErrorClass::Permanent | ErrorClass::Malformed => FailureClass::Permanent,
    };
    let reason = match retries {
        0 => error.to_string(),
        n => format!("gave up after {n} retries: {error}"),
    };
    letter_for(question, class, reason, error.status)
}

fn letter_for(
    question: Question,
    class: FailureClass,
    reason: String,
    status: Option<u16>,
) -> DeadLetter {
    DeadLetter {
        id: question.id.clone(),
        class,
        reason,
        status,
        question: Some(question),
        raw: None,
        at_ms: now_ms(),
    }
}

async fn dead_letter(context: &Context, letter: DeadLetter) -> anyhow::Result<()> {
    let value = serde_json::to_vec(&letter)?;
    context
        .dead_letters
        .send(Record::keyed(letter.id.clone(), value))
        .await?;
    LlmStats::add(&context.stats.dead_letters, 1);
    Ok(())
}
