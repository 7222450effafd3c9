//! How an answer is scored and what happens to it next.
//!
//! Plain Rust with no I/O, compiled both into the SmartModules (WASM) and into
//! the native binary, so a score computed in the broker and one computed by
//! `answerloop score` are the same number.
//!
//! - [`semantic`]: the score: static embeddings distilled from
//!   all-MiniLM-L6-v2, read from [`table`].
//! - [`vocab`], [`classify`]: the tokeniser's word lookup and byte classes.
//! - [`lexical`]: word overlap, the baseline the semantic score must beat.
//! - [`params`]: `threshold` and `max_attempts`, as SmartModule init params.
//! - [`decide`]: the three SmartModules' logic: judge, regenerate, gate.
//! - [`scorer`]: `answer-score` on a record's bytes without re-encoding it.
//! - [`carried`]: vectors carried in the records (the reference's static
//!   vector; both texts' exact all-MiniLM-L6-v2 vectors with `--scorer
//!   exact`), and the exact score from them.

pub mod carried;
pub mod classify;
pub mod decide;
pub mod lexical;
pub mod params;
pub mod scorer;
pub mod semantic;
pub mod table;
pub mod vocab;

pub use decide::{judge, passes_gate, regenerate};
pub use params::{Params, ParamsError};
