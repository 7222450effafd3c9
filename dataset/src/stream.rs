//! The question set row by row. Only the row being parsed is held, and
//! the ids of the questions already given (to leave out repeats), so a
//! reader's memory does not grow with the file; asked for the first N
//! questions, it stops after the row that gives the Nth.

use std::io::{BufRead, BufReader, Read};

use answerloop_schema::Question;

use crate::{io_error, parse_row, read_failure, DataError, IdSet, ReadReport, Row, RowError};

/// How much of the file is looked at for NUL bytes before it is taken for
/// text.
const SNIFF_BYTES: usize = 4096;

/// The read-ahead: how much of the file is held at once.
const READ_AHEAD: usize = 64 * 1024;

/// The usable rows of a Yahoo! Answers CSV, repeats included, each with
/// the byte offset where it starts; the others are counted in the report.
pub(crate) struct Rows<R: Read> {
    reader: csv::Reader<BufReader<R>>,
    record: csv::ByteRecord,
    /// Bytes before the first row (a byte order mark): offsets are into
    /// the file, the CSV reader's are from after them.
    skipped: u64,
    pub(crate) report: ReadReport,
    source_name: String,
}

impl<R: Read> Rows<R> {
    pub(crate) fn new(input: R, source_name: &str) -> Result<Self, DataError> {
        let mut input = BufReader::with_capacity(READ_AHEAD, input);
        let head = input.fill_buf().map_err(|e| io_error(source_name, e))?;
        if head[..head.len().min(SNIFF_BYTES)].contains(&0) {
            return Err(DataError::NotCsv {
                source_name: source_name.to_string(),
                why: "it is a binary file (it holds NUL bytes)".into(),
            });
        }
        // A UTF-8 byte order mark (spreadsheet exports) is not part of the class.
        let skipped = if head.starts_with(b"\xef\xbb\xbf") {
            input.consume(3);
            3
        } else {
            0
        };
        let reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_reader(input);
        Ok(Self {
            reader,
            record: csv::ByteRecord::new(),
            skipped,
            report: ReadReport::default(),
            source_name: source_name.to_string(),
        })
    }

    /// The next usable row and where it starts; `None` at the end of the
    /// file. An error is a failed read, not a bad row.
    pub(crate) fn next_question(&mut self) -> Result<Option<(u64, Question)>, DataError> {
        loop {
            match self
                .reader
                .read_byte_record(&mut self.record)
                .map_err(read_failure)
            {
                Ok(false) => return Ok(None),
                Ok(true) => {}
                // The file could not be read on: not a bad row, a failed read.
                Err(Ok(error)) => return Err(io_error(&self.source_name, error)),
                Err(Err(e)) => {
                    self.report.rows += 1;
                    let line = e.position().map_or(0, |p| p.line());
                    self.report.malformed.push(RowError {
                        line,
                        reason: e.to_string(),
                    });
                    continue;
                }
            }
            self.report.rows += 1;
            let (line, offset) = self
                .record
                .position()
                .map_or((0, 0), |p| (p.line(), p.byte()));
            match parse_row(&self.record) {
                Ok(Row::Question(q)) => return Ok(Some((self.skipped + offset, *q))),
                Ok(Row::NoQuestion) => self.report.no_question += 1,
                Ok(Row::NoReference) => self.report.no_reference += 1,
                Err(reason) => self.report.malformed.push(RowError { line, reason }),
            }
        }
    }

    /// Why a file that gave no question is not a question set.
    pub(crate) fn nothing_to_answer(&self) -> DataError {
        let report = &self.report;
        let why = match report.malformed.first() {
            Some(first) => format!(
                "none of its {} rows has the four fields class, title, content, best answer \
                 (first problem at {first})",
                report.rows
            ),
            None => format!(
                "it has no question to answer ({} rows: {} without a question, {} without a best answer)",
                report.rows, report.no_question, report.no_reference
            ),
        };
        DataError::NotCsv {
            source_name: self.source_name.clone(),
            why,
        }
    }
}

/// The distinct questions of a Yahoo! Answers CSV, in file order, read as
/// they are asked for. Ends with an error, once, when the file gave no
/// question at all (see [`DataError::NotCsv`]); a failed read is an error
/// too, and ends it.
pub struct Questions<R: Read> {
    rows: Rows<R>,
    seen: IdSet,
    limit: Option<usize>,
    done: bool,
}

impl<R: Read> Questions<R> {
    /// The questions of `input`, the first `limit` of them or all;
    /// `source_name` names it in errors. Fails at once on a binary file.
    pub fn new(input: R, source_name: &str, limit: Option<usize>) -> Result<Self, DataError> {
        Ok(Self {
            rows: Rows::new(input, source_name)?,
            seen: IdSet::new(),
            limit,
            done: false,
        })
    }

    /// The rows read so far: how many, and why some gave no question.
    pub fn report(&self) -> &ReadReport {
        &self.rows.report
    }

    pub fn into_report(self) -> ReadReport {
        self.rows.report
    }

    /// The ids of the questions given so far.
    pub fn ids(&self) -> &IdSet {
        &self.seen
    }

    /// The ids of the questions given, and the report on the rows read.
    pub fn into_parts(self) -> (IdSet, ReadReport) {
        (self.seen, self.rows.report)
    }

    fn next_question(&mut self) -> Result<Option<Question>, DataError> {
        if self.limit.is_some_and(|limit| self.seen.len() >= limit) {
            return Ok(None);
        }
        while let Some((_, question)) = self.rows.next_question()? {
            if self.seen.insert(&question.id) {
                return Ok(Some(question));
            }
            self.rows.report.duplicates += 1;
        }
        Ok(None)
    }
}

impl<R: Read> Iterator for Questions<R> {
    type Item = Result<Question, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_question() {
            Ok(Some(question)) => Some(Ok(question)),
            Ok(None) => {
                self.done = true;
                self.seen
                    .is_empty()
                    .then(|| Err(self.rows.nothing_to_answer()))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
