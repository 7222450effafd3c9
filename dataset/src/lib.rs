//! The Yahoo! Answers CSV: `"class","title","content","best answer"`, no
//! header, every field quoted, `""` for a quote inside a field, newlines
//! written as backslash-n.
//!
//! A row that cannot be used is counted or reported with its line number and
//! skipped; the rest still load. A file with no usable row at all is an error
//! that says what the file looked like instead.
//!
//! A user's file is read as a stream, never whole, so the memory a reader
//! needs grows with the distinct questions (8 bytes each), not with the
//! file:
//!
//! - [`stream`]: [`Questions`], the questions row by row; asked for the
//!   first N, it stops after the row that gives the Nth.
//! - [`ids`]: [`IdSet`], question ids as 64-bit numbers, for duplicates and
//!   questions already sent or stored.
//! - [`index`]: [`RowIndex`], where each question's row starts, to read
//!   one question's reference answer back without holding the others.

pub mod ids;
pub mod index;
pub mod stream;

use std::io::Read;
use std::path::Path;

use answerloop_schema::{category_name, Question};

pub use ids::{id_number, IdSet};
pub use index::RowIndex;
pub use stream::Questions;

/// The question set shipped with the binary: original questions and answers
/// written for this project in the Yahoo! Answers format.
pub const SAMPLE_CSV: &str = include_str!("../../data/sample.csv");
pub const SAMPLE_NAME: &str = "data/sample.csv (built in)";

/// Rows that did not become questions, and why.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ReadReport {
    /// Rows read, usable or not.
    pub rows: usize,
    /// Rows with neither a title nor content.
    pub no_question: usize,
    /// Rows with no best answer to score against.
    pub no_reference: usize,
    /// Rows repeating an earlier question.
    pub duplicates: usize,
    /// Rows that could not be parsed, with their line numbers.
    pub malformed: Vec<RowError>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RowError {
    pub line: u64,
    pub reason: String,
}

impl std::fmt::Display for RowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.reason)
    }
}

/// A question set held whole: for the built-in sample and small sets a
/// caller writes itself. A user's file is read with [`Questions`].
#[derive(Debug)]
pub struct Dataset {
    pub questions: Vec<Question>,
    pub report: ReadReport,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {source_name}: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name} is not a Yahoo! Answers CSV: {why}")]
    NotCsv { source_name: String, why: String },
}

/// The question set at `path`, as a stream: its first `limit` questions, or
/// all.
pub fn open(path: &Path, limit: Option<usize>) -> Result<Questions<std::fs::File>, DataError> {
    let (name, file) = open_file(path)?;
    Questions::new(file, &name, limit)
}

/// The file at `path` and the name its errors give it.
pub(crate) fn open_file(path: &Path) -> Result<(String, std::fs::File), DataError> {
    let name = path.display().to_string();
    match std::fs::File::open(path) {
        Ok(file) => Ok((name, file)),
        Err(error) => Err(io_error(&name, error)),
    }
}

pub(crate) fn io_error(source_name: &str, error: std::io::Error) -> DataError {
    DataError::Io {
        source_name: source_name.to_string(),
        error,
    }
}

/// The I/O error a CSV read failed with, or the error when the row itself
/// was at fault.
pub(crate) fn read_failure(e: csv::Error) -> Result<std::io::Error, csv::Error> {
    if !e.is_io_error() {
        return Err(e);
    }
    let csv::ErrorKind::Io(error) = e.into_kind() else {
        unreachable!("an I/O error's kind is Io")
    };
    Ok(error)
}

/// Any source of a question set: a user's file or the built-in sample.
pub type AnyQuestions = Questions<Box<dyn Read + Send>>;

/// The question set at `path`, or the built-in sample when there is none
/// (its first `limit` questions, or all), as a stream; with the name to
/// show for it.
pub fn open_or_sample(
    path: Option<&Path>,
    limit: Option<usize>,
) -> Result<(String, AnyQuestions), DataError> {
    let (name, input): (String, Box<dyn Read + Send>) = match path {
        Some(path) => {
            let (name, file) = open_file(path)?;
            (name, Box::new(file))
        }
        None => (SAMPLE_NAME.to_string(), Box::new(SAMPLE_CSV.as_bytes())),
    };
    let questions = Questions::new(input, &name, limit)?;
    Ok((name, questions))
}

/// The built-in sample question set.
pub fn sample() -> Dataset {
    parse(SAMPLE_CSV.as_bytes(), SAMPLE_NAME).expect("the built-in sample parses")
}

/// The longest field a row may have. Yahoo! Answers fields are at most a
/// few kilobytes; a longer one is a broken file (an unclosed quote) or a
/// hostile one, and would make a prompt no model takes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Parse a Yahoo! Answers CSV from `input` whole; `source_name` names it in
/// errors. For sets known to be small: a user's file is read with
/// [`Questions`].
pub fn parse(input: impl Read, source_name: &str) -> Result<Dataset, DataError> {
    parse_first(input, source_name, None)
}

/// [`parse`], stopping once `limit` questions are read.
pub fn parse_first(
    input: impl Read,
    source_name: &str,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let mut stream = Questions::new(input, source_name, limit)?;
    let questions = stream.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(Dataset {
        questions,
        report: stream.into_report(),
    })
}

pub(crate) enum Row {
    Question(Box<Question>),
    NoQuestion,
    NoReference,
}

pub(crate) fn parse_row(row: &csv::ByteRecord) -> Result<Row, String> {
    if row.len() != 4 {
        return Err(format!(
            "expected 4 fields (class, title, content, best answer), found {}",
            row.len()
        ));
    }
    if let Some(i) = (0..4).find(|&i| row[i].len() > MAX_FIELD_BYTES) {
        return Err(format!(
            "field {} is {} bytes, longer than the {MAX_FIELD_BYTES} a question or answer may be",
            i + 1,
            row[i].len()
        ));
    }
    let field = |i: usize, name: &str| {
        std::str::from_utf8(&row[i])
            .map(unescape)
            .map_err(|e| format!("the {name} is not valid UTF-8 ({e})"))
    };
    let class_text = field(0, "class")?;
    let category = class_text
        .trim()
        .parse::<u8>()
        .ok()
        .filter(|c| category_name(*c).is_some())
        .ok_or_else(|| format!("class {:?} is not a number from 1 to 10", class_text.trim()))?;
    let mut title = field(1, "title")?.trim().to_string();
    let mut content = field(2, "content")?.trim().to_string();
    let reference = field(3, "best answer")?.trim().to_string();
    if title.is_empty() {
        std::mem::swap(&mut title, &mut content);
    }
    if title.is_empty() {
        return Ok(Row::NoQuestion);
    }
    if reference.is_empty() {
        return Ok(Row::NoReference);
    }
    let question = Question::new(title, content, reference, category);
    Ok(Row::Question(Box::new(question)))
}

/// The data set writes newlines as backslash-n.
fn unescape(field: &str) -> String {
    field.replace("\\n", "\n")
}

#[cfg(test)]
mod tests;
