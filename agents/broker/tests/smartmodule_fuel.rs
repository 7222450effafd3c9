//! What a record costs inside the broker, in wasmtime's fuel (its count of
//! the WASM instructions a module runs): the same for the same build and
//! records however busy the machine is, unlike time.
//!
//! fluvio-protocol decodes a batch's records and encodes a module's output
//! one byte at a time; our modules' entry reads and writes them as slices
//! (`smartmodules/entry/src/wire.rs`). On these records (2.2 KB) the
//! byte-at-a-time code cost `quality-gate` 441,149 fuel a record and
//! `answer-score` 839,354; the slices 75,294 and 469,346 (this test prints
//! them). The bounds sit between, with room for a compiler's changes, so
//! the test fails if the byte-at-a-time code comes back.

use answerloop_schema::{Answer, Question};
use answerloop_scoring::semantic;
use fluvio_smartengine::{SmartEngine, SmartModuleChainBuilder, SmartModuleConfig};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;

const BATCHES: usize = 10;
const BATCH: usize = 100;

/// Answer records of about 2 KB, their reference's vector carried as the
/// traffic agent carries it.
fn answers(round: usize) -> Vec<Record> {
    let words = "ice floats because frozen water is less dense than the liquid \
                 around it so a lake freezes from the top down and fish live on below";
    let text = |seed: usize| {
        let words: Vec<&str> = words.split(' ').filter(|w| !w.is_empty()).collect();
        let mut text = String::new();
        for i in 0..160 {
            text.push_str(words[(i * 7 + seed) % words.len()]);
            text.push(if i % 12 == 11 { '.' } else { ' ' });
        }
        text
    };
    (0..BATCH)
        .map(|i| {
            let reference = text(i);
            let mut question = Question::new(format!("Question {round}-{i}?"), "", &reference, 1);
            question.reference_vector = semantic::model().carried_vector(&reference);
            let answer = Answer::new(question, text(i + 3), "m", 1);
            Record::new(serde_json::to_vec(&answer).unwrap())
        })
        .collect()
}

/// Run `batches` through one kept instance of `module`; its output and the
/// fuel it burnt a record.
fn through(
    engine: &SmartEngine,
    module: &answerloop_wasm::SmartModule,
    batches: Vec<Vec<Record>>,
) -> (Vec<Vec<Record>>, f64) {
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec![module.name.to_string()]);
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), module.wasm.to_vec());
    let mut chain = builder.initialize(engine).unwrap();
    let (mut records, mut fuel, mut output) = (0, 0, Vec::new());
    for batch in batches {
        records += batch.len();
        let out = chain
            .process(SmartModuleInput::try_from_records(batch, 21).unwrap())
            .unwrap();
        assert!(out.error.is_none(), "{:?}", out.error);
        fuel += chain.metrics_export()[module.name].fuel_used();
        output.push(out.successes);
    }
    (output, fuel as f64 / records as f64)
}

#[test]
fn a_record_costs_the_modules_what_slices_cost_not_what_bytes_do() {
    let engine = SmartEngine::new();
    let inputs: Vec<Vec<Record>> = (0..BATCHES).map(answers).collect();
    let bytes = inputs
        .iter()
        .flatten()
        .map(|r| r.value.len())
        .sum::<usize>();
    let (scored, score_fuel) = through(&engine, &answerloop_wasm::ANSWER_SCORE, inputs);
    assert_eq!(scored.iter().map(Vec::len).sum::<usize>(), BATCHES * BATCH);
    let (_, gate_fuel) = through(&engine, &answerloop_wasm::QUALITY_GATE, scored);
    eprintln!(
        "records of {} bytes: answer-score {score_fuel:.0} fuel a record, \
         quality-gate {gate_fuel:.0}",
        bytes / (BATCHES * BATCH)
    );
    assert!(
        gate_fuel < 150_000.0,
        "quality-gate burns {gate_fuel:.0} fuel a record: are records decoded a byte at a time again?"
    );
    assert!(
        score_fuel < 650_000.0,
        "answer-score burns {score_fuel:.0} fuel a record: are records decoded a byte at a time again?"
    );
}
