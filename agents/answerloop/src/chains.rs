//! The pipeline's SmartModule chains, named once, and where they run.
//!
//! Answers go to `answers` as the LLM agent wrote them; `answer-score` heads
//! both consumer chains of that topic (`answer-score` then `regenerate` for
//! the LLM agent, `answer-score` then `quality-gate` for the store agent)
//! and every reader that wants scores ([`scored`]). A Fluvio SPU builds a
//! producer-side chain afresh for every produce request (about 0.2 s with
//! wasmtime compiling the module each time), but a consumer stream's chain
//! once, when the stream opens; scoring on the consumer side keeps it in the
//! broker without paying that on every answer. The score is deterministic,
//! so each consumer computes the same one. The embedded broker runs the same
//! chains in the same places.

use answerloop_broker::ChainSpec;
use answerloop_scoring::Params;
use answerloop_wasm::{ANSWER_SCORE, QUALITY_GATE, REGENERATE};

/// `answers` as scored records: what the report and the tally read.
pub fn scored(params: &Params) -> ChainSpec {
    ChainSpec::of(&[ANSWER_SCORE.name], params)
}

/// Rejected answers with attempts left, as the next attempt's questions:
/// what the LLM agent reads from `answers`.
pub fn regenerate(params: &Params) -> ChainSpec {
    ChainSpec::of(&[ANSWER_SCORE.name, REGENERATE.name], params)
}

/// Final answers (accepted, or the best of the last attempt) and records
/// that cannot be stored: what the store agent reads from `answers`.
pub fn quality_gate(params: &Params) -> ChainSpec {
    ChainSpec::of(&[ANSWER_SCORE.name, QUALITY_GATE.name], params)
}
