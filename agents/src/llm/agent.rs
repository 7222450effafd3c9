//! The LLM agent: takes new questions from `questions` and regenerated ones
//! from `answers` through the `regenerate` chain, calls the provider, and
//! produces each answer to `answers` through `answer-score`, or, when the
//! call fails, a dead letter with the reason. No question is dropped: every
//! record taken ends as an answer or a dead letter before its offset is
//! committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use answerloop_schema::{question_id, topics, Answer, DeadLetter, FailureClass, Question};
use answerloop_scoring::Params;
use tokio::sync::{watch, Semaphore};

use super::prompt::{self, RegeneratePrompt};
use super::{ErrorClass, LlmError, Provider};
use crate::broker::producer::Producer;
use crate::broker::{Broker, ChainSpec, ConsumerConfig, Record};
use crate::clock::now_ms;
use crate::intake::Intake;

/// Consumer ids, stable so that a restarted agent resumes where it stopped.
pub const QUESTIONS_CONSUMER: &str = "llm-agent";
pub const REGENERATE_CONSUMER: &str = "llm-agent-regenerate";

#[derive(Debug, Clone)]
pub struct LlmAgentConfig {
    /// Calls in flight at once.
    pub concurrency: usize,
    /// LLM calls a question may take in all; past it, a dead letter.
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
            concurrency: 8,
            max_llm_attempts: 5,
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
    pub dead_letters: AtomicU64,
}

impl LlmStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct Context {
    provider: Arc<dyn Provider>,
    config: LlmAgentConfig,
    answers: Producer,
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
    let (answers, answers_task) =
        Producer::spawn(broker.clone(), topics::ANSWERS, Some(score_chain), 256);
    let (dead_letters, dead_task) =
        Producer::spawn(broker.clone(), topics::DEAD_LETTERS, None, 256);
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let batch = config.batch;
    let context = Arc::new(Context {
        provider,
        config,
        answers,
        dead_letters,
        stats,
    });

    let intake = |consumer| Intake {
        consumer,
        permits: permits.clone(),
        batch,
    };
    let new_questions = intake(
        broker
            .consumer(
                topics::QUESTIONS,
                ConsumerConfig::committed(QUESTIONS_CONSUMER, None),
            )
            .await?,
    );
    let regenerated = intake(
        broker
            .consumer(
                topics::ANSWERS,
                ConsumerConfig::committed(REGENERATE_CONSUMER, Some(regenerate_chain)),
            )
            .await?,
    );
    let handler = |context: Arc<Context>| move |record: Record| answer(context.clone(), record);
    let result = tokio::try_join!(
        new_questions.run(shutdown.clone(), handler(context.clone())),
        regenerated.run(shutdown, handler(context.clone())),
    );
    drop(context);
    let _ = tokio::join!(answers_task, dead_task);
    result.map(|_| ())
}

/// Answer one question record: an answer or a dead letter, never nothing.
async fn answer(context: Arc<Context>, record: Record) -> anyhow::Result<()> {
    let mut question: Question = match serde_json::from_slice(&record.value) {
        Ok(q) => q,
        Err(e) => {
            let raw = String::from_utf8_lossy(&record.value);
            let letter = DeadLetter {
                id: format!("raw-{}", question_id(&raw)),
                class: FailureClass::Invalid,
                reason: format!("not a question record: {e}"),
                status: None,
                question: None,
                raw: Some(raw.chars().take(512).collect()),
                at_ms: now_ms(),
            };
            return dead_letter(&context, letter).await;
        }
    };
    let config = &context.config;
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
    question.llm_attempts += 1;
    context.stats.calls.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    match context.provider.complete(&request).await {
        Ok(completion) => {
            question.trace.answered_ms = Some(now_ms());
            let answer = Answer {
                answer: completion.text,
                model: completion.model,
                latency_ms: started.elapsed().as_millis() as u64,
                score: None,
                verdict: None,
                question,
            };
            let value = serde_json::to_vec(&answer)?;
            context
                .answers
                .send(Record::keyed(answer.question.id.clone(), value))
                .await?;
            context.stats.answers.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        Err(error) => {
            context.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(question = %question.id, %error, "LLM call failed");
            let letter = failure_letter(question, &error);
            dead_letter(&context, letter).await
        }
    }
}

fn failure_letter(question: Question, error: &LlmError) -> DeadLetter {
    let class = match error.class {
        ErrorClass::Overload => FailureClass::Overload,
        ErrorClass::Quota => FailureClass::Quota,
        ErrorClass::Permanent | ErrorClass::Malformed => FailureClass::Permanent,
    };
    letter_for(question, class, error.to_string(), error.status)
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
    context.stats.dead_letters.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
