//! The code `#[smartmodule(map)]` generates (fluvio-smartmodule 0.50) leaks
//! every call's output buffer into the module's linear memory: the engine
//! copies it out and never frees it. Our modules enter through
//! `answerloop-smartmodule-entry` instead, which frees it at the next call.
//! This runs the real `answer-score` module through the real engine, one
//! instance kept for the whole run, and shows that resident memory does not
//! grow with what it outputs. Compared within one run, as ratios.
//!
//! One test in this binary, so no other test moves the process's memory.

use answerloop_broker::wasm_chain::WasmChain;
use answerloop_broker::{ChainSpec, Record};
use answerloop_schema::{Answer, Question};
use answerloop_scoring::Params;
use fluvio_smartengine::{SmartEngine, SmartModuleChainBuilder, SmartModuleConfig};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;

const BATCHES: usize = 100;
const BATCH: usize = 100;

fn resident_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

fn batch(round: usize) -> Vec<Record> {
    let filler = "The answer explains the matter at some length, with examples. ".repeat(40);
    (0..BATCH)
        .map(|i| {
            let q = Question::new(format!("Question {round}-{i}?"), "", filler.clone(), 1);
            let a = Answer::new(q, format!("{filler} Answer {i}."), "m", 1);
            Record::keyed(format!("k{i}"), serde_json::to_vec(&a).unwrap())
        })
        .collect()
}

#[test]
fn a_kept_instance_does_not_grow_with_what_it_outputs() {
    let Some(start) = resident_mb() else {
        eprintln!("SKIPPED: no /proc/self/status to read resident memory from");
        return;
    };
    let engine = SmartEngine::new();
    let module = &answerloop_wasm::ANSWER_SCORE;

    // The engine as Fluvio's SPU runs it: one instance, kept.
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec![module.name.to_string()]);
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), module.wasm.to_vec());
    let mut kept = builder.initialize(&engine).unwrap();
    let mut run = |rounds: std::ops::Range<usize>| {
        let mut output_bytes = 0usize;
        for round in rounds {
            let input = batch(round)
                .into_iter()
                .map(|r| fluvio_smartmodule::Record::new_key_value(r.key.unwrap(), r.value))
                .collect();
            let out = kept
                .process(SmartModuleInput::try_from_records(input, 21).unwrap())
                .unwrap();
            assert_eq!(out.successes.len(), BATCH);
            output_bytes += out.successes.iter().map(|r| r.value.len()).sum::<usize>();
        }
        output_bytes as f64 / (1 << 20) as f64
    };
    // A first tenth of the batches reaches the instance's working size.
    run(0..BATCHES / 10);
    let warm = resident_mb().unwrap();
    let output_mb = run(BATCHES / 10..BATCHES);
    let growth = resident_mb().unwrap() - warm;
    eprintln!(
        "started at {start:.1} MB, warm at {warm:.1} MB; then {output_mb:.1} MB of output, \
         resident growth {growth:.1} MB"
    );
    assert!(
        output_mb > 20.0,
        "enough output to see a leak: {output_mb:.1} MB"
    );
    assert!(
        growth < 0.1 * output_mb,
        "a kept instance grew {growth:.1} MB for {output_mb:.1} MB of output: the leak is back"
    );

    // The embedded broker's chain is that same kept instance.
    let spec = ChainSpec::single(module.name, &Params::default());
    let mut chain = WasmChain::build(&engine, &spec).unwrap();
    assert_eq!(chain.process(batch(0)).unwrap().len(), BATCH);
}
