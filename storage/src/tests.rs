use answerloop_schema::{question_id, Answer, Best, DeadLetter, FailureClass, Question, Verdict};

use super::*;
use crate::export::Format;

fn scored(title: &str, answer: &str, score: f32, verdict: Verdict, attempt: u32) -> Answer {
    let mut question = Question::new(title, "", "ref", 3).at_attempt(attempt);
    question.best = Some(Best {
        answer: "best so far".into(),
        score: 0.3,
        attempt: 1,
        model: "m".into(),
        provider: "p".into(),
    });
    question.trace.queued_ms = 100;
    let mut answer = Answer::new(question, answer, "m", 7);
    answer.score = Some(score);
    answer.verdict = Some(verdict);
    answer
}

fn dead(title: &str) -> DeadLetter {
    DeadLetter {
        id: question_id(title),
        class: FailureClass::Permanent,
        reason: "HTTP 400".into(),
        status: Some(400),
        question: None,
        raw: None,
        at_ms: 1,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("store")).unwrap();
    (dir, store)
}

#[test]
fn the_same_final_answer_written_twice_leaves_one_entry() {
    let (_dir, store) = open();
    let a = StoredAnswer::from_final(&scored("q1", "yes", 0.9, Verdict::Accept, 1), 200).unwrap();
    assert_eq!(store.put_answer(&a).unwrap(), Written::Inserted);
    assert_eq!(store.put_answer(&a).unwrap(), Written::AlreadyFinal);
    assert_eq!(store.answer_count(), 1);
    assert_eq!(store.get(&a.id).unwrap(), Some(a));
}

#[test]
fn a_question_is_stored_or_dead_lettered_never_both() {
    let (_dir, store) = open();
    assert_eq!(
        store.put_dead_letter(&dead("q1")).unwrap(),
        Written::Inserted
    );
    let a = StoredAnswer::from_final(&scored("q1", "yes", 0.9, Verdict::Accept, 1), 200).unwrap();
    assert_eq!(store.put_answer(&a).unwrap(), Written::AlreadyFinal);
    assert_eq!(
        store.put_dead_letter(&dead("q1")).unwrap(),
        Written::AlreadyFinal
    );
    assert_eq!((store.answer_count(), store.dead_letter_count()), (0, 1));
    assert!(store.is_final(&question_id("q1")).unwrap());
}

#[test]
fn an_exhausted_question_stores_its_best_attempt_flagged() {
    let a =
        StoredAnswer::from_final(&scored("q", "worse", 0.1, Verdict::Exhausted, 3), 200).unwrap();
    assert_eq!(a.answer, "best so far");
    assert_eq!((a.score, a.attempt, a.attempts), (0.3, 1, 3));
    assert_eq!(a.verdict, Verdict::Exhausted);
    assert_eq!(a.end_to_end_ms, 100);
}

#[test]
fn an_exhausted_question_whose_last_attempt_was_its_best_stores_that_answer() {
    let mut answer = scored("q", "the last and best", 0.35, Verdict::Exhausted, 3);
    answer.provider = "sim#2".into();
    // As answer-score writes it: the best is this record's own attempt.
    answer.question.best = Some(Best::own_attempt(0.35, 3));
    let a = StoredAnswer::from_final(&answer, 200).unwrap();
    assert_eq!(a.answer, "the last and best");
    assert_eq!((a.score, a.attempt), (0.35, 3));
    assert_eq!((a.model.as_str(), a.provider.as_str()), ("m", "sim#2"));
}

#[test]
fn an_accepted_answer_stores_itself() {
    let a = StoredAnswer::from_final(&scored("q", "good", 0.8, Verdict::Accept, 2), 200).unwrap();
    assert_eq!((a.answer.as_str(), a.score, a.attempt), ("good", 0.8, 2));
}

