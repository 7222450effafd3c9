//! The compiled SmartModules, run through fluvio-smartengine (the engine
//! Fluvio's SPU uses), with the very `.wasm` bytes the binary ships.

use answerloop_schema::{Answer, InvalidRecord, Question, Verdict};
use answerloop_wasm::{SmartModule, ANSWER_SCORE, QUALITY_GATE, REGENERATE};
use fluvio_smartengine::{SmartEngine, SmartModuleChainBuilder, SmartModuleConfig};
use fluvio_smartmodule::dataplane::smartmodule::SmartModuleInput;
use fluvio_smartmodule::Record;

const REFERENCE: &str = "Ice floats because frozen water is less dense than liquid water.";
const GOOD: &str = "Frozen water is less dense, so ice floats on top.";
const BAD: &str = "Mortgage rates depend on the central bank.";

fn chain(sm: SmartModule, params: &[(&str, &str)]) -> fluvio_smartengine::SmartModuleChainInstance {
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec![sm.name.to_string()]);
    for (k, v) in params {
        config.param(*k, *v);
    }
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), sm.wasm.to_vec());
    builder
        .initialize(&SmartEngine::new())
        .expect("chain initialises")
}

fn run(sm: SmartModule, params: &[(&str, &str)], inputs: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let records = inputs.into_iter().map(Record::new).collect();
    let input = SmartModuleInput::try_from_records(records, 21).expect("input");
    let output = chain(sm, params).process(input).expect("process");
    assert!(
        output.error.is_none(),
        "{} returned an error: {:?}",
        sm.name,
        output.error
    );
    output
        .successes
        .into_iter()
        .map(|r| r.value.as_ref().to_vec())
        .collect()
}

fn answer(text: &str, attempt: u32) -> Answer {
    let question = Question::new("Why does ice float?", "", REFERENCE, 2).at_attempt(attempt);
    Answer::new(question, text, "test", 5)
}

fn json(a: &Answer) -> Vec<u8> {
    serde_json::to_vec(a).unwrap()
}

fn scored(text: &str, attempt: u32, params: &[(&str, &str)]) -> Answer {
    let out = run(ANSWER_SCORE, params, vec![json(&answer(text, attempt))]);
    assert_eq!(out.len(), 1);
    serde_json::from_slice(&out[0]).expect("answer-score emits an answer")
}

#[test]
fn answer_score_gives_accept_regenerate_and_exhausted() {
    let a = scored(GOOD, 1, &[]);
    assert_eq!(a.verdict, Some(Verdict::Accept));
    assert!(a.score.unwrap() >= 0.4);
    assert_eq!(scored(BAD, 1, &[]).verdict, Some(Verdict::Regenerate));
    let exhausted = scored(BAD, 3, &[]);
    assert_eq!(exhausted.verdict, Some(Verdict::Exhausted));
    assert_eq!(exhausted.resolved_best().unwrap().answer, BAD);
}

#[test]
fn answer_score_matches_the_native_scorer() {
    for text in [GOOD, BAD, "", "ice", "Ünïcödé ice floats ❄"] {
        let wasm = scored(text, 1, &[]).score.unwrap();
        let native = answerloop_scoring::semantic::score(text, REFERENCE);
        assert_eq!(wasm.to_bits(), native.to_bits(), "{text:?}");
    }
}

/// The WASM build classifies bytes sixteen at a time with SIMD, the native
/// one a byte at a time: every line of the eval pairs and the sample, and
/// awkward text, scored in one batch, must give the native scores and
/// records to the bit.
#[test]
fn answer_score_matches_the_native_scorer_on_the_eval_pairs_and_the_sample() {
    let inputs = eval_and_sample_records(false);
    let outputs = run(ANSWER_SCORE, &[], inputs.clone());
    assert_eq!(outputs.len(), inputs.len());
    for (input, output) in inputs.iter().zip(&outputs) {
        let wasm: Answer = serde_json::from_slice(output).unwrap();
        let native: Answer =
            serde_json::from_slice(&answerloop_scoring::decide::score_whole_record(
                input,
                &answerloop_scoring::Params::default(),
            ))
            .unwrap();
        assert_eq!(
            wasm.score.map(f32::to_bits),
            native.score.map(f32::to_bits),
            "{:?}",
            wasm.answer
        );
        assert_eq!(wasm, native);
    }
}

