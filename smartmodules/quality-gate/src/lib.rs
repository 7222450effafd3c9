//! `quality-gate` (filter, on consume from `answers`): passes accepted
//! answers, exhausted questions (whose record carries their best attempt), and
//! broken records so that the store agent can dead-letter them with a reason.
//! Never returns an error.

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
        .map_err(|_| eyre!("quality-gate initialised twice"))
}

/// The engine's entry point for a batch (see `answerloop-smartmodule-entry`:
/// the macro's `#[smartmodule(filter)]` without its leak).
///
/// # Safety
///
/// Called by the engine with the batch it put into this module's memory.
#[cfg(target_arch = "wasm32")]
#[unsafe(no_mangle)]
pub unsafe fn filter(ptr: *mut u8, len: usize, version: i16) -> i32 {
    use fluvio_smartmodule::dataplane::smartmodule::SmartModuleKind;
    // SAFETY: the engine's arguments, passed on.
    unsafe {
        answerloop_smartmodule_entry::transform(ptr, len, version, SmartModuleKind::Filter, gate)
    }
}

/// Whether a scored record goes on to the store agent.
pub fn gate(record: &SmartModuleRecord) -> Result<Out> {
    let params = PARAMS.get().copied().unwrap_or_default();
    Ok(match decide::gate_record(record.value.as_ref(), &params) {
        true => Out::Keep,
        false => Out::Drop,
    })
}