#[test]
fn entries_survive_a_reopen_after_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let store = Store::open(&path).unwrap();
        let a =
            StoredAnswer::from_final(&scored("q1", "yes", 0.9, Verdict::Accept, 1), 200).unwrap();
        store.put_answer(&a).unwrap();
        store.flush_blocking().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.answer_count(), 1);
}

#[test]
fn stats_count_and_average() {
    let (_dir, store) = open();
    for (t, s, v, att) in [
        ("a", 0.8, Verdict::Accept, 1),
        ("b", 0.6, Verdict::Accept, 2),
        ("c", 0.1, Verdict::Exhausted, 3),
    ] {
        store
            .put_answer(&StoredAnswer::from_final(&scored(t, "x", s, v, att), 1).unwrap())
            .unwrap();
    }
    store.put_dead_letter(&dead("d")).unwrap();
    let stats = store.stats().unwrap();
    assert_eq!(
        (
            stats.stored,
            stats.accepted,
            stats.exhausted,
            stats.dead_letters
        ),
        (3, 2, 1, 1)
    );
    assert!((stats.mean_score_stored - (0.8 + 0.6 + 0.3) / 3.0).abs() < 1e-6);
    assert_eq!(stats.stored_by_attempt, vec![2, 1]);
}

#[test]
fn export_writes_jsonl_and_quoted_csv() {
    let (_dir, store) = open();
    let a = scored(
        "Is \"this\", quoted?",
        "yes, \"it\" is\nreally",
        0.9,
        Verdict::Accept,
        1,
    );
    store
        .put_answer(&StoredAnswer::from_final(&a, 1).unwrap())
        .unwrap();
    let mut jsonl = Vec::new();
    assert_eq!(store.export(Format::Jsonl, &mut jsonl).unwrap(), 1);
    let line: StoredAnswer = serde_json::from_slice(jsonl.trim_ascii_end()).unwrap();
    assert_eq!(line.answer, "yes, \"it\" is\nreally");
    let mut csv_out = Vec::new();
    store.export(Format::Csv, &mut csv_out).unwrap();
    let mut reader = csv::Reader::from_reader(csv_out.as_slice());
    let row = reader.records().next().unwrap().unwrap();
    assert_eq!(&row[2], "Is \"this\", quoted?");
    assert_eq!(&row[3], "yes, \"it\" is\nreally");
}

#[test]
fn a_corrupt_entry_is_an_error_naming_its_key() {
    let (_dir, store) = open();
    store.answers.insert("bad-id", b"{oops".as_slice()).unwrap();
    let err = store.get("bad-id").unwrap_err();
    assert!(err.to_string().contains("bad-id"), "{err}");
}

#[test]
fn a_redriven_dead_letter_is_moved_once_and_its_question_can_then_be_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let question = Question::new("Why?", "", "ref", 1);
    let letter = DeadLetter::of_question(
        question.clone(),
        FailureClass::Overload,
        "down".into(),
        Some(503),
        5,
    );
    store.put_dead_letter(&letter).unwrap();
    assert_eq!(
        store.redrive(&question.id, 9).unwrap(),
        Some(letter.clone())
    );
    assert_eq!(store.redrive(&question.id, 10).unwrap(), None, "once");
    assert!(!store.is_final(&question.id).unwrap());
    let record = store.redriven(&question.id).unwrap().unwrap();
    assert_eq!((record.times, record.redriven_ms), (1, 9));
    let mut answer = scored("Why?", "Because.", 0.9, Verdict::Accept, 1);
    answer.question.redrives = 1;
    let stored = StoredAnswer::from_final(&answer, 11).unwrap();
    assert_eq!(store.put_answer(&stored).unwrap(), Written::Inserted);
    assert_eq!(store.get(&question.id).unwrap().unwrap().redrives, 1);
    store.put_dead_letter(&letter).unwrap();
    assert_eq!(
        store.redrive(&question.id, 12).unwrap(),
        None,
        "stored stays stored"
    );
}
