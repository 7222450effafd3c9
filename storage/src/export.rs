//! Export of the stored answers as JSON lines or CSV.

use std::io::Write;

use crate::{Store, StoreError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Jsonl,
    Csv,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" => Ok(Format::Jsonl),
            "csv" => Ok(Format::Csv),
            other => Err(format!("unknown export format {other:?}: use jsonl or csv")),
        }
    }
}

const CSV_HEADER: [&str; 10] = [
    "id",
    "category",
    "title",
    "answer",
    "score",
    "verdict",
    "attempt",
    "attempts",
    "model",
    "reference",
];

impl Store {
    /// Write every stored answer to `out`; returns how many were written.
    pub fn export(&self, format: Format, out: impl Write) -> Result<usize, StoreError> {
        match format {
            Format::Jsonl => self.export_jsonl(out),
            Format::Csv => self.export_csv(out),
        }
    }

    fn export_jsonl(&self, mut out: impl Write) -> Result<usize, StoreError> {
        let mut n = 0;
        for answer in self.answers() {
            let line = serde_json::to_string(&answer?).map_err(|e| StoreError::Export(e.into()))?;
            writeln!(out, "{line}").map_err(StoreError::Export)?;
            n += 1;
        }
        out.flush().map_err(StoreError::Export)?;
        Ok(n)
    }

    fn export_csv(&self, out: impl Write) -> Result<usize, StoreError> {
        let fail = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(io) => StoreError::Export(io),
            other => StoreError::Export(std::io::Error::other(format!("{other:?}"))),
        };
        let mut writer = csv::Writer::from_writer(out);
        writer.write_record(CSV_HEADER).map_err(fail)?;
        let mut n = 0;
        for answer in self.answers() {
            let a = answer?;
            writer
                .write_record([
                    a.id.as_str(),
                    &a.category.to_string(),
                    &a.title,
                    &a.answer,
                    &format!("{:.4}", a.score),
                    a.verdict.as_str(),
                    &a.attempt.to_string(),
                    &a.attempts.to_string(),
                    &a.model,
                    &a.reference,
                ])
                .map_err(fail)?;
            n += 1;
        }
        writer.flush().map_err(StoreError::Export)?;
        Ok(n)
    }
}
