//! `answer-score` (map, at the head of the consumer chains of `answers`):
//! scores each answer against
//! its reference and writes `score`, `verdict` and the best attempt so far
//! into the record. A record it cannot parse comes out tagged `invalid`; it
//! never returns an error, since one error stops a whole Fluvio batch.

use std::sync::OnceLock;

use answerloop_scoring::{decide, Params};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleExtraParams;
use fluvio_smartmodule::{eyre, smartmodule, RecordData, Result, SmartModuleRecord};

static PARAMS: OnceLock<Params> = OnceLock::new();

#[smartmodule(init)]
fn init(params: SmartModuleExtraParams) -> Result<()> {
    let parsed = Params::from_lookup(|name| params.get(name).cloned()).map_err(|e| eyre!("{e}"))?;
    PARAMS
        .set(parsed)
        .map_err(|_| eyre!("answer-score initialised twice"))
}

#[smartmodule(map)]
pub fn map(record: &SmartModuleRecord) -> Result<(Option<RecordData>, RecordData)> {
    let params = PARAMS.get().copied().unwrap_or_default();
    let scored = decide::score_record(record.value.as_ref(), &params);
    Ok((record.key.clone(), scored.into()))
}
