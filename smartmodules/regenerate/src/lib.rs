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

answerloop_smartmodule_entry::entry!(filter_map, FilterMap, next_attempt);

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
