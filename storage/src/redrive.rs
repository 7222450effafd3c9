//! Dead letters sent back as questions (`answerloop dead-letters retry`).
//!
//! A redrive moves the dead letter, in one transaction, out of the
//! dead-letter tree (so the question is no longer final and its next final
//! state can be written) into the redriven tree, which keeps what the letter
//! said and how often the question was redriven. The caller produces the
//! question first and moves the letter after: a crash between the two
//! leaves the letter in place (the answer that comes back is refused as
//! already final, and a second redrive sends it again), never a question
//! that is neither final nor on its way.

use answerloop_schema::DeadLetter;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use crate::{decode, encode, get, iter, Store, StoreError, REDRIVEN};

/// The record of a question sent back after a dead letter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Redriven {
    /// The last dead letter, as it was when the question was sent back.
    pub letter: DeadLetter,
    /// When it was last sent back (ms since the Unix epoch).
    pub redriven_ms: u64,
    /// How often it was sent back.
    pub times: u32,
}

impl Store {
    /// Move question `id`'s dead letter to the redriven tree; the letter,
    /// or `None` when the question has no dead letter (never had one, or
    /// was redriven already).
    pub fn redrive(&self, id: &str, at_ms: u64) -> Result<Option<DeadLetter>, StoreError> {
        let result = (&self.dead_letters, &self.redriven).transaction(|(dead, redriven)| {
            let Some(bytes) = dead.get(id)? else {
                return Ok(None);
            };
            let letter: DeadLetter = decode(crate::DEAD_LETTERS, id.as_bytes(), &bytes)
                .map_err(ConflictableTransactionError::Abort)?;
            let times = match redriven.get(id)? {
                Some(old) => {
                    decode::<Redriven>(REDRIVEN, id.as_bytes(), &old)
                        .map_err(ConflictableTransactionError::Abort)?
                        .times
                }
                None => 0,
            };
            let record = Redriven {
                letter: letter.clone(),
                redriven_ms: at_ms,
                times: times + 1,
            };
            let value = encode(id, &record).map_err(ConflictableTransactionError::Abort)?;
            redriven.insert(id.as_bytes(), value)?;
            dead.remove(id.as_bytes())?;
            Ok(Some(letter))
        });
        match result {
            Ok(letter) => Ok(letter),
            Err(TransactionError::Storage(e)) => Err(e.into()),
            Err(TransactionError::Abort(e)) => Err(e),
        }
    }

    /// Whether, and how often, question `id` was redriven.
    pub fn redriven(&self, id: &str) -> Result<Option<Redriven>, StoreError> {
        get(&self.redriven, REDRIVEN, id)
    }

    /// Every redriven question, in id order.
    pub fn redriven_all(&self) -> impl Iterator<Item = Result<Redriven, StoreError>> + '_ {
        iter(&self.redriven, REDRIVEN)
    }
}