/// With the reference's vector carried (as traffic sends it), the module
/// reads it, as the native scorer does, to the bit; the scores move from
/// the text's by less than 1e-4.
#[test]
fn answer_score_reads_a_carried_reference_vector_as_the_native_scorer_does() {
    let inputs = eval_and_sample_records(true);
    let outputs = run(ANSWER_SCORE, &[], inputs.clone());
    assert_eq!(outputs.len(), inputs.len());
    let params = answerloop_scoring::Params::default();
    let mut native = answerloop_scoring::scorer::RecordScorer::default();
    let mut moved = 0;
    for (input, output) in inputs.iter().zip(&outputs) {
        let wasm: Answer = serde_json::from_slice(output).unwrap();
        let fast: Answer = serde_json::from_slice(&native.score_record(input, &params)).unwrap();
        let plain: Answer = serde_json::from_slice(
            &answerloop_scoring::decide::score_whole_record(input, &params),
        )
        .unwrap();
        assert_eq!(wasm.score.map(f32::to_bits), fast.score.map(f32::to_bits));
        assert_eq!(wasm.score.map(f32::to_bits), plain.score.map(f32::to_bits));
        let from_text = answerloop_scoring::semantic::score(&wasm.answer, &wasm.question.reference);
        let carried = wasm.score.unwrap();
        assert!((carried - from_text).abs() < 1e-4, "{carried} {from_text}");
        moved += usize::from(carried.to_bits() != from_text.to_bits());
    }
    assert_eq!(native.carried_read(), inputs.len() as u64);
    assert!(
        moved > 0,
        "some scores differ from the text's in their last bits"
    );
}

/// With exact vectors carried for the answer and the reference (`--scorer
/// exact`), the module scores their cosine, the native scorer's number to
/// the bit; a vector of another model, or damaged, falls back to the static
/// score in the module as natively.
#[test]
fn answer_score_scores_carried_exact_vectors_as_the_native_scorer_does() {
    use answerloop_scoring::carried;
    let inputs = eval_and_sample_records(false);
    let unit = |seed: usize| -> Vec<f32> {
        (0..carried::EXACT_DIMS)
            .map(|i| ((i * 31 + seed * 17) as f32 * 0.013).sin() + (seed % 5) as f32 * 0.1)
            .collect()
    };
    let inputs: Vec<Vec<u8>> = inputs
        .iter()
        .enumerate()
        .map(|(i, bytes)| {
            let mut a: Answer = serde_json::from_slice(bytes).unwrap();
            a.answer_vector = carried::exact_vector(&unit(i));
            a.question.reference_vector = carried::exact_vector(&unit(i + 1));
            match i % 10 {
                7 => a.answer_vector = a.answer_vector.replacen("L6", "L12", 1),
                8 => a.question.reference_vector.truncate(100),
                9 => a.answer_vector.clear(),
                _ => {}
            }
            json(&a)
        })
        .collect();
    let outputs = run(ANSWER_SCORE, &[], inputs.clone());
    assert_eq!(outputs.len(), inputs.len());
    let params = answerloop_scoring::Params::default();
    let mut native = answerloop_scoring::scorer::RecordScorer::default();
    for (i, (input, output)) in inputs.iter().zip(&outputs).enumerate() {
        let wasm: Answer = serde_json::from_slice(output).unwrap();
        let fast: Answer = serde_json::from_slice(&native.score_record(input, &params)).unwrap();
        assert_eq!(wasm, fast);
        assert_eq!(wasm.score.map(f32::to_bits), fast.score.map(f32::to_bits));
        let exact = carried::exact_score(
            &wasm.answer_vector,
            &wasm.question.reference_vector,
            &mut Default::default(),
        );
        let text = answerloop_scoring::semantic::score(&wasm.answer, &wasm.question.reference);
        match i % 10 {
            7..=9 => assert_eq!(wasm.score, Some(text), "record {i}: the static score"),
            _ => assert_eq!(wasm.score, exact, "record {i}: the exact vectors' cosine"),
        }
    }
    let exact = inputs.len() as u64 - (0..inputs.len()).filter(|i| i % 10 >= 7).count() as u64;
    assert_eq!(native.exact_read(), exact);
}

