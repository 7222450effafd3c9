//! What the store keeps for an answered question.

use std::collections::BTreeMap;

use answerloop_schema::{Answer, Verdict};
use serde::{Deserialize, Serialize};

/// A question's final answer: the accepted one, or for an exhausted question
/// its best-scoring attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub id: String,
    pub title: String,
    pub content: String,
    pub reference: String,
    pub category: u8,
    pub answer: String,
    pub score: f32,
    /// `accept` or `exhausted`.
    pub verdict: Verdict,
    /// The attempt that produced the stored answer.
    pub attempt: u32,
    /// Scored answers the question took in all.
    pub attempts: u32,
    /// LLM calls the question took in all, retries included.
    pub llm_attempts: u32,
    /// Failed LLM calls by error class, retries and deferrals.
    #[serde(default)]
    pub failed_calls: BTreeMap<String, u32>,
    pub model: String,
    /// The provider that produced the stored answer (`openai`, `llm-sim#2`).
    #[serde(default)]
    pub provider: String,
    /// Times the question was sent back after a dead letter
    /// (`answerloop dead-letters retry`).
    #[serde(default)]
    pub redrives: u32,
    /// The LLM latency of the final attempt.
    pub latency_ms: u64,
    /// From traffic producing the question to its final answer.
    pub end_to_end_ms: u64,
    pub stored_ms: u64,
}

impl StoredAnswer {
    /// The final answer for a scored answer that passed the quality gate:
    /// the answer itself when accepted, the best attempt otherwise. `None`
    /// when the record was never scored.
    pub fn from_final(answer: &Answer, now_ms: u64) -> Option<Self> {
        let score = answer.score?;
        let q = &answer.question;
        let accepted = answer.verdict == Some(Verdict::Accept);
        let best = answer.resolved_best();
        let (text, best_score, attempt, model, provider) = match (&best, accepted) {
            (Some(best), false) => (
                &best.answer,
                best.score,
                best.attempt,
                &best.model,
                &best.provider,
            ),
            _ => (
                &answer.answer,
                score,
                q.attempt,
                &answer.model,
                &answer.provider,
            ),
        };
        Some(Self {
            id: q.id.clone(),
            title: q.title.clone(),
            content: q.content.clone(),
            reference: q.reference.clone(),
            category: q.category,
            answer: text.clone(),
            score: best_score,
            verdict: if accepted {
                Verdict::Accept
            } else {
                Verdict::Exhausted
            },
            attempt,
            attempts: q.attempt,
            llm_attempts: q.llm_attempts,
            failed_calls: q.failed_calls.clone(),
            model: model.clone(),
            provider: provider.clone(),
            redrives: q.redrives,
            latency_ms: answer.latency_ms,
            end_to_end_ms: now_ms.saturating_sub(q.trace.queued_ms),
            stored_ms: now_ms,
        })
    }
}
