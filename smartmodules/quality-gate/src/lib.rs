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

answerloop_smartmodule_entry::entry!(filter, Filter, gate);

/// Whether a scored record goes on to the store agent.
pub fn gate(record: &SmartModuleRecord) -> Result<Out> {
    let params = PARAMS.get().copied().unwrap_or_default();
    Ok(match decide::gate_record(record.value.as_ref(), &params) {
        true => Out::Keep,
        false => Out::Drop,
    })
}
