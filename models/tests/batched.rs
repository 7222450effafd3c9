//! The batched llama.cpp engine on the real SmolLM2 model: answers decoded
//! together equal the ones decoded alone (batching changes the speed, never
//! the text), seeds give repeatable and distinct draws, a prompt too long
//! is refused, and a streamed answer's pieces add up to its text.

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod common;
use answerloop_models::batched::{BatchedModel, BatchedOptions};
use answerloop_models::pool::ModelPool;
use answerloop_models::smollm::chat_prompt;
use answerloop_models::{GenerateOptions, ModelError, SMOLLM2};
use common::installed_or_skip;

/// The packaged GGUF, the engine's default; `ANSWERLOOP_MODEL_WEIGHTS=q4_0`
/// runs these tests on the Q4_0 weights.
fn model_file() -> Option<PathBuf> {
    let packaged = installed_or_skip(&SMOLLM2)?.main_file(&SMOLLM2);
    Some(answerloop_models::requantise::engine_file(&packaged).unwrap())
}

/// Options for greedy decoding of at most `max_tokens` tokens.
fn greedy(max_tokens: usize) -> GenerateOptions {
    GenerateOptions {
        max_tokens,
        ..GenerateOptions::default()
    }
}

fn pool(path: &Path, slots: usize) -> ModelPool {
    pool_of_engines(path, slots, 1)
}

fn pool_of_engines(path: &Path, slots: usize, engines: usize) -> ModelPool {
    let model = Arc::new(BatchedModel::load(path).unwrap());
    let options = BatchedOptions {
        slots,
        threads: 1,
        window: 512,
        engines,
    };
    ModelPool::batched(model, options, 16)
}

const QUESTIONS: [&str; 4] = [
    "What is the capital of France?",
    "Why is the sky blue?",
    "How do I cook rice?",
    "Who wrote Hamlet?",
];

fn prompt(question: &str) -> String {
    chat_prompt([("user", question)])
}

