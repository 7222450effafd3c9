//! `answerloop eval carried`: does `--scorer exact` decide as `answerloop
//! score --exact` does? Each eval pair is scored two ways: the yardstick,
//! `MiniLm::score` on the two texts; and the broker's way, the cosine of
//! the two carried vectors, embedded as the agents embed them (in batches
//! of texts of similar length) and quantised to 16 and to 8 bits. Reported:
//! decision agreement at the threshold, and how far the scores moved.
//!
//! It also times the embedding an answer costs the LLM agent: one text a
//! forward pass, and in batches.

use std::process::ExitCode;
use std::time::Instant;

use answerloop_models::{MiniLm, MINILM};
use answerloop_scoring::carried::{self, ExactBuffers, Width};
use serde_json::json;

use crate::cli::HomeArg;
use crate::exact::{self, MAX_BATCH};

#[derive(Debug, clap::Args)]
pub struct CarriedArgs {
    #[command(flatten)]
    home: HomeArg,
    /// One JSON object instead of an indented one.
    #[arg(long)]
    json: bool,
    /// Answers embedded one at a time, then the same ones in batches, for
    /// the cost of each (the first N answers of the pairs).
    #[arg(long, default_value_t = 64)]
    single: usize,
}

pub fn execute(args: CarriedArgs) -> anyhow::Result<ExitCode> {
    let cache = super::super::models::cache(&args.home);
    crate::providers::ensure_model(&cache, &MINILM)?;
    let model = MiniLm::load(&cache)?;
    let pairs = super::pairs()?;
    let threshold = answerloop_scoring::Params::default().threshold;

    let started = Instant::now();
    let yardstick = pairs
        .iter()
        .map(|p| model.score(&p.answer, &p.reference))
        .collect::<Result<Vec<f32>, _>>()?;
    let yardstick_secs = started.elapsed().as_secs_f64();

    let answers: Vec<&str> = pairs.iter().map(|p| p.answer.as_str()).collect();
    let references: Vec<&str> = pairs.iter().map(|p| p.reference.as_str()).collect();
    let started = Instant::now();
    let answer_vectors = exact::embed(&model, &answers)?;
    let batched_secs = started.elapsed().as_secs_f64();
    let reference_vectors = exact::embed(&model, &references)?;

    let single = args.single.min(answers.len());
    let started = Instant::now();
    for text in &answers[..single] {
        exact::embed(&model, &[text])?;
    }
    let single_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    exact::embed(&model, &answers[..single])?;
    let same_batched_secs = started.elapsed().as_secs_f64();

    let mut widths = serde_json::Map::new();
    for (name, width) in [("i16", Width::I16), ("i8", Width::I8)] {
        let figures = compare(
            &yardstick,
            &answer_vectors,
            &reference_vectors,
            width,
            threshold,
        );
        widths.insert(name.into(), figures);
    }
    let answer_bytes = answers.iter().map(|a| a.len()).sum::<usize>() / answers.len();
    let result = json!({
        "pairs": pairs.len(),
        "threshold": threshold,
        "written_width": match carried::EXACT_WIDTH { Width::I16 => "i16", Width::I8 => "i8" },
        "widths": widths,
        "yardstick_pairs_per_sec": pairs.len() as f64 / yardstick_secs,
        "embed": {
            "mean_answer_bytes": answer_bytes,
            "batch": MAX_BATCH,
            "all_answers_batched_ms_per_text": 1e3 * batched_secs / answers.len() as f64,
            "texts": single,
            "single_ms_per_text": 1e3 * single_secs / single.max(1) as f64,
            "batched_ms_per_text": 1e3 * same_batched_secs / single.max(1) as f64,
        },
    });
    if args.json {
        println!("{result}");
    } else {
        println!("{}", serde_json::to_string_pretty(&result)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The carried scores at `width` against the yardstick's.
fn compare(
    yardstick: &[f32],
    answers: &[Vec<f32>],
    references: &[Vec<f32>],
    width: Width,
    threshold: f32,
) -> serde_json::Value {
    let encode = |v: &[f32]| carried::encode(carried::EXACT, carried::EXACT_MODEL, v, width);
    let mut buffers = ExactBuffers::default();
    let (mut agree, mut worst, mut sum, mut chars) = (0, 0.0f32, 0.0f64, 0);
    let mut flipped = Vec::new();
    for (i, (a, r)) in answers.iter().zip(references).enumerate() {
        let (a, r) = (encode(a), encode(r));
        chars = chars.max(a.len());
        let score = carried::exact_score(&a, &r, &mut buffers).expect("vectors just written");
        let delta = (score - yardstick[i]).abs();
        worst = worst.max(delta);
        sum += f64::from(delta);
        if (score >= threshold) == (yardstick[i] >= threshold) {
            agree += 1;
        } else {
            flipped.push(json!({"pair": i, "yardstick": yardstick[i], "carried": score}));
        }
    }
    json!({
        "agreement": agree as f64 / yardstick.len().max(1) as f64,
        "disagreements": flipped,
        "max_abs_delta": worst,
        "mean_abs_delta": sum / yardstick.len().max(1) as f64,
        "vector_chars": chars,
    })
}
