//! What a run came to, counted once: how many questions are stored
//! (accepted or exhausted) or dead-lettered, by which attempt, with which
//! scores and LLM calls; which expected questions are lost or final twice.
//!
//! `run`'s summary, the HTML report and the crash test all read their
//! figures from here, so that the three can never count differently. The
//! answer store holds final states only; the first attempts' scores come
//! from the scored `answers` log ([`scored_attempts`]).

use std::collections::{BTreeMap, HashSet};

use answerloop_broker::Broker;
use answerloop_dataset::IdSet;
use answerloop_schema::{topics, Scored, Verdict};
use answerloop_scoring::Params;
use answerloop_storage::Store;

/// `provider/model` for a stored answer, or the model alone when no
/// provider is recorded (answers stored before providers were recorded).
pub fn model_key(answer: &answerloop_storage::StoredAnswer) -> String {
    match answer.provider.as_str() {
        "" => answer.model.clone(),
        provider => format!("{provider}/{}", answer.model),
    }
}

/// One scored answer on `answers`: its question, attempt, score and verdict.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredAttempt {
    pub id: String,
    pub attempt: u32,
    pub score: f32,
    pub verdict: Verdict,
    pub latency_ms: u64,
}

/// Every answer on `answers`, scored by `answer-score` with `params`, each
/// (question, attempt) once (a replayed answer counts once), in log order;
/// only the questions in `expected` when given.
pub async fn scored_attempts(
    broker: &dyn Broker,
    params: &Params,
    expected: Option<&IdSet>,
) -> anyhow::Result<Vec<ScoredAttempt>> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    let chain = crate::chains::scored(params);
    answerloop_broker::scan(broker, topics::ANSWERS, Some(&chain), |record| {
        let Scored::Answer(answer) = Scored::decode(&record.value) else {
            return;
        };
        let (Some(score), Some(verdict)) = (answer.score, answer.verdict) else {
            return;
        };
        let question = answer.question;
        if expected.is_some_and(|ids| !ids.contains(&question.id)) {
            return;
        }
        if seen.insert((question.id.clone(), question.attempt)) {
            out.push(ScoredAttempt {
                id: question.id,
                attempt: question.attempt,
                score,
                verdict,
                latency_ms: answer.latency_ms,
            });
        }
    })
    .await?;
    Ok(out)
}

/// The final states in an answer store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tally {
    pub stored: usize,
    pub accepted: usize,
    /// Stored with the best of their attempts after the last was rejected.
    pub exhausted: usize,
    /// Dead letters of questions not also stored.
    pub dead_letters: usize,
    pub dead_letters_by_class: BTreeMap<String, usize>,
    pub dead_letters_without_reason: usize,
    /// Stored answers by the attempt that produced them (index 0 = attempt 1).
    pub stored_by_attempt: Vec<usize>,
    pub mean_score_stored: Option<f64>,
    /// Stored answers by the provider and model that produced them
    /// (`provider/model`; just the model for answers that name no provider).
    pub stored_by_model: BTreeMap<String, usize>,
    /// Stored answers whose question was redriven after a dead letter.
    pub stored_redriven: usize,
    /// LLM calls the final questions took, and the failed ones by class.
    pub llm_calls: u64,
    pub failed_calls: BTreeMap<String, u64>,
    /// Expected questions neither stored nor dead-lettered, sorted.
    pub lost: Vec<String>,
    /// Questions both stored and dead-lettered, plus final questions that
    /// were never expected.
    pub duplicates: usize,
}

impl Tally {
    /// Count `store`; only the questions in `expected` when given (the others
    /// then count as duplicates). Attempts past `max_attempts` count as the
    /// last. No question is listed as lost: the ids are held as numbers.
    pub fn count(
        store: &Store,
        expected: Option<&IdSet>,
        max_attempts: u32,
    ) -> anyhow::Result<Self> {
        let is_expected = |id: &str| expected.is_none_or(|ids| ids.contains(id));
        Ok(Self::count_where(&[store], is_expected, max_attempts)?.0)
    }

    /// Count the stores of store agents that split the questions among
    /// them (`--member`) as one: a question final in two of them is a
    /// duplicate. The expected questions neither stored nor dead-lettered
    /// are listed as lost.
    pub fn count_all(
        stores: &[&Store],
        expected: Option<&HashSet<&str>>,
        max_attempts: u32,
    ) -> anyhow::Result<Self> {
        let is_expected = |id: &str| expected.is_none_or(|ids| ids.contains(id));
        let (mut tally, finals) = Self::count_where(stores, is_expected, max_attempts)?;
        if let Some(ids) = expected {
            let mut lost: Vec<String> = ids
                .iter()
                .filter(|id| !finals.contains(**id))
                .map(|id| id.to_string())
                .collect();
            lost.sort_unstable();
            tally.lost = lost;
        }
        Ok(tally)
    }

