//! A borrowed view of an [`Answer`](crate::Answer) record: what
//! `answer-score` reads and writes back without decoding and re-encoding
//! the texts.
//!
//! Every string stays as its raw JSON (quotes and escapes included), so
//! writing the view copies it verbatim instead of escaping it again; the
//! numbers, the verdict and the maps are parsed as in [`Answer`]. The view
//! accepts nothing that [`Answer`] refuses (a string field must hold a
//! string, required fields are required, a duplicate field is an error), so
//! a record the view reads is a record [`Answer`] reads, and the view
//! written back parses as the [`Answer`] that re-serialising it would give:
//! same fields, same values; only the escapes of the strings are kept as
//! they came. Unknown fields are dropped, as [`Answer`] drops them.
//!
//! It mirrors [`Answer`], [`Question`](crate::Question) and
//! [`Best`](crate::Best) field for field; a test in this module checks that
//! the two write the same fields.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use crate::{first_attempt, is_zero, Trace, Verdict};

/// A JSON string exactly as it appears in the record.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub struct RawStr<'a>(&'a RawValue);

impl<'a> RawStr<'a> {
    /// The JSON of the empty string, the default of optional text fields.
    pub fn empty() -> RawStr<'static> {
        static EMPTY: OnceLock<Box<RawValue>> = OnceLock::new();
        RawStr(
            EMPTY.get_or_init(|| RawValue::from_string("\"\"".to_string()).expect("\"\" is JSON")),
        )
    }

    /// The string's JSON, quotes included.
    pub fn json(&self) -> &'a str {
        self.0.get()
    }

    pub fn is_empty(&self) -> bool {
        self.json() == "\"\""
    }

    /// The string's text: borrowed from the record when it has no escapes.
    pub fn text(&self) -> Cow<'a, str> {
        let json = self.json();
        let inner = &json[1..json.len() - 1];
        if inner.contains('\\') {
            // Valid JSON (the parser checked it), so this cannot fail.
            Cow::Owned(serde_json::from_str(json).unwrap_or_default())
        } else {
            Cow::Borrowed(inner)
        }
    }
}

impl Default for RawStr<'_> {
    fn default() -> Self {
        RawStr::empty()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for RawStr<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = <&'a RawValue>::deserialize(deserializer)?;
        // A raw value is valid JSON without surrounding whitespace: one that
        // starts with a quote is a whole string.
        let json = raw.get();
        if !json.starts_with('"') {
            return Err(D::Error::custom(format!(
                "invalid type: {json}, expected a string"
            )));
        }
        // Skipping a string, the parser does not pair `\u` surrogates,
        // which decoding it would refuse: decode the few that have one.
        if has_unicode_escape(json) && serde_json::from_str::<String>(json).is_err() {
            return Err(D::Error::custom("invalid unicode escape in a string"));
        }
        Ok(RawStr(raw))
    }
}

/// Whether the JSON string holds a `\\u` escape (found escape by escape,
/// with `memchr`, not byte by byte).
fn has_unicode_escape(json: &str) -> bool {
    let mut rest = json;
    while let Some(at) = rest.find('\\') {
        match rest.as_bytes().get(at + 1) {
            Some(b'u') => return true,
            Some(_) => rest = &rest[at + 2..],
            None => return false,
        }
    }
    false
}

/// [`Answer`](crate::Answer), borrowed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerView<'a> {
    #[serde(borrow)]
    pub question: QuestionView<'a>,
    #[serde(borrow)]
    pub answer: RawStr<'a>,
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub answer_vector: RawStr<'a>,
    #[serde(borrow)]
    pub model: RawStr<'a>,
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub provider: RawStr<'a>,
    #[serde(default)]
    pub latency_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
}

/// [`Question`](crate::Question), borrowed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QuestionView<'a> {
    #[serde(borrow, default)]
    pub id: RawStr<'a>,
    #[serde(borrow)]
    pub title: RawStr<'a>,
    #[serde(borrow, default)]
    pub content: RawStr<'a>,
    #[serde(borrow)]
    pub reference: RawStr<'a>,
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub reference_vector: RawStr<'a>,
    #[serde(default)]
    pub category: u8,
    #[serde(default = "first_attempt")]
    pub attempt: u32,
    #[serde(default)]
    pub llm_attempts: u32,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub failed_calls: BTreeMap<String, u32>,
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub best: Option<BestView<'a>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before_ms: Option<u64>,
    #[serde(default)]
    pub trace: Trace,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub redrives: u32,
}

