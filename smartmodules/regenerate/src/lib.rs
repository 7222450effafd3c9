//! `regenerate` (filter-map, on consume from `answers`): turns a rejected
//! answer with attempts left into the question's next attempt, carrying the
//! best answer so far. Everything else, broken records included, is dropped
//! here; `quality-gate` takes exactly those. Never returns an error.

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
        .map_err(|_| eyre!("regenerate initialised twice"))
}

/// The engine's entry point for a batch (see `answerloop-smartmodule-entry`:
/// the macro's `#[smartmodule(filter_map)]` without its leak).
///
/// # Safety
///
/// Called by the engine with the batch it put into this module's memory.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe fn filter_map(ptr: *mut u8, len: usize, version: i16) -> i32 {
    use fluvio_smartmodule::dataplane::smartmodule::SmartModuleKind;
    // SAFETY: the engine's arguments, passed on.
    unsafe {
        answerloop_smartmodule_entry::transform(
            ptr,
            len,
            version,
            SmartModuleKind::FilterMap,
            next_attempt,
        )
    }
}

/// The next question for a rejected answer with attempts left.
pub fn next_attempt(record: &SmartModuleRecord) -> Result<Out> {
    let params = PARAMS.get().copied().unwrap_or_default();
    Ok(
        match decide::regenerate_record(record.value.as_ref(), &params) {
            Some(question) => Out::Set(record.key.clone(), question.into()),
            None => Out::Drop,
        },
    )
}
