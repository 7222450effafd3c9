//! The decisions the three SmartModules make, as plain functions over records
//! and over raw bytes. The byte-level functions are total: any input gives an
//! output, because in Fluvio one SmartModule error stops the whole batch.
//!
//! `regenerate` and `passes_gate` partition every scored record: for the same
//! params, exactly one of them takes it, so nothing is lost or doubled.

use answerloop_schema::{Answer, Best, InvalidRecord, Question, Scored, Verdict};

use std::cell::RefCell;

use crate::carried::{self, ExactBuffers};
use crate::scorer::RecordScorer;
use crate::{semantic, Params};

/// Score an answer against its reference, record the verdict, and fold this
/// attempt into the question's best-so-far (as its score and attempt: the
/// text is the record's, see [`Best`]).
pub fn judge(answer: &mut Answer, params: &Params) {
    let score = score(answer);
    answer.score = Some(score);
    answer.verdict = Some(verdict(score, answer.question.attempt, params));
    let best = &mut answer.question.best;
    if best.as_ref().is_none_or(|b| score >= b.score) {
        *best = Some(Best::own_attempt(score, answer.question.attempt));
    }
}

/// The answer's score: the cosine of the answer's and the reference's
/// carried exact vectors when it has both, else the static score of the
/// answer's text against the reference's carried static vector, or its text
/// (the numbers [`RecordScorer`] gives, to the bit).
pub fn score(answer: &Answer) -> f32 {
    let (text, question) = (&answer.answer, &answer.question);
    let exact = carried::exact_score(
        &answer.answer_vector,
        &question.reference_vector,
        &mut ExactBuffers::default(),
    );
    if let Some(score) = exact {
        return score;
    }
    let model = semantic::model();
    match model.read_carried(&question.reference_vector, &mut Vec::new()) {
        Some(reference) => {
            let vector = model.embed(text);
            let norm2 = semantic::norm2(&vector);
            semantic::cosine_with_norms(&vector, norm2, &reference.vector, reference.norm2)
        }
        None => model.score(text, &question.reference),
    }
}

/// Accept at or above the threshold; otherwise regenerate while attempts remain.
pub fn verdict(score: f32, attempt: u32, params: &Params) -> Verdict {
    if score >= params.threshold {
        Verdict::Accept
    } else if attempt < params.max_attempts {
        Verdict::Regenerate
    } else {
        Verdict::Exhausted
    }
}

/// The next question for a rejected answer with attempts left, carrying the
/// best answer so far; `None` for anything else.
pub fn regenerate(answer: &Answer, params: &Params) -> Option<Question> {
    let score = answer.score?;
    if verdict(score, answer.question.attempt, params) != Verdict::Regenerate {
        return None;
    }
    let mut next = answer.question.clone();
    next.best = answer.resolved_best();
    next.attempt += 1;
    next.not_before_ms = None;
    Some(next)
}

/// Whether a scored record goes on to the store agent: accepted or exhausted
/// answers, and broken or unscored records, which the store agent dead-letters.
pub fn passes_gate(scored: &Scored, params: &Params) -> bool {
    match scored {
        Scored::Invalid(_) => true,
        Scored::Answer(answer) => match answer.score {
            None => true,
            Some(score) => verdict(score, answer.question.attempt, params) != Verdict::Regenerate,
        },
    }
}

/// `answer-score` on raw bytes: the scored answer, or an invalid tag.
/// Runs a [`RecordScorer`] kept by the thread, so the buffers and the
/// references' embeddings carry over from record to record.
pub fn score_record(bytes: &[u8], params: &Params) -> Vec<u8> {
    thread_local! {
        static SCORER: RefCell<RecordScorer> = RefCell::new(RecordScorer::default());
    }
    SCORER.with(|scorer| scorer.borrow_mut().score_record(bytes, params))
}

/// [`score_record`] the plain way: parse the whole record, [`judge`] it,
/// write it whole. What the fast path is checked against, and what it
/// falls back to for a record it refuses.
pub fn score_whole_record(bytes: &[u8], params: &Params) -> Vec<u8> {
    match serde_json::from_slice::<Answer>(bytes) {
        Ok(mut answer) => {
            judge(&mut answer, params);
            to_json(&answer)
        }
        Err(err) => to_json(&InvalidRecord::new(
            format!("not an answer record: {err}"),
            bytes,
        )),
    }
}