/// An answer record for each neighbouring pair of lines of the eval pairs
/// and the sample (and some awkward texts), with or without the
/// reference's carried vector.
fn eval_and_sample_records(carried: bool) -> Vec<Vec<u8>> {
    let mut texts: Vec<String> = [
        include_str!("../../../data/eval/pairs.csv"),
        include_str!("../../../data/sample.csv"),
    ]
    .iter()
    .flat_map(|file| file.lines().map(str::to_string))
    .collect();
    texts.extend([
        "Café naïve RÉSUMÉ Ærøskøbing ŁÓDŹ straße İstanbul ǅ ﬁne — ok".to_string(),
        "日本語のテキスト 中文 한국어 русский ТЕКСТ".to_string(),
        "emoji 🧊 floats 🧊🧊 \u{200b}zero\u{200b}width \"quoted\" back\\slash".to_string(),
        format!("{}é{}", "A".repeat(70), "b".repeat(70)),
    ]);
    texts
        .windows(2)
        .enumerate()
        .map(|(i, pair)| {
            let mut question = Question::new(format!("Q{}", i % 7), "", pair[1].as_str(), 2);
            if carried {
                question.reference_vector =
                    answerloop_scoring::semantic::model().carried_vector(&question.reference);
            }
            json(&Answer::new(question, pair[0].as_str(), "test", 1))
        })
        .collect()
}

#[test]
fn answer_score_params_move_the_decision() {
    assert_eq!(
        scored(GOOD, 1, &[("threshold", "0.99")]).verdict,
        Some(Verdict::Regenerate)
    );
    assert_eq!(
        scored(BAD, 1, &[("max_attempts", "1")]).verdict,
        Some(Verdict::Exhausted)
    );
    assert_eq!(
        scored(BAD, 1, &[("threshold", "0")]).verdict,
        Some(Verdict::Accept)
    );
}

#[test]
fn invalid_params_fail_the_chain_at_init_with_the_name() {
    let mut config = SmartModuleConfig::builder();
    config.smartmodule_names(vec!["answer-score".to_string()]);
    config.param("threshold", "high");
    let mut builder = SmartModuleChainBuilder::default();
    builder.add_smart_module(config.build().unwrap(), ANSWER_SCORE.wasm.to_vec());
    assert!(builder.initialize(&SmartEngine::new()).is_err());
}

#[test]
fn broken_records_are_tagged_invalid_and_the_batch_goes_on() {
    let inputs = vec![
        b"{not json".to_vec(),
        vec![0xff, 0xfe, 0x00],
        Vec::new(),
        json(&answer(GOOD, 1)),
    ];
    let out = run(ANSWER_SCORE, &[], inputs);
    assert_eq!(out.len(), 4, "every record comes out, none stops the batch");
    for raw in &out[..3] {
        let tag: InvalidRecord = serde_json::from_slice(raw).expect("an invalid tag");
        assert_eq!(tag.verdict, Verdict::Invalid);
        assert!(!tag.error.is_empty());
    }
    let good: Answer = serde_json::from_slice(&out[3]).unwrap();
    assert_eq!(good.verdict, Some(Verdict::Accept));
}

#[test]
fn regenerate_emits_the_next_attempt_only_for_rejected_answers() {
    let inputs = vec![
        json(&scored(GOOD, 1, &[])),
        json(&scored(BAD, 1, &[])),
        json(&scored(BAD, 3, &[])),
        b"garbage".to_vec(),
    ];
    let out = run(REGENERATE, &[], inputs);
    assert_eq!(out.len(), 1);
    let q: Question = serde_json::from_slice(&out[0]).unwrap();
    assert_eq!(q.attempt, 2);
    assert_eq!(q.best.unwrap().answer, BAD);
}

#[test]
fn regenerate_honours_max_attempts() {
    let input = vec![json(&scored(BAD, 2, &[("max_attempts", "5")]))];
    assert_eq!(
        run(REGENERATE, &[("max_attempts", "5")], input.clone()).len(),
        1
    );
    assert_eq!(run(REGENERATE, &[("max_attempts", "2")], input).len(), 0);
}

#[test]
fn quality_gate_passes_accepted_exhausted_and_invalid() {
    let accepted = json(&scored(GOOD, 1, &[]));
    let regen = json(&scored(BAD, 1, &[]));
    let exhausted = json(&scored(BAD, 3, &[]));
    let invalid = run(ANSWER_SCORE, &[], vec![b"nope".to_vec()]).remove(0);
    let out = run(
        QUALITY_GATE,
        &[],
        vec![accepted.clone(), regen, exhausted.clone(), invalid.clone()],
    );
    assert_eq!(out, vec![accepted, exhausted, invalid]);
}

#[test]
fn quality_gate_threshold_param_is_applied() {
    let good = json(&scored(GOOD, 1, &[]));
    assert_eq!(
        run(QUALITY_GATE, &[("threshold", "0.99")], vec![good.clone()]).len(),
        0
    );
    assert_eq!(run(QUALITY_GATE, &[], vec![good]).len(), 1);
}
