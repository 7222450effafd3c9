//! `answer-score`'s work on one record's bytes, done cheaply: what
//! [`decide::score_record`](crate::decide::score_record) runs.
//!
//! Three savings over parsing the whole [`Answer`](answerloop_schema::Answer),
//! judging it and writing it again, none of which moves a score or a
//! decision (tests compare them with the plain way, bit for bit):
//!
//! - The record is read as an [`AnswerView`]: the texts stay where they are
//!   in the input, and are copied to the output as they came instead of
//!   being decoded, allocated and escaped again.
//! - A reference's embedding is kept, by question id, for the next attempt
//!   at the same question (the reference never changes between attempts);
//!   it is used only if the reference's bytes hash the same.
//! - The tokeniser's and the sums' buffers are reused from record to record.
//!
//! When the record carries exact vectors for both the answer and the
//! reference (`--scorer exact`), the score is their cosine
//! ([`carried::exact_score`]), as in the plain way, and nothing is embedded.
//!
//! A record the view refuses goes the plain way, so it is tagged invalid
//! with the very error it always was.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use answerloop_schema::view::{AnswerView, BestView, RawStr};
use rustc_hash::FxHasher;

use crate::carried::{self, ExactBuffers};
use crate::decide::{score_whole_record, verdict};
use crate::semantic::{self, Embedding, Scratch, StaticModel};
use crate::Params;

/// References kept a generation; at most twice this many are kept (about
/// 600 bytes each for the built-in table).
pub const REFERENCES_KEPT: usize = 2048;

/// Scores records one after another, reusing what it can between them.
#[derive(Debug, Default)]
pub struct RecordScorer {
    scratch: Scratch,
    answer: Vec<f32>,
    references: ReferenceCache,
    /// A carried vector's bytes, decoded.
    carried: Vec<u8>,
    /// A carried reference vector, read.
    carried_reference: Vec<f32>,
    /// References read from their carried vectors.
    carried_read: u64,
    /// Two carried exact vectors' bytes, decoded.
    exact: ExactBuffers,
    /// Records scored from their exact vectors.
    exact_read: u64,
}

impl RecordScorer {
    /// The record scored (score, verdict and best-so-far written in), or
    /// the tag of a record that is not an answer.
    pub fn score_record(&mut self, bytes: &[u8], params: &Params) -> Vec<u8> {
        let Ok(mut view) = serde_json::from_slice::<AnswerView>(bytes) else {
            return score_whole_record(bytes, params);
        };
        let score = self.score(semantic::model(), &view);
        let attempt = view.question.attempt;
        view.score = Some(score);
        view.verdict = Some(verdict(score, attempt, params));
        if view.question.best.as_ref().is_none_or(|b| score >= b.score) {
            view.question.best = Some(BestView {
                answer: RawStr::empty(),
                score,
                attempt,
                model: RawStr::empty(),
                provider: RawStr::empty(),
            });
        }
        let mut out = Vec::with_capacity(bytes.len() + view.answer.json().len() + 96);
        match serde_json::to_writer(&mut out, &view) {
            Ok(()) => out,
            Err(_) => score_whole_record(bytes, params),
        }
    }

    /// The score of the view's answer against its reference: the cosine of
    /// their exact vectors when both are carried, else the number
    /// [`semantic::score`] gives for the two texts.
    fn score(&mut self, model: &StaticModel<'_>, view: &AnswerView<'_>) -> f32 {
        if !view.answer_vector.is_empty() {
            let exact = carried::exact_score(
                &view.answer_vector.text(),
                &view.question.reference_vector.text(),
                &mut self.exact,
            );
            if let Some(score) = exact {
                self.exact_read += 1;
                return score;
            }
        }
        self.answer.resize(model.table().dims, 0.0);
        model.embed_into(&view.answer.text(), &mut self.scratch, &mut self.answer);
        let answer_norm2 = semantic::norm2(&self.answer);
        let carried = match view.question.reference_vector.text() {
            text if text.is_empty() => None,
            text => model.read_carried_into(&text, &mut self.carried, &mut self.carried_reference),
        };
        if let Some(reference_norm2) = carried {
            self.carried_read += 1;
            return semantic::cosine_with_norms(
                &self.answer,
                answer_norm2,
                &self.carried_reference,
                reference_norm2,
            );
        }
        let reference = self.references.embedding(
            view.question.id.json(),
            view.question.reference,
            model,
            &mut self.scratch,
        );
        semantic::cosine_with_norms(
            &self.answer,
            answer_norm2,
            &reference.vector,
            reference.norm2,
        )
    }

