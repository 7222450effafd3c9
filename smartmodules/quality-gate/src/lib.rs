//! `quality-gate` (filter, on consume from `answers`): passes accepted
//! answers, exhausted questions (whose record carries their best attempt), and
//! broken records so that the store agent can dead-letter them with a reason.
//! Never returns an error.

use std::sync::OnceLock;

use answerloop_scoring::{decide, Params};
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

#[smartmodule(filter)]
pub fn filter(record: &SmartModuleRecord) -> Result<bool> {
    let params = PARAMS.get().copied().unwrap_or_default();
    Ok(decide::gate_record(record.value.as_ref(), &params))
}
