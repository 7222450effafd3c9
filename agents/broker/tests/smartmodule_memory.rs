//! fluvio-smartengine leaks every output buffer of a SmartModule call into
//! the module's linear memory (see `agents/broker/src/wasm_chain.rs`). This
//! shows the leak with the real engine and the real `answer-score` module,
//! and that the embedded broker's chains, rebuilt as they go, do not grow
//! with it. Resident memory is compared within one run, as ratios.
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
fn rebuilt_chains_do_not_grow_with_the_engines_output_leak() {
    let Some(start) = resident_mb() else {
        eprintln!("SKIPPED: no /proc/self/status to read resident memory from");
        return;
    };
    let engine = SmartEngine::new();
    let module = &answerloop_wasm::ANSWER_SCORE;
    let params = Params::default();

    // The engine as Fluvio ships it: one instance, kept.
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec![module.name.to_string()]);
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), module.wasm.to_vec());
    let mut raw = builder.initialize(&engine).unwrap();
    let mut output_bytes = 0usize;
    for round in 0..BATCHES {
        let input = batch(round)
            .into_iter()
            .map(|r| fluvio_smartmodule::Record::new_key_value(r.key.unwrap(), r.value))
            .collect();
        let out = raw
            .process(SmartModuleInput::try_from_records(input, 21).unwrap())
            .unwrap();
        output_bytes += out.successes.iter().map(|r| r.value.len()).sum::<usize>();
    }
    let after_raw = resident_mb().unwrap();
    let raw_growth = after_raw - start;
    let output_mb = output_bytes as f64 / (1 << 20) as f64;
    drop(raw);
    let after_drop = resident_mb().unwrap();

    // The embedded broker's chain, rebuilt every 4 MB of output.
    let spec = ChainSpec::single(module.name, &params);
    let mut chain = WasmChain::build(&engine, &spec)
        .unwrap()
        .recycle_after(4 << 20);
    for round in 0..BATCHES {
        chain.process(batch(round)).unwrap();
    }
    let rebuilt_growth = resident_mb().unwrap() - after_drop;
    eprintln!(
        "output {output_mb:.1} MB; resident growth: kept instance {raw_growth:.1} MB, \
         rebuilt chain {rebuilt_growth:.1} MB ({} rebuilds)",
        chain.rebuilds()
    );
    assert!(
        raw_growth > 0.8 * output_mb,
        "the leak is not there any more? {raw_growth:.1} MB resident for {output_mb:.1} MB output"
    );
    assert!(chain.rebuilds() > 0);
    assert!(
        rebuilt_growth < 0.4 * raw_growth,
        "rebuilt chain grew {rebuilt_growth:.1} MB against {raw_growth:.1} MB"
    );
}
