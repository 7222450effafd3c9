//! The records that flow through answerloop's topics, as JSON.
//!
//! One crate for every party: the traffic, LLM and store agents, and the
//! SmartModules compiled to WASM. It must stay dependency-light and free of
//! I/O so that it builds for `wasm32-unknown-unknown`.
//!
//! - [`Question`] travels on `questions` (and `deferred`).
//! - [`Answer`] travels on `answers`; the `answer-score` SmartModule fills in
//!   `score`, `verdict` and `best` on produce.
//! - [`InvalidRecord`] is what a SmartModule emits for a record it could not
//!   parse: SmartModules never fail a batch, they tag and pass on.
//! - [`DeadLetter`] travels on `dead-letters`: a question the pipeline gave up
//!   on, with the reason.
//! - [`view::AnswerView`]: an [`Answer`] borrowed from its bytes, for the
//!   scorer. A field added to [`Answer`], [`Question`] or [`Best`] is added
//!   there too (its tests fail until it is).

pub mod clock;
mod id;
pub mod view;

pub use id::{normalise_question, question_id, salvage_id};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Topic names shared by every transport.
pub mod topics {
    pub const QUESTIONS: &str = "questions";
    pub const ANSWERS: &str = "answers";
    pub const DEFERRED: &str = "deferred";
    pub const DEAD_LETTERS: &str = "dead-letters";
    pub const ALL: [&str; 4] = [QUESTIONS, ANSWERS, DEFERRED, DEAD_LETTERS];
}

/// The ten Yahoo! Answers topic classes, indexed by `class - 1`.
pub const CATEGORIES: [&str; 10] = [
    "Society & Culture",
    "Science & Mathematics",
    "Health",
    "Education & Reference",
    "Computers & Internet",
    "Sports",
    "Business & Finance",
    "Entertainment & Music",
    "Family & Relationships",
    "Politics & Government",
];

/// The name of a 1-based Yahoo! Answers class, if it is one.
pub fn category_name(class: u8) -> Option<&'static str> {
    CATEGORIES.get(usize::from(class).checked_sub(1)?).copied()
}

/// A question on its way to the LLM, first asked or regenerated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Question {
    /// Stable hash of the normalised question text, see [`question_id`].
    /// May be left out of a question produced by hand: the LLM agent fills
    /// it in (see [`Question::with_id`]).
    #[serde(default)]
    pub id: String,
    pub title: String,
    #[serde(default)]
    pub content: String,
    /// The data set's best answer, the yardstick for the score.
    pub reference: String,
    /// The reference's vector, computed once by the traffic agent so that
    /// `answer-score` does not embed the reference for every attempt (see
    /// `answerloop_scoring::carried`); empty when not computed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reference_vector: String,
    /// Yahoo! Answers class, 1 to 10 (0: unknown).
    #[serde(default)]
    pub category: u8,
    /// Which scored answer this request is for, 1-based.
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    /// LLM calls spent on this question so far, across attempts, deferrals
    /// and restarts; capped by the LLM agent.
    #[serde(default)]
    pub llm_attempts: u32,
    /// Of those, the failed calls by error class (`overload`, `quota`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_calls: BTreeMap<String, u32>,
    /// The best-scoring answer of earlier attempts, carried so that an
    /// exhausted question still stores its best.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
    /// Earliest time (ms since the Unix epoch) the LLM agent may call a model
    /// for it again; set when a quota error parks it on `deferred`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    #[serde(default)]
    pub trace: Trace,
    /// Times `answerloop dead-letters retry` sent it back after a dead letter.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn first_attempt() -> u32 {
    1
}

impl Question {
    /// The same question with its id derived from its text when it had none.
    pub fn with_id(mut self) -> Self {
        if self.id.is_empty() {
            self.id = question_id(&self.text());
        }
        self
    }

    /// A question at its first attempt; the id is derived from its text.
    pub fn new(
        title: impl Into<String>,
        content: impl Into<String>,
        reference: impl Into<String>,
        category: u8,
    ) -> Self {
        let mut question = Question {
            id: String::new(),
            title: title.into(),
            content: content.into(),
            reference: reference.into(),
            reference_vector: String::new(),
            category,
            attempt: 1,
            llm_attempts: 0,
            failed_calls: BTreeMap::new(),
            best: None,
            not_before_ms: None,
            trace: Trace::default(),
            redrives: 0,
        };
        question.id = question_id(&question.text());
        question
    }

    /// This question at a later attempt, as after regenerations.
    pub fn at_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self.llm_attempts = attempt;
        self
    }

    /// The text put to the model: the title, and the content when present.
    pub fn text(&self) -> String {
        if self.content.trim().is_empty() {
            self.title.clone()
        } else {
            format!("{}\n{}", self.title, self.content)
        }
    }
}