/// [`Best`](crate::Best), borrowed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BestView<'a> {
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub answer: RawStr<'a>,
    pub score: f32,
    pub attempt: u32,
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub model: RawStr<'a>,
    #[serde(borrow, default, skip_serializing_if = "RawStr::is_empty")]
    pub provider: RawStr<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Answer, Best, Question};

    fn full_answer() -> Answer {
        let mut question = Question::new(
            "Why \"quoted\" \\ é \u{1F600}?",
            "content\nline",
            "Because\tof \u{0007} things.",
            3,
        )
        .at_attempt(2);
        question.failed_calls.insert("overload".into(), 2);
        question.not_before_ms = Some(5);
        question.trace.answered_ms = Some(9);
        question.redrives = 1;
        question.reference_vector = "static:0a1b2c3d:AAAA/+".into();
        question.best = Some(Best {
            answer: "an \"earlier\" one".into(),
            score: 0.25,
            attempt: 1,
            model: "m".into(),
            provider: "p#2".into(),
        });
        let mut answer = Answer::new(question, "the answer\u{2028}", "model", 7);
        answer.provider = "prov".into();
        answer.answer_vector = "exact:m:AAAA/+".into();
        answer.score = Some(0.5);
        answer.verdict = Some(Verdict::Accept);
        answer
    }

    fn through_view(bytes: &[u8]) -> Vec<u8> {
        let view: AnswerView = serde_json::from_slice(bytes).unwrap();
        serde_json::to_vec(&view).unwrap()
    }

    #[test]
    fn the_view_writes_every_field_the_record_has_with_the_same_values() {
        let answer = full_answer();
        let bytes = serde_json::to_vec(&answer).unwrap();
        let written = through_view(&bytes);
        let as_value = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        assert_eq!(as_value(&written), as_value(&bytes));
        assert_eq!(serde_json::from_slice::<Answer>(&written).unwrap(), answer);
        // With no escapes to keep, the very bytes.
        let plain = Answer::new(Question::new("t", "", "r", 1), "a", "m", 1);
        let bytes = serde_json::to_vec(&plain).unwrap();
        assert_eq!(through_view(&bytes), bytes);
    }

    #[test]
    fn defaults_are_filled_and_unknown_fields_dropped_as_the_record_does() {
        let bytes = br#"{"question":{"title":"t","reference":"r","extra":1},"answer":"a","model":"m","x":[1]}"#;
        let written = through_view(bytes);
        let record: Answer = serde_json::from_slice(bytes).unwrap();
        assert_eq!(written, serde_json::to_vec(&record).unwrap());
    }

    #[test]
    fn text_decodes_escapes_and_borrows_when_there_are_none() {
        let view: AnswerView = serde_json::from_slice(
            br#"{"question":{"title":"t","reference":"plain text"},"answer":"caf\u00e9 \"x\"\n","model":"m"}"#,
        )
        .unwrap();
        assert!(matches!(
            view.question.reference.text(),
            Cow::Borrowed("plain text")
        ));
        assert_eq!(view.answer.text(), "café \"x\"\n");
    }

    #[test]
    fn the_view_refuses_what_the_record_refuses() {
        for bad in [
            &br#"{"question":{"title":"t","reference":5},"answer":"a","model":"m"}"#[..],
            br#"{"question":{"title":"t","reference":"r"},"answer":null,"model":"m"}"#,
            br#"{"question":{"title":"t","reference":"r"},"answer":"a"}"#,
            br#"{"question":{"title":"t","reference":"r"},"answer":"a","answer":"b","model":"m"}"#,
            br#"{"question":{"title":"t","reference":"r","category":300},"answer":"a","model":"m"}"#,
            br#"{"question":{"title":"t","reference":"r","best":{"answer":"a","score":"x","attempt":1}},"answer":"a","model":"m"}"#,
            br#"{"question":{"title":"t","reference":"r"},"answer":"a","model":"m"} x"#,
            b"{\"question\":{\"title\":\"t\",\"reference\":\"\xff\"},\"answer\":\"a\",\"model\":\"m\"}",
            br#"{"question":{"title":"t","reference":"\ud800"},"answer":"a","model":"m"}"#,
            br#"{"question":{"title":"t","reference":"r"},"answer":"\udc00\ud800","model":"m"}"#,
        ] {
            assert!(serde_json::from_slice::<Answer>(bad).is_err());
            assert!(
                serde_json::from_slice::<AnswerView>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