    /// The tally of the questions `is_expected` takes, and the ids of those
    /// final.
    fn count_where(
        stores: &[&Store],
        is_expected: impl Fn(&str) -> bool,
        max_attempts: u32,
    ) -> anyhow::Result<(Self, HashSet<String>)> {
        let mut tally = Tally::default();
        let mut stored = HashSet::new();
        let mut scores = Vec::new();
        for answer in stores.iter().flat_map(|store| store.answers()) {
            let answer = answer?;
            if !is_expected(&answer.id) || stored.contains(&answer.id) {
                tally.duplicates += 1;
                continue;
            }
            match answer.verdict {
                Verdict::Accept => tally.accepted += 1,
                _ => tally.exhausted += 1,
            }
            scores.push(f64::from(answer.score));
            let slot = answer.attempt.clamp(1, max_attempts.max(1)) as usize - 1;
            if tally.stored_by_attempt.len() <= slot {
                tally.stored_by_attempt.resize(slot + 1, 0);
            }
            tally.stored_by_attempt[slot] += 1;
            *tally.stored_by_model.entry(model_key(&answer)).or_default() += 1;
            tally.stored_redriven += usize::from(answer.redrives > 0);
            tally.add_calls(answer.llm_attempts, &answer.failed_calls);
            stored.insert(answer.id);
        }
        tally.stored = stored.len();
        let mut dead = HashSet::new();
        for letter in stores.iter().flat_map(|store| store.dead_letters()) {
            let letter = letter?;
            if !is_expected(&letter.id) || stored.contains(&letter.id) || dead.contains(&letter.id)
            {
                tally.duplicates += 1;
                continue;
            }
            if letter.reason.trim().is_empty() {
                tally.dead_letters_without_reason += 1;
            }
            *tally
                .dead_letters_by_class
                .entry(letter.class.as_str().to_string())
                .or_default() += 1;
            if let Some(q) = &letter.question {
                tally.add_calls(q.llm_attempts, &q.failed_calls);
            }
            dead.insert(letter.id);
        }
        tally.dead_letters = dead.len();
        tally.mean_score_stored = mean(scores.into_iter());
        stored.extend(dead);
        Ok((tally, stored))
    }

    fn add_calls(&mut self, calls: u32, failed: &BTreeMap<String, u32>) {
        self.llm_calls += u64::from(calls);
        for (class, n) in failed {
            *self.failed_calls.entry(class.clone()).or_default() += u64::from(*n);
        }
    }

    /// Questions in a final state.
    pub fn finals(&self) -> usize {
        self.stored + self.dead_letters
    }
}

/// First attempts: their share accepted and their mean score.
pub fn first_attempts(scored: &[ScoredAttempt]) -> (Option<f64>, Option<f64>) {
    let first = attempt_figures(scored, 1);
    (first.acceptance, first.mean_score)
}

/// How the answers of one attempt number fared.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AttemptFigures {
    pub attempt: u32,
    /// Scored answers of this attempt (one a question).
    pub answers: usize,
    pub accepted: usize,
    /// `accepted / answers`.
    pub acceptance: Option<f64>,
    pub mean_score: Option<f64>,
}

/// [`AttemptFigures`] for attempts 1 to the last one seen.
pub fn by_attempt(scored: &[ScoredAttempt]) -> Vec<AttemptFigures> {
    let last = scored.iter().map(|s| s.attempt).max().unwrap_or(0);
    (1..=last)
        .map(|attempt| attempt_figures(scored, attempt))
        .collect()
}

/// [`AttemptFigures`] of the answers to `attempt`.
fn attempt_figures(scored: &[ScoredAttempt], attempt: u32) -> AttemptFigures {
    let these: Vec<&ScoredAttempt> = scored.iter().filter(|s| s.attempt == attempt).collect();
    let accepted = these
        .iter()
        .filter(|s| s.verdict == Verdict::Accept)
        .count();
    AttemptFigures {
        attempt,
        answers: these.len(),
        accepted,
        acceptance: share(accepted, these.len()),
        mean_score: mean(these.iter().map(|s| f64::from(s.score))),
    }
}

pub fn share(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

pub fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use answerloop_schema::{Answer, DeadLetter, FailureClass, Question};
    use answerloop_storage::StoredAnswer;

    fn stored(title: &str) -> StoredAnswer {
        let mut answer = Answer::new(Question::new(title, "", "ref", 1), "an answer", "m", 1);
        answer.score = Some(0.9);
        answer.verdict = Some(Verdict::Accept);
        StoredAnswer::from_final(&answer, 0).unwrap()
    }

    fn letter(title: &str) -> DeadLetter {
        let question = Question::new(title, "", "ref", 1);
        DeadLetter::of_question(question, FailureClass::Permanent, "401".into(), None, 0)
    }

    #[test]
    fn stores_that_split_the_questions_count_as_one() {
        let dir = tempfile::tempdir().unwrap();
        let one = Store::open(&dir.path().join("1")).unwrap();
        let two = Store::open(&dir.path().join("2")).unwrap();
        let (a, b, c, d) = (stored("a?"), stored("b?"), letter("c?"), stored("d?"));
        one.put_answer(&a).unwrap();
        two.put_answer(&b).unwrap();
        two.put_dead_letter(&c).unwrap();
        let expected: HashSet<&str> = [a.id.as_str(), b.id.as_str(), c.id.as_str(), d.id.as_str()]
            .into_iter()
            .collect();
        let tally = Tally::count_all(&[&one, &two], Some(&expected), 3).unwrap();
        assert_eq!(
            (tally.stored, tally.dead_letters, tally.duplicates),
            (2, 1, 0)
        );
        assert_eq!(tally.lost, vec![d.id.clone()]);

        // The same question final in both stores is a duplicate, however
        // it ended in each.
        one.put_answer(&b).unwrap();
        one.put_dead_letter(&c).unwrap();
        let tally = Tally::count_all(&[&one, &two], Some(&expected), 3).unwrap();
        assert_eq!(
            (tally.stored, tally.dead_letters, tally.duplicates),
            (2, 1, 2)
        );
    }
}
