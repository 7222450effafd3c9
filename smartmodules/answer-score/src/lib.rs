//! `answer-score` (map, at the head of the consumer chains of `answers`):
//! scores each answer against
//! its reference and writes `score`, `verdict` and the best attempt so far
//! into the record. A record it cannot parse comes out tagged `invalid`; it
//! never returns an error, since one error stops a whole Fluvio batch.

use std::sync::OnceLock;

use answerloop_scoring::{decide, Params};
use answerloop_smartmodule_entry::Out;
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{eyre, smartmodule, Result, SmartModuleRecord};

static PARAMS: OnceLock<Params> = OnceLock::new();

#[smartmodule(init)]
fn init(params: SmartModuleExtraParams) -> Result<()> {
    let parsed = Params::from_lookup(|name| params.get(name).cloned()).map_err(|e| eyre!("{e}"))?;
    PARAMS
        .set(parsed)
        .map_err(|_| eyre!("answer-score initialised twice"))
}

/// The engine's entry point for a batch (see `answerloop-smartmodule-entry`:
/// the macro's `#[smartmodule(map)]` without its leak).
///
/// # Safety
///
/// Called by the engine with the batch it put into this module's memory.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe fn map(ptr: *mut u8, len: usize, version: i16) -> i32 {
    use fluvio_smartmodule::dataplane::smartmodule::SmartModuleKind;
    // SAFETY: the engine's arguments, passed on.
    unsafe {
        answerloop_smartmodule_entry::transform(ptr, len, version, SmartModuleKind::Map, score)
    }
}

/// Score one answer record.
pub fn score(record: &SmartModuleRecord) -> Result<Out> {
    let params = PARAMS.get().copied().unwrap_or_default();
    let scored = decide::score_record(record.value.as_ref(), &params);
    Ok(Out::Set(record.key.clone(), scored.into()))
}
