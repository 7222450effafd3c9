//! The answer store: every question's final state, in an embedded sled
//! database.
//!
//! A question ends exactly once: either as a [`StoredAnswer`] (accepted, or
//! the best attempt of an exhausted question) or as a [`DeadLetter`]. Writes
//! are keyed by question id and the first final state wins, so a record
//! delivered twice after a crash leaves one entry. Callers [`Store::flush`]
//! before committing the offset of what they wrote.
//!
//! - [`record`]: the stored answer and its conversion from a scored answer.
//! - [`export`]: JSON lines and CSV.
//! - [`redrive`]: dead letters sent back as questions, and their record.
//! - [`stats`]: the counts and means `answerloop answers stats` shows.

pub mod export;
pub mod record;
pub mod redrive;
pub mod stats;

use std::path::{Path, PathBuf};

use answerloop_schema::DeadLetter;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

pub use record::StoredAnswer;
pub use redrive::Redriven;
pub use stats::Stats;

const ANSWERS: &str = "answers";
const DEAD_LETTERS: &str = "dead-letters";
const REDRIVEN: &str = "redriven";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the answer store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("answer store error: {0}")]
    Sled(#[from] sled::Error),
    #[error("stored entry {key:?} in {tree} is corrupt: {source}")]
    Corrupt {
        tree: &'static str,
        key: String,
        source: serde_json::Error,
    },
    #[error("cannot encode entry {key:?}: {source}")]
    Encode {
        key: String,
        source: serde_json::Error,
    },
    #[error("export failed: {0}")]
    Export(#[source] std::io::Error),
}

/// sled's page cache (its default is 1 GiB): writes and point reads.
const CACHE_BYTES: u64 = 16 << 20;

/// Whether a write changed the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The question had no final state; now it has this one.
    Inserted,
    /// The question was already final (stored or dead-lettered); nothing changed.
    AlreadyFinal,
}

/// The sled-backed answer store. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    answers: sled::Tree,
    dead_letters: sled::Tree,
    /// Questions sent back after a dead letter (see [`redrive`]).
    redriven: sled::Tree,
}

impl Store {
    /// Open (or create) the store in the directory `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(path)
            .cache_capacity(CACHE_BYTES)
            .open()
            .map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                reason: if is_locked(&source) {
                    "it is in use by another answerloop process".to_string()
                } else {
                    source.to_string()
                },
            })?;
        Ok(Self {
            answers: db.open_tree(ANSWERS)?,
            dead_letters: db.open_tree(DEAD_LETTERS)?,
            redriven: db.open_tree(REDRIVEN)?,
            db,
        })
    }

    /// Store a final answer unless the question is already final.
    pub fn put_answer(&self, answer: &StoredAnswer) -> Result<Written, StoreError> {
        let value = encode(&answer.id, answer)?;
        self.put_final(&answer.id, value, ANSWERS)
    }

    /// Store a dead letter unless the question is already final.
    pub fn put_dead_letter(&self, letter: &DeadLetter) -> Result<Written, StoreError> {
        let value = encode(&letter.id, letter)?;
        self.put_final(&letter.id, value, DEAD_LETTERS)
    }

    /// One transaction over both trees, so a question is final in one of them
    /// at most, and the first write wins.
    fn put_final(&self, id: &str, value: Vec<u8>, into: &str) -> Result<Written, StoreError> {
        let result = (&self.answers, &self.dead_letters).transaction(|(answers, dead)| {
            if answers.get(id)?.is_some() || dead.get(id)?.is_some() {
                return Ok(Written::AlreadyFinal);
            }
            let tree = if into == ANSWERS { answers } else { dead };
            tree.insert(id.as_bytes(), value.as_slice())?;
            Ok::<_, ConflictableTransactionError<()>>(Written::Inserted)
        });
        match result {
            Ok(outcome) => Ok(outcome),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(())) => unreachable!("the transaction never aborts"),
        }
    }

    /// Make every write so far durable. Commit consumer offsets only after this.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Blocking [`Store::flush`], for command-line tools.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<StoredAnswer>, StoreError> {
        get(&self.answers, ANSWERS, id)
    }

    pub fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        get(&self.dead_letters, DEAD_LETTERS, id)
    }

    /// Whether the question is stored or dead-lettered.
    pub fn is_final(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.answers.contains_key(id)? || self.dead_letters.contains_key(id)?)
    }

    /// Every stored answer, in id order.
    pub fn answers(&self) -> impl Iterator<Item = Result<StoredAnswer, StoreError>> + '_ {
        iter(&self.answers, ANSWERS)
    }

    /// Every dead letter, in id order.
    pub fn dead_letters(&self) -> impl Iterator<Item = Result<DeadLetter, StoreError>> + '_ {
        iter(&self.dead_letters, DEAD_LETTERS)
    }

    pub fn answer_count(&self) -> usize {
        self.answers.len()
    }

    pub fn dead_letter_count(&self) -> usize {
        self.dead_letters.len()
    }
}

/// Whether opening a sled database failed because another process holds it.
fn is_locked(error: &sled::Error) -> bool {
    match error {
        sled::Error::Io(io) => {
            io.kind() == std::io::ErrorKind::WouldBlock
                || io.to_string().contains("could not acquire lock")
        }
        _ => false,
    }
}

fn encode<T: serde::Serialize>(key: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        key: key.to_string(),
        source,
    })
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        tree,
        key: String::from_utf8_lossy(key).into_owned(),
        source,
    })
}

fn get<T: serde::de::DeserializeOwned>(
    tree: &sled::Tree,
    name: &'static str,
    id: &str,
) -> Result<Option<T>, StoreError> {
    tree.get(id)?
        .map(|bytes| decode(name, id.as_bytes(), &bytes))
        .transpose()
}

fn iter<'a, T: serde::de::DeserializeOwned + 'a>(
    tree: &'a sled::Tree,
    name: &'static str,
) -> impl Iterator<Item = Result<T, StoreError>> + 'a {
    tree.iter().map(move |entry| {
        let (key, value) = entry?;
        decode(name, &key, &value)
    })
}

#[cfg(test)]
mod tests;