/// `regenerate` on raw bytes: the next question, if any.
pub fn regenerate_record(bytes: &[u8], params: &Params) -> Option<Vec<u8>> {
    match Scored::decode(bytes) {
        Scored::Answer(answer) => regenerate(&answer, params).map(|q| to_json(&q)),
        Scored::Invalid(_) => None,
    }
}

/// `quality-gate` on raw bytes.
pub fn gate_record(bytes: &[u8], params: &Params) -> bool {
    passes_gate(&Scored::decode(bytes), params)
}

fn to_json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these plain structs to a Vec cannot fail: no maps with
    // non-string keys, no I/O. Fall back to an empty object rather than panic.
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = "Ice floats because frozen water is less dense than liquid water.";

    fn answer(text: &str, attempt: u32) -> Answer {
        let question = Question::new("Why does ice float?", "", REFERENCE, 2).at_attempt(attempt);
        Answer::new(question, text, "test", 1)
    }

    const GOOD: &str = "Frozen water is less dense, so ice floats on top.";
    const BAD: &str = "Mortgage rates depend on the central bank.";

    #[test]
    fn verdicts_follow_threshold_and_attempts() {
        let p = Params::default();
        let mut a = answer(GOOD, 1);
        judge(&mut a, &p);
        assert_eq!(a.verdict, Some(Verdict::Accept));
        let mut a = answer(BAD, 1);
        judge(&mut a, &p);
        assert_eq!(a.verdict, Some(Verdict::Regenerate));
        let mut a = answer(BAD, 3);
        judge(&mut a, &p);
        assert_eq!(a.verdict, Some(Verdict::Exhausted));
    }

    #[test]
    fn judge_keeps_the_best_attempt() {
        let p = Params {
            threshold: 0.99,
            ..Params::default()
        };
        let mut first = answer("Ice is less dense.", 1);
        first.model = "first-model".into();
        judge(&mut first, &p);
        let own = first.question.best.clone().unwrap();
        assert_eq!(
            (own.answer.as_str(), own.attempt),
            ("", 1),
            "not copied twice"
        );
        let resolved = first.resolved_best().unwrap();
        assert_eq!(resolved.answer, "Ice is less dense.");
        assert_eq!(resolved.model, "first-model");

        let next = regenerate(&first, &p).expect("rejected at 0.99");
        assert_eq!(next.best.as_ref().unwrap().answer, "Ice is less dense.");
        let mut second = Answer::new(next, BAD, "second-model", 1);
        judge(&mut second, &p);
        let best = second.resolved_best().unwrap();
        assert_eq!(best.attempt, 1);
        assert_eq!(best.answer, "Ice is less dense.");
        assert_eq!(best.model, "first-model");
    }

    #[test]
    fn regenerate_and_gate_partition_scored_answers() {
        let p = Params::default();
        for (text, attempt) in [(GOOD, 1), (BAD, 1), (BAD, 2), (BAD, 3), (GOOD, 3)] {
            let mut a = answer(text, attempt);
            judge(&mut a, &p);
            let regen = regenerate(&a, &p).is_some();
            let gate = passes_gate(&Scored::Answer(a.clone()), &p);
            assert!(
                regen != gate,
                "{text} attempt {attempt}: regen={regen} gate={gate}"
            );
        }
    }

    #[test]
    fn regenerated_question_is_the_next_attempt_with_the_best_so_far() {
        let p = Params::default();
        let mut a = answer(BAD, 1);
        judge(&mut a, &p);
        let q = regenerate(&a, &p).unwrap();
        assert_eq!(q.attempt, 2);
        assert_eq!(q.best.unwrap().answer, BAD);
    }

    #[test]
    fn broken_bytes_are_tagged_not_failed() {
        let p = Params::default();
        let out = score_record(b"\xff\xfe garbage", &p);
        let tag: InvalidRecord = serde_json::from_slice(&out).unwrap();
        assert_eq!(tag.verdict, Verdict::Invalid);
        assert!(gate_record(&out, &p));
        assert_eq!(regenerate_record(&out, &p), None);
    }

    #[test]
    fn unscored_answers_go_to_the_gate_not_back_to_the_model() {
        let p = Params::default();
        let bytes = serde_json::to_vec(&answer(BAD, 1)).unwrap();
        assert!(gate_record(&bytes, &p));
        assert_eq!(regenerate_record(&bytes, &p), None);
    }
}