    /// References read from the vectors their records carried.
    pub fn carried_read(&self) -> u64 {
        self.carried_read
    }

    /// Records scored from their carried exact vectors.
    pub fn exact_read(&self) -> u64 {
        self.exact_read
    }

    /// References embedded so far, and how many were found kept.
    pub fn reference_counts(&self) -> (u64, u64) {
        (self.references.embedded, self.references.reused)
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// Reference embeddings by question id, in two generations: when the
/// current one is full it becomes the previous one and the oldest are
/// dropped; a hit in the previous one moves back to the current.
#[derive(Debug, Default)]
struct ReferenceCache {
    current: FxMap<Box<str>, Kept>,
    previous: FxMap<Box<str>, Kept>,
    embedded: u64,
    reused: u64,
}

#[derive(Debug)]
struct Kept {
    /// Length and hash of the reference's JSON it was computed from.
    fingerprint: (usize, u64),
    embedding: Embedding,
}

impl ReferenceCache {
    fn embedding(
        &mut self,
        id: &str,
        reference: RawStr<'_>,
        model: &StaticModel<'_>,
        scratch: &mut Scratch,
    ) -> &Embedding {
        let json = reference.json();
        let fingerprint = (json.len(), fx_hash(json.as_bytes()));
        let kept = self
            .current
            .get(id)
            .is_some_and(|k| k.fingerprint == fingerprint);
        if kept {
            self.reused += 1;
        } else {
            let kept = match self.previous.remove(id) {
                Some(k) if k.fingerprint == fingerprint => {
                    self.reused += 1;
                    k
                }
                _ => {
                    self.embedded += 1;
                    Kept {
                        fingerprint,
                        embedding: model.embedding(&reference.text(), scratch),
                    }
                }
            };
            if self.current.len() >= REFERENCES_KEPT && !self.current.contains_key(id) {
                self.previous = std::mem::take(&mut self.current);
            }
            self.current.insert(id.into(), kept);
        }
        &self.current[id].embedding
    }
}

fn fx_hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use answerloop_schema::{Answer, Best, Question, Verdict};

    /// Texts to score: every line of the eval pairs, the local answers and
    /// the sample (quotes, punctuation, numbers as they come), and some
    /// made to be awkward.
    fn texts() -> Vec<String> {
        let mut texts: Vec<String> = [
            include_str!("../../../data/eval/pairs.csv"),
            include_str!("../../../data/eval/local-answers.csv"),
            include_str!("../../../data/sample.csv"),
        ]
        .iter()
        .flat_map(|file| file.lines().map(str::to_string))
        .collect();
        texts.extend(
            [
                "",
                "   ",
                "?!...",
                "Café naïve résumé Ærøskøbing ŁÓDŹ straße İstanbul ǅ ﬁne",
                "日本語のテキスト 中文 한국어 العربية русский текст",
                "emoji 🧊 floats 🧊🧊 \u{200b}zero\u{200b}width",
                "tab\tnew\nline\r\n\"quoted\" back\\slash \u{0007} bell",
                "unaffordableness antidisestablishmentarianism pneumonoultramicroscopic",
                "x",
            ]
            .map(str::to_string),
        );
        texts.push("x".repeat(150));
        texts.push("water ".repeat(3000));
        texts
    }

    fn record(answer: &str, reference: &str, attempt: u32, best: Option<f32>) -> Vec<u8> {
        let mut question = Question::new("A question?", "", reference, 2).at_attempt(attempt);
        question.best = best.map(|score| Best {
            answer: "an earlier answer".into(),
            score,
            attempt: 1,
            model: "m".into(),
            provider: String::new(),
        });
        let mut a = Answer::new(question, answer, "model", 5);
        a.provider = if attempt.is_multiple_of(2) {
            "sim#2".into()
        } else {
            String::new()
        };
        serde_json::to_vec(&a).unwrap()
    }

    /// The fast path's output against the plain path's: the same answer
    /// record to the bit (scores compared as f32 bits).
    fn assert_same(fast: &[u8], plain: &[u8]) {
        let parse = |b: &[u8]| serde_json::from_slice::<Answer>(b);
        match (parse(fast), parse(plain)) {
            (Ok(f), Ok(p)) => {
                assert_eq!(f, p);
                assert_eq!(f.score.map(f32::to_bits), p.score.map(f32::to_bits));
                let value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
                assert_eq!(value(fast), value(plain));
            }
            _ => assert_eq!(fast, plain, "an invalid tag is the very same bytes"),
        }
    }

    #[test]
    fn scores_verdicts_and_best_are_those_of_the_plain_path_bit_for_bit() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        let texts = texts();
        let mut verdicts = std::collections::HashMap::new();
        for (i, pair) in texts.windows(2).enumerate() {
            let attempt = (i % 3) as u32 + 1;
            let best = [None, Some(0.0), Some(0.45), Some(1.0)][i % 4];
            let bytes = record(&pair[0], &pair[1], attempt, best);
            let fast = scorer.score_record(&bytes, &params);
            assert_same(&fast, &score_whole_record(&bytes, &params));
            let scored: Answer = serde_json::from_slice(&fast).unwrap();
            *verdicts.entry(scored.verdict.unwrap()).or_insert(0) += 1;
        }
        assert!(verdicts.len() == 3, "every verdict came up: {verdicts:?}");
    }

