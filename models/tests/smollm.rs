//! The real SmolLM2 model: tokenisation of the chat template, generation,
//! and the fixes that matter. The model comes from the cache that
//! `answerloop models fetch` fills (`.ci/run` fetches it and sets
//! ANSWERLOOP_REQUIRE_MODEL, so there these tests never skip).

use std::path::PathBuf;
use std::time::Duration;

mod common;
use answerloop_models::smollm::{chat_prompt, GgmlDTypeName, LoadOptions};
use answerloop_models::{GenerateOptions, SmolLm, SMOLLM2};
use common::installed_or_skip;

/// The cached model file, or `None` (with the reason printed) when absent.
fn model_file() -> Option<PathBuf> {
    Some(installed_or_skip(&SMOLLM2)?.main_file(&SMOLLM2))
}

fn tokens(tokenizer: &tokenizers::Tokenizer, text: &str) -> Vec<String> {
    let ids = tokenizer.encode(text, false).unwrap().get_ids().to_vec();
    ids.iter()
        .map(|id| tokenizer.id_to_token(*id).unwrap())
        .collect()
}

#[test]
fn the_chat_template_tokenises_without_a_prefix_space_and_with_single_digits() {
    let Some(path) = model_file() else { return };
    let prompt = chat_prompt([("system", "Be brief."), ("user", "Is 12 even?")]);
    let fixed = tokens(&SmolLm::load_tokenizer(&path, true).unwrap(), &prompt);
    assert_eq!(&fixed[..3], ["<|im_start|>", "system", "Ċ"], "{fixed:?}");
    assert!(
        fixed.windows(2).any(|w| w == ["1", "2"]),
        "digits one by one: {fixed:?}"
    );
    assert_eq!(fixed.last().unwrap(), "Ċ");
    assert_eq!(fixed.iter().filter(|t| *t == "<|im_end|>").count(), 2);
    // Without the fix, candle's fallback pre-tokenizer puts a space before
    // every piece that follows a special token.
    let naive = tokens(&SmolLm::load_tokenizer(&path, false).unwrap(), &prompt);
    assert_eq!(&naive[..2], ["<|im_start|>", "Ġsystem"], "{naive:?}");
}

#[test]
fn the_model_answers_greedily_and_repeatably() {
    let Some(path) = model_file() else { return };
    let model = SmolLm::load(&path, LoadOptions::default()).unwrap();
    let prompt = chat_prompt([("user", "What is the capital of France?")]);
    let options = GenerateOptions {
        max_tokens: 12,
        ..GenerateOptions::default()
    };
    let first = model.session().generate(&prompt, &options).unwrap();
    assert!(!first.text.is_empty());
    assert!(first.completion_tokens <= 12 && first.completion_tokens > 0);
    assert!(first.prompt_tokens > 5);
    assert!(first.text.contains("Paris"), "{:?}", first.text);
    let second = model.session().generate(&prompt, &options).unwrap();
    assert_eq!(first.text, second.text, "greedy decoding is deterministic");
}

#[test]
fn q4_1_matrices_are_requantised_to_q8_0_and_that_is_faster() {
    let Some(path) = model_file() else { return };
    let requantised = SmolLm::load(&path, LoadOptions::default()).unwrap();
    let shipped = SmolLm::load(
        &path,
        LoadOptions {
            requantize: false,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    assert!(requantised.matrix_dtypes.iter().all(|d| d.name() != "q4_1"));
    assert!(
        shipped
            .matrix_dtypes
            .iter()
            .filter(|d| d.name() == "q4_1")
            .count()
            >= 200
    );

    // A ratio of two timings taken side by side, never a wall-clock bound.
    let prompt = chat_prompt([("user", "Name three colours.")]);
    let options = GenerateOptions {
        max_tokens: 24,
        repeat_penalty: 1.0,
        ..GenerateOptions::default()
    };
    // Interleaved rounds, best of each: other tests of this binary share the
    // cores for a while, and a round that overlaps them is discarded.
    let per_token = |model: &SmolLm| -> Duration {
        let g = model.session().generate(&prompt, &options).unwrap();
        g.generation_time / g.completion_tokens.max(1) as u32
    };
    let (mut fast, mut slow) = (Duration::MAX, Duration::MAX);
    for _ in 0..4 {
        fast = fast.min(per_token(&requantised));
        slow = slow.min(per_token(&shipped));
    }
    assert!(
        slow.as_secs_f64() > 1.25 * fast.as_secs_f64(),
        "Q8_0 {fast:?}/token vs Q4_1 {slow:?}/token"
    );
}