#[tokio::test(flavor = "current_thread")]
async fn answers_decoded_together_equal_the_answers_decoded_alone() {
    let Some(path) = model_file() else { return };
    let pool = pool(&path, 4);
    let options = greedy(24);
    let mut alone = Vec::new();
    for q in QUESTIONS {
        alone.push(pool.generate(prompt(q), options).await.unwrap().unwrap());
    }
    assert!(alone[0].text.contains("Paris"), "{:?}", alone[0].text);
    let together = futures_join(&pool, options).await;
    for (a, t) in alone.iter().zip(&together) {
        assert_eq!(a.text, t.text, "batching changed an answer");
        assert_eq!(a.completion_tokens, t.completion_tokens);
        assert_eq!(a.prompt_tokens, t.prompt_tokens);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn two_engines_share_the_requests_and_answer_as_one_engine_does() {
    let Some(path) = model_file() else { return };
    let options = greedy(24);
    let one = futures_join(&pool(&path, 4), options).await;
    let two = futures_join(&pool_of_engines(&path, 4, 2), options).await;
    for (a, b) in one.iter().zip(&two) {
        assert_eq!(
            a.text, b.text,
            "the engine that decoded it changed an answer"
        );
        assert_eq!(a.completion_tokens, b.completion_tokens);
    }
    assert!(one.iter().all(|g| g.engine == 0));
    let mut engines: Vec<usize> = two.iter().map(|g| g.engine).collect();
    engines.sort();
    engines.dedup();
    assert_eq!(
        engines,
        [0, 1],
        "four requests in flight reach both engines"
    );
}

/// The questions all in flight at once.
async fn futures_join(
    pool: &ModelPool,
    options: GenerateOptions,
) -> Vec<answerloop_models::Generation> {
    let pending = QUESTIONS.iter().map(|q| pool.generate(prompt(q), options));
    futures::future::join_all(pending)
        .await
        .into_iter()
        .map(|g| g.unwrap().unwrap())
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_seed_repeats_its_draw_and_another_seed_draws_anew() {
    let Some(path) = model_file() else { return };
    let pool = pool(&path, 2);
    let with_seed = |seed| GenerateOptions {
        max_tokens: 32,
        temperature: 1.2,
        seed,
        ..GenerateOptions::default()
    };
    let q = prompt("Tell me about dogs.");
    let a = pool
        .generate(q.clone(), with_seed(7))
        .await
        .unwrap()
        .unwrap();
    let b = pool
        .generate(q.clone(), with_seed(7))
        .await
        .unwrap()
        .unwrap();
    let c = pool
        .generate(q.clone(), with_seed(8))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.text, b.text, "the same seed draws the same answer");
    assert_ne!(a.text, c.text, "another seed draws another answer");
}

#[tokio::test(flavor = "current_thread")]
async fn a_prompt_longer_than_the_window_is_refused_and_the_engine_goes_on() {
    let Some(path) = model_file() else { return };
    let pool = pool(&path, 2);
    let long = prompt(&"word ".repeat(600));
    let options = greedy(8);
    let refused = pool.generate(long, options).await.unwrap();
    assert!(
        matches!(refused, Err(ModelError::PromptTooLong { limit: 512, .. })),
        "{refused:?}"
    );
    let next = pool.generate(prompt(QUESTIONS[0]), options).await.unwrap();
    assert!(next.unwrap().completion_tokens > 0);
}

#[tokio::test(flavor = "current_thread")]
async fn streamed_pieces_add_up_to_the_answer() {
    let Some(path) = model_file() else { return };
    let pool = pool(&path, 2);
    let options = greedy(24);
    let mut streaming = pool.stream(prompt(QUESTIONS[1]), options).unwrap();
    let mut text = String::new();
    let mut pieces = 0;
    while let Some(piece) = streaming.pieces.recv().await {
        text.push_str(&piece);
        pieces += 1;
    }
    let whole = streaming.done.await.unwrap().unwrap();
    assert_eq!(text, whole.text);
    assert!(pieces > 1, "the answer came in {pieces} piece(s)");
}

/// A prompt that starts as an earlier one did copies that start's KV from
/// the prompt cache instead of computing it, and answers exactly as it does
/// computed whole on a fresh engine; the very same prompt again (as best of
/// n's draws are) copies all of it but its last token.
#[tokio::test(flavor = "current_thread")]
async fn a_cached_prompt_start_changes_no_answer() {
    let Some(path) = model_file() else { return };
    let options = greedy(24);
    let system = "You answer questions from a community question-and-answer site. \
        Answer the question directly and helpfully in a few plain sentences.";
    let asked = |q: &str| chat_prompt([("system", system), ("user", q)]);
    let (first, second) = (asked(QUESTIONS[0]), asked(QUESTIONS[1]));

    let fresh = pool(&path, 2);
    let whole = fresh
        .generate(second.clone(), options)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(whole.cached_prompt_tokens, 0, "a fresh engine has no cache");

    let warm = pool(&path, 2);
    let earlier = warm.generate(first, options).await.unwrap().unwrap();
    assert_eq!(earlier.cached_prompt_tokens, 0);
    let copied = warm
        .generate(second.clone(), options)
        .await
        .unwrap()
        .unwrap();
    assert!(
        copied.cached_prompt_tokens >= 25 && copied.cached_prompt_tokens < copied.prompt_tokens,
        "the system prompt's tokens come from the cache: {} of {}",
        copied.cached_prompt_tokens,
        copied.prompt_tokens
    );
    assert_eq!(
        copied.text, whole.text,
        "the cached start changed the answer"
    );
    assert_eq!(copied.prompt_tokens, whole.prompt_tokens);

    // The second prompt was not computed whole, so the cache still holds
    // the first: the first again reuses all of it but its last token.
    let warm_first = warm
        .generate(asked(QUESTIONS[0]), options)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        warm_first.cached_prompt_tokens,
        warm_first.prompt_tokens - 1
    );
    assert_eq!(warm_first.text, earlier.text);
}