    #[test]
    fn a_kept_reference_gives_the_same_score_and_a_changed_one_is_embedded_again() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        let reference = "Ice floats because frozen water is less dense than liquid water.";
        let first = record("Ice is less dense than water.", reference, 1, None);
        let again = record(
            "Frozen water is lighter, so it floats.",
            reference,
            2,
            Some(0.3),
        );
        for bytes in [&first, &again, &first] {
            assert_same(
                &scorer.score_record(bytes, &params),
                &score_whole_record(bytes, &params),
            );
        }
        assert_eq!(scorer.reference_counts(), (1, 2));
        // Same question id, another reference: not the kept embedding.
        let mut edited: Answer = serde_json::from_slice(&first).unwrap();
        edited.question.reference = "Mortgage rates follow the central bank.".into();
        let edited = serde_json::to_vec(&edited).unwrap();
        assert_same(
            &scorer.score_record(&edited, &params),
            &score_whole_record(&edited, &params),
        );
        assert_eq!(scorer.reference_counts(), (2, 2));
    }

    #[test]
    fn the_kept_references_are_bounded() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        for i in 0..REFERENCES_KEPT * 3 {
            let bytes = record("an answer", &format!("reference {i}"), 1, None);
            scorer.score_record(&bytes, &params);
        }
        let kept = scorer.references.current.len() + scorer.references.previous.len();
        assert!(kept <= 2 * REFERENCES_KEPT, "{kept}");
    }

    #[test]
    fn hostile_records_are_tagged_as_the_plain_path_tags_them() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        let good = String::from_utf8(record("a", "r", 1, None)).unwrap();
        let hostile: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"\xff\xfe garbage".to_vec(),
            b"{\"answer\": \"no question\"}".to_vec(),
            br#"{"title": 42, "reference": []}"#.to_vec(),
            br#"{"question":{"title":"t","reference":7},"answer":"a","model":"m"}"#.to_vec(),
            br#"{"question":{"title":"t","reference":"r"},"answer":"a","model":"m","verdict":"maybe"}"#.to_vec(),
            br#"{"question":{"title":"t","reference":"r","attempt":-1},"answer":"a","model":"m"}"#.to_vec(),
            good.replace("\"answer\":\"a\"", "\"answer\":\"a\",\"answer\":\"b\"").into_bytes(),
            good.as_bytes()[..good.len() - 1].to_vec(),
            format!("{good} trailing").into_bytes(),
            format!("  {good}\n").into_bytes(),
            good.replace("\"r\"", "\"\\u00e9\\ud83e\\uddca \\\"r\\\"\"").into_bytes(),
            good.replace("\"r\"", "\"\\ud800\"").into_bytes(),
            br#"{"question":{"title":"t","reference":"r","best":null,"failed_calls":{"quota":1,"quota":2}},"answer":"a","model":"m","score":null,"extra":{"x":[1,2]}}"#.to_vec(),
            br#"{"question":{"title":"t","reference":"r","best":{"answer":"b","score":1e400,"attempt":1}},"answer":"a","model":"m"}"#.to_vec(),
        ];
        for bytes in &hostile {
            assert_same(
                &scorer.score_record(bytes, &params),
                &score_whole_record(bytes, &params),
            );
        }
        let tag = scorer.score_record(b"{\"answer\": \"no question\"}", &params);
        let tag: answerloop_schema::InvalidRecord = serde_json::from_slice(&tag).unwrap();
        assert_eq!(tag.verdict, Verdict::Invalid);
        assert!(
            tag.error.contains("missing field `question`"),
            "{}",
            tag.error
        );
    }
    /// A made-up unit vector of the exact model's size for `text`: the
    /// scorer only reads vectors, it never computes them.
    fn exact_of(text: &str) -> String {
        let seed = fx_hash(text.as_bytes()) as f32 / u64::MAX as f32;
        let v: Vec<f32> = (0..carried::EXACT_DIMS)
            .map(|i| (i as f32 * (0.1 + seed) + seed * 7.0).sin() + 0.3)
            .collect();
        carried::exact_vector(&v)
    }

    fn with_vectors(bytes: &[u8], answer: Option<String>, reference: Option<String>) -> Vec<u8> {
        let mut a: Answer = serde_json::from_slice(bytes).unwrap();
        a.answer_vector = answer.unwrap_or_default();
        a.question.reference_vector = reference.unwrap_or_default();
        serde_json::to_vec(&a).unwrap()
    }

    #[test]
    fn records_carrying_exact_vectors_score_their_cosine_as_the_plain_path_does() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        let texts = texts();
        for (i, pair) in texts.windows(2).enumerate().step_by(7) {
            let plain = record(&pair[0], &pair[1], (i % 3) as u32 + 1, None);
            let (a, r) = (exact_of(&pair[0]), exact_of(&pair[1]));
            let bytes = with_vectors(&plain, Some(a.clone()), Some(r.clone()));
            let fast = scorer.score_record(&bytes, &params);
            assert_same(&fast, &score_whole_record(&bytes, &params));
            let scored: Answer = serde_json::from_slice(&fast).unwrap();
            let expected = carried::exact_score(&a, &r, &mut ExactBuffers::default());
            assert_eq!(scored.score, expected);
            assert_eq!(scored.answer_vector, a, "the vector is passed on");
        }
        assert!(scorer.exact_read() > 50);
        assert_eq!(scorer.reference_counts(), (0, 0), "nothing embedded");
    }

    #[test]
    fn a_lone_foreign_or_damaged_exact_vector_falls_back_to_the_static_score() {
        let params = Params::default();
        let mut scorer = RecordScorer::default();
        let (answer, reference) = ("Ice is less dense than water.", "Ice floats on water.");
        let plain = record(answer, reference, 1, None);
        let good = exact_of(answer);
        let static_reference = semantic::model().carried_vector(reference);
        let foreign = good.replacen("MiniLM-L6", "MiniLM-L12", 1);
        let damaged = good[..good.len() - 3].to_string();
        for (a, r) in [
            (Some(good.clone()), None),
            (None, Some(good.clone())),
            (Some(good.clone()), Some(static_reference)),
            (Some(foreign.clone()), Some(good.clone())),
            (Some(good.clone()), Some(foreign)),
            (Some(damaged), Some(good.clone())),
            (
                Some("exact:all-MiniLM-L6-v2:\\u0000".into()),
                Some(good.clone()),
            ),
        ] {
            let bytes = with_vectors(&plain, a.clone(), r.clone());
            let fast = scorer.score_record(&bytes, &params);
            assert_same(&fast, &score_whole_record(&bytes, &params));
            let scored: Answer = serde_json::from_slice(&fast).unwrap();
            let score = scored.score.unwrap();
            assert!(
                (score - semantic::score(answer, reference)).abs() < 1e-4,
                "{a:.30?} / {r:.30?}: {score}"
            );
        }
        assert_eq!(scorer.exact_read(), 0);
    }
}
