//! The Yahoo! Answers CSV: `"class","title","content","best answer"`, no
//! header, every field quoted, `""` for a quote inside a field, newlines
//! written as backslash-n.
//!
//! A row that cannot be used is counted or reported with its line number and
//! skipped; the rest still load. A file with no usable row at all is an error
//! that says what the file looked like instead.
//!
//! The file is read as a stream, never whole: asked for the first N
//! questions, the reader stops after the row that gives the Nth, so a
//! `--limit 10` on the 1.4-million-row training set reads a few rows. The
//! questions already seen are remembered as 64-bit hashes of their ids,
//! not as strings.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use answerloop_schema::{category_name, Question};

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

/// Read the question set at `path`: its first `limit` questions, or all.
pub fn read_path(path: &Path, limit: Option<usize>) -> Result<Dataset, DataError> {
    let name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|error| DataError::Io {
        source_name: name.clone(),
        error,
    })?;
    parse_first(file, &name, limit)
}

/// The question set at `path`, or the built-in sample when there is none
/// (its first `limit` questions, or all); with the name to show for it.
pub fn read_or_sample(
    path: Option<&Path>,
    limit: Option<usize>,
) -> Result<(String, Dataset), DataError> {
    Ok(match path {
        Some(path) => (path.display().to_string(), read_path(path, limit)?),
        None => (
            SAMPLE_NAME.to_string(),
            parse_first(SAMPLE_CSV.as_bytes(), SAMPLE_NAME, limit)
                .expect("the built-in sample parses"),
        ),
    })
}

/// The built-in sample question set.
pub fn sample() -> Dataset {
    parse(SAMPLE_CSV.as_bytes(), SAMPLE_NAME).expect("the built-in sample parses")
}

/// The longest field a row may have. Yahoo! Answers fields are at most a
/// few kilobytes; a longer one is a broken file (an unclosed quote) or a
/// hostile one, and would make a prompt no model takes.
pub const MAX_FIELD_BYTES: usize = 64 * 1024;

/// Parse a Yahoo! Answers CSV from `input`; `source_name` names it in errors.
pub fn parse(input: impl Read, source_name: &str) -> Result<Dataset, DataError> {
    parse_first(input, source_name, None)
}

/// How much of the file is looked at for NUL bytes before it is taken for
/// text.
const SNIFF_BYTES: usize = 4096;

/// [`parse`], stopping once `limit` questions are read.
pub fn parse_first(
    input: impl Read,
    source_name: &str,
    limit: Option<usize>,
) -> Result<Dataset, DataError> {
    let io = |error| DataError::Io {
        source_name: source_name.to_string(),
        error,
    };
    let not_csv = |why: String| DataError::NotCsv {
        source_name: source_name.to_string(),
        why,
    };
    let mut input = BufReader::with_capacity(64 * 1024, input);
    let head = input.fill_buf().map_err(io)?;
    if head[..head.len().min(SNIFF_BYTES)].contains(&0) {
        return Err(not_csv("it is a binary file (it holds NUL bytes)".into()));
    }
    // A UTF-8 byte order mark (spreadsheet exports) is not part of the class.
    if head.starts_with(b"\xef\xbb\xbf") {
        input.consume(3);
    }

    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut report = ReadReport::default();
    let mut seen = HashSet::new();
    let mut questions = Vec::new();
    for row in reader.byte_records() {
        if limit.is_some_and(|limit| questions.len() >= limit) {
            break;
        }
        report.rows += 1;
        let row = match row {
            Ok(row) => row,
            // The file could not be read on: not a bad row, a failed read.
            Err(e) if e.is_io_error() => {
                let csv::ErrorKind::Io(error) = e.into_kind() else {
                    unreachable!("an I/O error's kind is Io")
                };
                return Err(io(error));
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                report.malformed.push(RowError {
                    line,
                    reason: e.to_string(),
                });
                continue;
            }
        };
        let line = row.position().map_or(0, |p| p.line());
        match parse_row(&row) {
            Ok(Row::Question(q)) => {
                if seen.insert(id_hash(&q.id)) {
                    questions.push(*q);
                } else {
                    report.duplicates += 1;
                }
            }
            Ok(Row::NoQuestion) => report.no_question += 1,
            Ok(Row::NoReference) => report.no_reference += 1,
            Err(reason) => report.malformed.push(RowError { line, reason }),
        }
    }
    if questions.is_empty() && !report.malformed.is_empty() {
        let first = &report.malformed[0];
        return Err(not_csv(format!(
            "none of its {} rows has the four fields class, title, content, best answer \
             (first problem at {first})",
            report.rows
        )));
    }
    if questions.is_empty() {
        return Err(not_csv(format!(
            "it has no question to answer ({} rows: {} without a question, {} without a best answer)",
            report.rows, report.no_question, report.no_reference
        )));
    }
    Ok(Dataset { questions, report })
}

/// A question id as 64 bits: 1.4 million ids collide with a chance of
/// about one in ten million.
fn id_hash(id: &str) -> u64 {
    // The same for every hasher made with `new` in one process.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    hasher.finish()
}

enum Row {
    Question(Box<Question>),
    NoQuestion,
    NoReference,
}

fn parse_row(row: &csv::ByteRecord) -> Result<Row, String> {
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