/// The best answer seen so far for a question.
///
/// In a scored answer record, a best of the record's own attempt holds only
/// its score and attempt: its text, model and provider are the record's
/// (`answer-score` writes it so, not to copy the answer twice);
/// [`Answer::resolved_best`] fills them in. Everywhere else (a question
/// sent back for another attempt, the store) a best is whole.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Best {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
    pub score: f32,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
    /// The provider that gave it, as the LLM agent names it (`openai`, `llm-sim#2`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
}

impl Best {
    /// The best of a scored answer record that is the record's own
    /// attempt: its score and attempt, the rest left to the record.
    pub fn own_attempt(score: f32, attempt: u32) -> Best {
        Best {
            answer: String::new(),
            score,
            attempt,
            model: String::new(),
            provider: String::new(),
        }
    }
}

/// Wall-clock marks (ms since the Unix epoch) for latency accounting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Trace {
    /// When traffic first produced the question.
    #[serde(default)]
    pub queued_ms: u64,
    /// When the latest answer was produced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<u64>,
}

/// What the score says should happen to an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Score at or above the threshold: store it.
    Accept,
    /// Below the threshold with attempts left: ask again.
    Regenerate,
    /// Below the threshold and no attempts left: store the best attempt.
    Exhausted,
    /// The record could not be parsed: dead-letter it.
    Invalid,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Accept => "accept",
            Verdict::Regenerate => "regenerate",
            Verdict::Exhausted => "exhausted",
            Verdict::Invalid => "invalid",
        }
    }
}

/// An LLM answer to a question, scored by `answer-score` on produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub question: Question,
    pub answer: String,
    /// The answer's sentence embedding, computed by the LLM agent with
    /// `--scorer exact` (`exact:<model>:<base64>`, see
    /// `answerloop_scoring::carried`); `answer-score` takes the cosine with
    /// the reference's carried vector. Empty when not computed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer_vector: String,
    pub model: String,
    /// The provider that answered, as the LLM agent names it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub provider: String,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

impl Answer {
    /// A model's answer to `question`, not yet scored.
    pub fn new(
        question: Question,
        answer: impl Into<String>,
        model: impl Into<String>,
        latency_ms: u64,
    ) -> Self {
        Self {
            question,
            answer: answer.into(),
            answer_vector: String::new(),
            model: model.into(),
            provider: String::new(),
            latency_ms,
            score: None,
            verdict: None,
        }
    }

    /// The question's best so far, whole: a best of this record's own
    /// attempt left without its text (see [`Best`]) gets the record's
    /// answer, model and provider.
    pub fn resolved_best(&self) -> Option<Best> {
        let mut best = self.question.best.clone()?;
        if best.attempt == self.question.attempt && best.answer.is_empty() {
            best.answer = self.answer.clone();
            best.model = self.model.clone();
            best.provider = self.provider.clone();
        }
        Some(best)
    }
}

/// A record a SmartModule could not parse, tagged instead of failing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvalidRecord {
    pub verdict: Verdict,
    /// Why it could not be parsed.
    pub error: String,
    /// The start of the original bytes, lossily decoded, for the dead letter.
    pub raw: String,
}

/// At most this many bytes of a broken record are kept in its tag.
pub const INVALID_RAW_PREFIX: usize = 512;

impl InvalidRecord {
    pub fn new(error: impl Into<String>, raw: &[u8]) -> Self {
        let raw = &raw[..raw.len().min(INVALID_RAW_PREFIX)];
        Self {
            verdict: Verdict::Invalid,
            error: error.into(),
            raw: String::from_utf8_lossy(raw).into_owned(),
        }
    }
}

/// A record on `answers` as a consumer sees it after scoring.
// Decoded once per record and consumed at once: boxing the large variant
// would only add an allocation on the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Scored {
    Answer(Answer),
    Invalid(InvalidRecord),
}

impl Scored {
    /// Decode a scored record; anything unreadable becomes [`Scored::Invalid`].
    pub fn decode(bytes: &[u8]) -> Scored {
        match serde_json::from_slice::<Answer>(bytes) {
            Ok(answer) => Scored::Answer(answer),
            Err(answer_err) => match serde_json::from_slice::<InvalidRecord>(bytes) {
                Ok(tag) if tag.verdict == Verdict::Invalid => Scored::Invalid(tag),
                _ => Scored::Invalid(InvalidRecord::new(
                    format!("not an answer record: {answer_err}"),
                    bytes,
                )),
            },
        }
    }
}

