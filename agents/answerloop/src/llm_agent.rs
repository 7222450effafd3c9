//! The LLM agent: takes new questions from `questions`, regenerated ones
//! from `answers` through the `regenerate` chain, and parked ones from
//! `deferred` when they fall due; calls the provider through its rate limiter;
//! and produces each answer to `answers`, where the consumers' chains score
//! it (see [`crate::chains`]).
//!
//! Failures are handled by class: overload is retried with backoff (the
//! server's `Retry-After` as a floor) within a retry budget; a spent quota
//! sends the question to the next provider, or parks it on `deferred` and
//! pauses the limiter; anything permanent, or past a cap, becomes a dead
//! letter with the reason. Every record taken ends as an answer, a parked
//! question or a dead letter before its offset is committed.
//!
//! An outage is a pause: while every provider's circuit is open the agent
//! takes no new question from any topic (its intakes wait on
//! [`Caller::ready`], woken when a circuit may take a call again, never
//! polling), and the questions it holds wait for the probe.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use answerloop_schema::{topics, Answer, DeadLetter, InvalidRecord, Question};
use answerloop_scoring::carried::{self, ExactBuffers};
use answerloop_scoring::{semantic, Params};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::chains;
use crate::exact::ExactEmbedder;
use crate::intake::{Intake, Ready};
use answerloop_broker::producer::Producer;
use answerloop_broker::{Broker, Member, Record};
use answerloop_llm::breaker::BreakerConfig;
use answerloop_llm::caller::{CallOutcome, Caller};
use answerloop_llm::limiter::RateConfig;
use answerloop_llm::prompt::{self, RegeneratePrompt};
use answerloop_llm::retry::RetryConfig;
use answerloop_llm::seed;
use answerloop_llm::{ChatRequest, LlmStats, Provider};
use answerloop_schema::clock::now_ms;

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
    /// Each provider's circuit breaker.
    pub breaker: BreakerConfig,
    pub retry: RetryConfig,
    /// LLM calls a question may take in all, across retries, regenerations
    /// and deferrals; past it, a dead letter.
    pub max_llm_attempts: u32,
    /// The scoring params, passed to `answer-score` and `regenerate`.
    pub params: Params,
    pub regenerate_prompt: RegeneratePrompt,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Added to the temperature for each attempt after the first: a later
    /// attempt samples further from the most likely answer.
    pub temperature_step: f32,
    /// Answers drawn for a regenerated attempt (best of n): each from its
    /// own seed, the one the scorer rates highest is published. The first
    /// attempt is always drawn once.
    pub regenerate_candidates: u32,
    /// The run's sampling seed (`--sample-seed`); each attempt at each
    /// question samples from its own seed derived from it.
    pub sample_seed: u64,
    /// Records read from a topic at once.
    pub batch: usize,
    /// The share of the questions this agent answers (`--member K/M`):
    /// LLM agents that share a topic split its keys.
    pub member: Member,
    /// With `--scorer exact`: embeds each answer, carried in the record as
    /// `answer_vector` for `answer-score`. In `answerloop run` the traffic
    /// agent embeds the references with it too.
    pub exact: Option<Arc<ExactEmbedder>>,
}

