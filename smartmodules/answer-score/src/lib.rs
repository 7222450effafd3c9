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

answerloop_smartmodule_entry::entry!(map, Map, score);

/// Score one answer record.
pub fn score(record: &SmartModuleRecord) -> Result<Out> {
    let params = PARAMS.get().copied().unwrap_or_default();
    let scored = decide::score_record(record.value.as_ref(), &params);
    Ok(Out::Set(record.key.clone(), scored.into()))
}
