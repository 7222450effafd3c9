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
//! A record the view refuses goes the plain way, so it is tagged invalid
//! with the very error it always was.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use answerloop_schema::view::{AnswerView, BestView, RawStr};
use rustc_hash::FxHasher;

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
                answer: view.answer,
                score,
                attempt,
                model: view.model,
                provider: view.provider,
            });
        }
        let mut out = Vec::with_capacity(bytes.len() + view.answer.json().len() + 96);
        match serde_json::to_writer(&mut out, &view) {
            Ok(()) => out,
            Err(_) => score_whole_record(bytes, params),
        }
    }

    /// The semantic score of the view's answer against its reference: the
    /// number [`semantic::score`] gives for the two texts.
    fn score(&mut self, model: &StaticModel<'_>, view: &AnswerView<'_>) -> f32 {
        self.answer.resize(model.table().dims, 0.0);
        model.embed_into(&view.answer.text(), &mut self.scratch, &mut self.answer);
        let answer_norm2 = semantic::norm2(&self.answer);
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