/// Why the pipeline gave up on a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// Temporary trouble (5xx, 429 rate limit, time-out) that outlasted the retries.
    Overload,
    /// The provider's quota ran out and the question could wait no longer.
    Quota,
    /// The request can never succeed as sent (400, 401, 403, 404, bad reply).
    Permanent,
    /// A cap on LLM attempts or on the retry budget was reached.
    Cap,
    /// A record on a topic could not be parsed.
    Invalid,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Overload => "overload",
            FailureClass::Quota => "quota",
            FailureClass::Permanent => "permanent",
            FailureClass::Cap => "cap",
            FailureClass::Invalid => "invalid",
        }
    }
}

/// A question the pipeline gave up on, with the reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The question id, or a hash of the raw bytes for an unparseable record.
    pub id: String,
    pub class: FailureClass,
    /// A human-readable reason; never holds a secret.
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// The question as it was when the pipeline gave up, when it was readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question: Option<Question>,
    /// The start of the raw record, when it was not readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
    pub at_ms: u64,
}

impl DeadLetter {
    /// A question the pipeline gave up on, carried whole.
    pub fn of_question(
        question: Question,
        class: FailureClass,
        reason: String,
        status: Option<u16>,
        at_ms: u64,
    ) -> Self {
        Self {
            id: question.id.clone(),
            class,
            reason,
            status,
            question: Some(question),
            raw: None,
            at_ms,
        }
    }

    /// The dead letter of a record no agent could read (an answer the
    /// SmartModules tagged, a question or a dead letter that does not
    /// parse): under the question id it still shows when one can be read
    /// from it, so the question is not left hanging; else under a hash of
    /// its bytes. Keeps the tag's start of the raw record.
    pub fn unreadable(tag: &InvalidRecord, at_ms: u64) -> Self {
        Self {
            id: salvage_id(&tag.raw).unwrap_or_else(|| format!("raw-{}", question_id(&tag.raw))),
            class: FailureClass::Invalid,
            reason: tag.error.clone(),
            status: None,
            question: None,
            raw: Some(tag.raw.clone()),
            at_ms,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn question() -> Question {
        Question::new("Why is the sky blue?", "", "Rayleigh scattering.", 2)
    }

    #[test]
    fn a_question_typed_by_hand_needs_only_title_and_reference() {
        let typed: Question = serde_json::from_str(
            r#"{"title":"Why is the sky blue?","reference":"Rayleigh scattering."}"#,
        )
        .unwrap();
        assert_eq!(typed.attempt, 1);
        let typed = typed.with_id();
        assert_eq!(
            typed.id,
            question().id,
            "the id comes from the text, as for the data set"
        );
        let kept = Question {
            id: "mine".into(),
            ..question()
        }
        .with_id();
        assert_eq!(kept.id, "mine", "a given id is kept");
    }

    #[test]
    fn answer_round_trips_through_json() {
        let mut answer = Answer::new(question(), "Because of scattering.", "m", 3);
        answer.score = Some(0.5);
        answer.verdict = Some(Verdict::Accept);
        let bytes = serde_json::to_vec(&answer).unwrap();
        assert_eq!(Scored::decode(&bytes), Scored::Answer(answer));
    }

    #[test]
    fn unreadable_bytes_decode_as_invalid_with_the_cause() {
        match Scored::decode(b"{not json") {
            Scored::Invalid(tag) => {
                assert!(tag.error.contains("not an answer record"), "{}", tag.error);
                assert_eq!(tag.raw, "{not json");
            }
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    #[test]
    fn an_invalid_tag_decodes_as_itself() {
        let tag = InvalidRecord::new("broken", &[0xff, b'a']);
        let bytes = serde_json::to_vec(&tag).unwrap();
        assert_eq!(Scored::decode(&bytes), Scored::Invalid(tag));
    }

    #[test]
    fn new_questions_get_the_id_of_their_text() {
        assert_eq!(question().id, question_id("why is the sky blue?"));
        assert_eq!(question().attempt, 1);
    }

    #[test]
    fn question_text_joins_title_and_content() {
        let mut q = question();
        assert_eq!(q.text(), "Why is the sky blue?");
        q.content = "I mean in the day.".into();
        assert_eq!(q.text(), "Why is the sky blue?\nI mean in the day.");
    }

    #[test]
    fn categories_are_one_based() {
        assert_eq!(category_name(1), Some("Society & Culture"));
        assert_eq!(category_name(10), Some("Politics & Government"));
        assert_eq!(category_name(0), None);
        assert_eq!(category_name(11), None);
    }
}
