//! Where each question's row starts in a question set file, by id: 16
//! bytes a question instead of the question. A question is read back by
//! seeking to its row, which is how llm-sim finds a reference answer
//! without holding the file.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Mutex;

use answerloop_schema::Question;

use crate::stream::Rows;
use crate::{
    id_number, io_error, open_file, parse_row, read_failure, DataError, IdSet, ReadReport, Row,
};

/// The rows of a question set file by question id.
#[derive(Debug)]
pub struct RowIndex {
    /// (id number, byte offset of its first row), sorted.
    rows: Vec<(u64, u64)>,
    /// One reader, moved to a row for each lookup: building a CSV reader
    /// (its parser's tables and buffer) costs more than reading the row.
    reader: Mutex<csv::Reader<std::fs::File>>,
    source_name: String,
}

impl RowIndex {
    /// Index the question set at `path` (read once, row by row): its first
    /// `limit` questions, or all; with the report on the rows read. The
    /// same errors as [`crate::Questions`] when it is not a question set.
    pub fn build(path: &Path, limit: Option<usize>) -> Result<(Self, ReadReport), DataError> {
        let (source_name, file) = open_file(path)?;
        let mut reader = Rows::new(file, &source_name)?;
        let mut rows = Vec::new();
        let mut duplicates = 0;
        match limit {
            // Counting distinct questions as they come takes a set of them.
            Some(limit) => {
                let mut seen = IdSet::new();
                while seen.len() < limit {
                    let Some((offset, question)) = reader.next_question()? else {
                        break;
                    };
                    match seen.insert(&question.id) {
                        true => rows.push((id_number(&question.id), offset)),
                        false => duplicates += 1,
                    }
                }
            }
            // Without a limit the repeats are found by sorting: no set.
            None => {
                while let Some((offset, question)) = reader.next_question()? {
                    rows.push((id_number(&question.id), offset));
                }
            }
        }
        if rows.is_empty() {
            return Err(reader.nothing_to_answer());
        }
        // The first row of each question, as a reader in file order keeps.
        rows.sort_unstable();
        let before = rows.len();
        rows.dedup_by_key(|(id, _)| *id);
        rows.shrink_to_fit();
        let mut report = reader.report;
        report.duplicates = duplicates + before - rows.len();
        let index = Self {
            rows,
            reader: Mutex::new(row_reader(open_file(path)?.1)),
            source_name,
        };
        Ok((index, report))
    }

    /// Distinct questions indexed.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The question with id `id`, read from its row; `None` when the file
    /// has none (or no longer has it where it was).
    pub fn get(&self, id: &str) -> Result<Option<Question>, DataError> {
        let number = id_number(id);
        let Ok(at) = self.rows.binary_search_by_key(&number, |(id, _)| *id) else {
            return Ok(None);
        };
        let offset = self.rows[at].1;
        let io = |error| io_error(&self.source_name, error);
        let mut reader = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = csv::ByteRecord::new();
        let read = reader
            .seek_raw(SeekFrom::Start(offset), csv::Position::new())
            .and_then(|()| reader.read_byte_record(&mut record));
        match read.map_err(read_failure) {
            Ok(true) => {}
            Ok(false) => return Ok(None),
            Err(Ok(error)) => return Err(io(error)),
            // The file changed under the index.
            Err(Err(_)) => return Ok(None),
        }
        Ok(match parse_row(&record) {
            Ok(Row::Question(q)) if q.id == id => Some(*q),
            _ => None,
        })
    }
}

/// A reader of single rows, wherever it is moved to.
fn row_reader(file: std::fs::File) -> csv::Reader<std::fs::File> {
    csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(16 * 1024)
        .from_reader(file)
}
