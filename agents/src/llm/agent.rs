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

use std::sync::Arc;
use std::time::Duration;

use answerloop_schema::{question_id, topics, Answer, DeadLetter, FailureClass, Question};
use answerloop_scoring::Params;
use tokio::sync::{watch, Semaphore};

pub use super::caller::LlmStats;
use super::caller::{Caller, Outcome};
use super::gate::RateConfig;
use super::prompt::{self, RegeneratePrompt};
use super::retry::RetryConfig;
use super::Provider;
use crate::broker::producer::Producer;
use crate::broker::{self, Broker, ChainSpec, Record};
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
    /// The partitions this agent answers; `None` for all. LLM agents that
    /// share a cluster take disjoint sets.
    pub partitions: Option<Vec<u32>>,
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
            partitions: None,
        }
    }
}

struct Context {
    caller: Caller,
    config: LlmAgentConfig,
    answers: Producer,
    deferred: Producer,
    dead_letters: Producer,
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
    let caller = Caller::new(
        provider,
        config.rate.clone(),
        config.retry.clone(),
        config.max_llm_attempts,
        stats,
    );
    let context = Arc::new(Context {
        caller,
        config,
        answers,
        deferred,
        dead_letters,
    });

    let sources = [
        (topics::QUESTIONS, QUESTIONS_CONSUMER, None, &fresh),
        (
            topics::ANSWERS,
            REGENERATE_CONSUMER,
            Some(&regenerate_chain),
            &fresh,
        ),
        (topics::DEFERRED, DEFERRED_CONSUMER, None, &parked),
    ];
    let mut intakes = Vec::new();
    for (topic, id, chain, permits) in sources {
        let partitions = context.config.partitions.as_deref();
        for consumer in broker::consumers(broker.as_ref(), topic, id, chain, partitions).await? {
            intakes.push(Intake {
                consumer,
                permits: permits.clone(),
                batch,
            });
        }
    }
    let handler = |context: Arc<Context>| move |record: Record| answer(context.clone(), record);
    let result = futures::future::try_join_all(
        intakes
            .into_iter()
            .map(|intake| intake.run(shutdown.clone(), handler(context.clone()))),
    )
    .await;
    drop(context);
    let _ = tokio::join!(answers_task, deferred_task, dead_task);
    result.map(|_| ())
}

/// Answer one question record: an answer, a parked question or a dead
/// letter, never nothing.
async fn answer(context: Arc<Context>, record: Record) -> anyhow::Result<()> {
    let mut question: Question = match serde_json::from_slice::<Question>(&record.value) {
        Ok(q) => q.with_id(),
        Err(e) => return dead_letter(&context, unreadable_letter(&record.value, &e)).await,
    };
    if let Some(due) = question.not_before_ms.take() {
        let wait = due.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let config = &context.config;
    let request = prompt::request(
        &question,
        config.regenerate_prompt,
        config.max_tokens,
        config.temperature,
    );
    match context
        .caller
        .call(
            &request,
            &mut question.llm_attempts,
            &mut question.failed_calls,
        )
        .await
    {
        Outcome::Answered {
            completion,
            latency,
        } => {
            question.trace.answered_ms = Some(now_ms());
            let latency_ms = latency.as_millis() as u64;
            let answer = Answer::new(question, completion.text, completion.model, latency_ms);
            let value = serde_json::to_vec(&answer)?;
            let key = answer.question.id.clone();
            context.answers.send(Record::keyed(key, value)).await?;
            Ok(())
        }
        Outcome::Park(delay) => park(&context, question, delay).await,
        Outcome::GiveUp {
            class,
            reason,
            status,
        } => dead_letter(&context, letter_for(question, class, reason, status)).await,
    }
}

/// The quota is spent (the gate is already paused): park the question on
/// `deferred` until the quota returns.
async fn park(context: &Context, mut question: Question, delay: Duration) -> anyhow::Result<()> {
    question.not_before_ms = Some(now_ms() + delay.as_millis() as u64);
    let value = serde_json::to_vec(&question)?;
    context
        .deferred
        .send(Record::keyed(question.id.clone(), value))
        .await?;
    LlmStats::add(&context.caller.stats.deferred, 1);
    crate::metrics::metrics().llm_deferred.inc();
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
    LlmStats::add(&context.caller.stats.dead_letters, 1);
    crate::metrics::metrics()
        .llm_dead_letters
        .get_or_create(&[("class", letter.class.as_str().to_string())])
        .inc();
    Ok(())
}