impl Default for LlmAgentConfig {
    fn default() -> Self {
        Self {
            rate: RateConfig::default(),
            breaker: BreakerConfig::default(),
            retry: RetryConfig::default(),
            max_llm_attempts: 10,
            params: Params::default(),
            regenerate_prompt: RegeneratePrompt::Plain,
            max_tokens: 256,
            temperature: 0.7,
            temperature_step: 0.0,
            regenerate_candidates: 3,
            sample_seed: seed::DEFAULT_SAMPLE_SEED,
            batch: 64,
            member: Member::ALONE,
            exact: None,
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

/// The agent can take new questions while some provider's circuit would
/// take a call.
struct CircuitsReady(Arc<Context>);

impl Ready for CircuitsReady {
    fn ready(&self) -> futures::future::BoxFuture<'_, ()> {
        Box::pin(self.0.caller.ready())
    }
}

/// Run the LLM agent until `shutdown` turns true, calling `providers` in
/// fallback order (at least one).
pub async fn run(
    broker: Arc<dyn Broker>,
    providers: Vec<Arc<dyn Provider>>,
    config: LlmAgentConfig,
    stats: Arc<LlmStats>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let regenerate_chain = chains::regenerate(&config.params);
    let producer = |topic| Producer::spawn(broker.clone(), topic, None, 256);
    let (answers, answers_task) = producer(topics::ANSWERS);
    let (deferred, deferred_task) = producer(topics::DEFERRED);
    let (dead_letters, dead_task) = producer(topics::DEAD_LETTERS);
    // New work is read a little ahead of the calls the limiter lets through;
    // parked questions wait apart, so they never hold up fresh work.
    let fresh = Arc::new(Semaphore::new(config.rate.concurrency.max(1) * 2));
    let parked = Arc::new(Semaphore::new(MAX_PARKED));
    let batch = config.batch;
    anyhow::ensure!(!providers.is_empty(), "the LLM agent needs a provider");
    let caller = Caller::new(
        providers,
        config.rate.clone(),
        config.breaker.clone(),
        config.retry.clone(),
        config.max_llm_attempts,
        stats,
    )
    .stop_on(shutdown.clone());
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
    let ready: Arc<dyn Ready> = Arc::new(CircuitsReady(context.clone()));
    let mut intakes = Vec::new();
    for (topic, id, chain, permits) in sources {
        let member = context.config.member;
        for consumer in
            answerloop_broker::consumers(broker.as_ref(), topic, id, chain, member).await?
        {
            intakes.push(Intake {
                consumer,
                permits: permits.clone(),
                batch,
                ready: Some(ready.clone()),
            });
        }
    }
    let handler = |context: Arc<Context>| {
        move |record: Record, permit| answer(context.clone(), record, permit)
    };
    let result = futures::future::try_join_all(
        intakes
            .into_iter()
            .map(|intake| intake.run(shutdown.clone(), handler(context.clone()))),
    )
    .await;
    drop((context, ready));
    let _ = tokio::join!(answers_task, deferred_task, dead_task);
    result.map(|_| ())
}

/// Answer one question record: an answer, a parked question or a dead
/// letter, never nothing. `permit` is the intake's, held until the model
/// has answered (or the question is given up), not while the result is
/// published.
async fn answer(
    context: Arc<Context>,
    record: Record,
    permit: OwnedSemaphorePermit,
) -> anyhow::Result<()> {
    let mut question: Question = match serde_json::from_slice::<Question>(&record.value) {
        Ok(q) => q.with_id(),
        Err(e) => {
            let tag = InvalidRecord::new(format!("not a question record: {e}"), &record.value);
            return dead_letter(&context, DeadLetter::unreadable(&tag, now_ms())).await;
        }
    };
    if let Some(due) = question.not_before_ms.take() {
        let wait = due.saturating_sub(now_ms());
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
    let (outcome, vector) = ask(&context, &mut question).await;
    drop(permit);
    match outcome {
        CallOutcome::Answered {
            completion,
            latency,
            provider,
        } => {
            question.trace.answered_ms = Some(now_ms());
            let latency_ms = latency.as_millis() as u64;
            let mut answer = Answer::new(question, completion.text, completion.model, latency_ms);
            answer.provider = provider;
            if let Some(exact) = &context.config.exact {
                answer.answer_vector = match vector {
                    Some(vector) => vector,
                    None => answer_vector(exact, &answer).await,
                };
            }
            let value = serde_json::to_vec(&answer)?;
            let key = answer.question.id.clone();
            context.answers.send(Record::keyed(key, value)).await?;
            Ok(())
        }
        CallOutcome::Park(delay) => park(&context, question, delay).await,
        CallOutcome::Interrupted => requeue(&context, question).await,
        CallOutcome::GiveUp {
            class,
            reason,
            status,
        } => {
            let letter = DeadLetter::of_question(question, class, reason, status, now_ms());
            dead_letter(&context, letter).await
        }
    }
}

/// Ask the model for `question`'s attempt: once, or for a regenerated
/// attempt at a temperature above 0, `regenerate_candidates` times at once
/// (each draw from its own seed, within the question's cap on LLM calls),
/// keeping the answer the scorer rates highest against the reference: the
/// same score `answer-score` then gives it (with `--scorer exact`, the
/// draws are embedded together, and the kept one's vector is returned for
/// its record). Draws that fail are counted like any failed call; only when
/// none answers does a failure decide.
async fn ask(context: &Context, question: &mut Question) -> (CallOutcome, Option<String>) {
    let config = &context.config;
    let room = config
        .max_llm_attempts
        .saturating_sub(question.llm_attempts)
        .max(1);
    let draws = match question.attempt > 1 && attempt_temperature(config, question.attempt) > 0.0 {
        true => config.regenerate_candidates.clamp(1, room),
        false => 1,
    };
    if draws == 1 {
        let request = chat_request(config, question);
        let outcome = context
            .caller
            .call(
                &request,
                &mut question.llm_attempts,
                &mut question.failed_calls,
            )
            .await;
        return (outcome, None);
    }
    // Each draw gets its share of the calls left under the cap (the first
    // the remainder), so that draws and their retries together stay within it.
    let share = room / draws;
    let base = chat_request(config, question);
    let calls = (0..draws).map(|draw| {
        // Draw 0 is the single draw's request; the others differ in the seed.
        let mut request = base.clone();
        request.seed = request.seed.map(|s| seed::draw_seed(s, draw));
        let budget = if draw == 0 {
            room - share * (draws - 1)
        } else {
            share
        };
        let start = config.max_llm_attempts - budget;
        async move {
            let (mut calls, mut failed) = (start, BTreeMap::new());
            let outcome = context.caller.call(&request, &mut calls, &mut failed).await;
            (outcome, calls - start, failed)
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut answered = Vec::new();
    let mut first_failure = None;
    for (outcome, calls, failed) in results {
        question.llm_attempts += calls;
        for (class, n) in failed {
            *question.failed_calls.entry(class).or_default() += n;
        }
        match &outcome {
            CallOutcome::Answered { completion, .. } => {
                answered.push((completion.text.clone(), outcome));
            }
            _ => {
                first_failure.get_or_insert(outcome);
            }
        }
    }
    let texts: Vec<String> = answered.iter().map(|(text, _)| text.clone()).collect();
    let mut scored = score_draws(config.exact.as_deref(), question, texts).await;
    let mut best: Option<(f32, usize)> = None;
    for (i, (score, _)) in scored.iter().enumerate() {
        if best.is_none_or(|(top, _)| *score > top) {
            best = Some((*score, i));
        }
    }
    match best {
        Some((_, i)) => {
            let outcome = answered.swap_remove(i).1;
            (outcome, scored.swap_remove(i).1)
        }
        None => (first_failure.expect("at least one draw"), None),
    }
}

/// Each draw's score against the question's reference, as `answer-score`
/// will score it, with its carried exact vector when `exact` gave one:
/// with `--scorer exact` (and the reference's exact vector carried) the
/// cosine of the vectors, all draws embedded in one request; otherwise the
/// static score, the reference embedded once.
async fn score_draws(
    exact: Option<&ExactEmbedder>,
    question: &Question,
    texts: Vec<String>,
) -> Vec<(f32, Option<String>)> {
    if let Some(exact) = exact.filter(|_| !question.reference_vector.is_empty()) {
        if let Ok(vectors) = exact.vectors(texts.clone()).await {
            let mut buffers = ExactBuffers::default();
            let scores: Option<Vec<f32>> = vectors
                .iter()
                .map(|v| carried::exact_score(v, &question.reference_vector, &mut buffers))
                .collect();
            if let Some(scores) = scores {
                return scores
                    .into_iter()
                    .zip(vectors.into_iter().map(Some))
                    .collect();
            }
        }
    }
    let model = semantic::model();
    let reference = model.embed(&question.reference);
    texts
        .iter()
        .map(|text| (semantic::cosine(&model.embed(text), &reference), None))
        .collect()
}

/// The answer's carried exact vector; empty (so `answer-score` scores it
/// with the static table) if the embedder failed, which is logged.
async fn answer_vector(exact: &ExactEmbedder, answer: &Answer) -> String {
    match exact.vectors(vec![answer.answer.clone()]).await {
        Ok(mut vectors) => vectors.pop().unwrap_or_default(),
        Err(e) => {
            tracing::warn!(question = %answer.question.id, error = %e, "no exact vector for the answer: answer-score falls back to the static scorer");
            String::new()
        }
    }
}

/// What the model is asked for `question`: the prompt for its attempt, and
/// a sampling seed of its own, so that a regenerated attempt is a new draw.
pub fn chat_request(config: &LlmAgentConfig, question: &Question) -> ChatRequest {
    let mut request = prompt::request(
        question,
        config.regenerate_prompt,
        config.max_tokens,
        attempt_temperature(config, question.attempt),
    );
    request.seed = Some(seed::attempt_seed(
        config.sample_seed,
        &question.id,
        question.attempt,
    ));
    request
}

/// The sampling temperature of `attempt`: the configured one, raised by
/// the step for each attempt after the first, at most 2.
pub fn attempt_temperature(config: &LlmAgentConfig, attempt: u32) -> f32 {
    let raised = config.temperature + config.temperature_step * attempt.saturating_sub(1) as f32;
    raised.clamp(0.0, 2.0)
}

/// The quota is spent (the limiter is already paused): park the question on
/// `deferred` until the quota returns.
async fn park(context: &Context, mut question: Question, delay: Duration) -> anyhow::Result<()> {
    question.not_before_ms = Some(now_ms() + delay.as_millis() as u64);
    let value = serde_json::to_vec(&question)?;
    context
        .deferred
        .send(Record::keyed(question.id.clone(), value))
        .await?;
    context.caller.stats.parked();
    tracing::info!(question = %question.id, delay_ms = delay.as_millis() as u64, "quota spent: question parked");
    Ok(())
}

/// The agent stopped while the question waited for an open circuit: it
/// goes to `deferred`, due at once, so that the next start asks it (its
/// offset here can then be committed without losing it).
async fn requeue(context: &Context, question: Question) -> anyhow::Result<()> {
    let value = serde_json::to_vec(&question)?;
    context
        .deferred
        .send(Record::keyed(question.id.clone(), value))
        .await?;
    tracing::info!(question = %question.id, "stopping while the provider's circuit is open: question kept for the next start");
    Ok(())
}

async fn dead_letter(context: &Context, letter: DeadLetter) -> anyhow::Result<()> {
    let value = serde_json::to_vec(&letter)?;
    context
        .dead_letters
        .send(Record::keyed(letter.id.clone(), value))
        .await?;
    context.caller.stats.dead_lettered(letter.class);
    Ok(())
}

#[cfg(test)]
mod temperature_tests {
    use super::*;

    #[test]
    fn later_attempts_sample_hotter_by_the_step_up_to_two() {
        let config = LlmAgentConfig {
            temperature: 0.7,
            temperature_step: 0.3,
            ..LlmAgentConfig::default()
        };
        let t = |attempt| attempt_temperature(&config, attempt);
        assert_eq!(t(1), 0.7);
        assert!((t(2) - 1.0).abs() < 1e-6);
        assert!((t(3) - 1.3).abs() < 1e-6);
        assert_eq!(t(9), 2.0);
        assert_eq!(attempt_temperature(&LlmAgentConfig::default(), 3), 0.7);
    }
}
