//! `answerloop score --answer A --reference R`: the score answer-score gives.

use std::process::ExitCode;

use answerloop_scoring::{decide, semantic};

use crate::config;
use serde_json::json;

#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    #[arg(long)]
    answer: String,
    #[arg(long)]
    reference: String,
    /// The attempt this answer is, for the verdict.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    #[arg(long, default_value_t = answerloop_scoring::params::DEFAULT_THRESHOLD)]
    threshold: f32,
    #[arg(long, default_value_t = answerloop_scoring::params::DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// One JSON object instead of the bare score.
    #[arg(long)]
    json: bool,
    /// The exact reference scorer instead: cosine of all-MiniLM-L6-v2
    /// embeddings (native only; fetched on first use).
    #[arg(long)]
    exact: bool,
    #[command(flatten)]
    home: crate::cli::HomeArg,
}

pub fn execute(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let params = config::scoring(
        Some(args.threshold),
        Some(args.max_attempts),
        &Default::default(),
    )?;
    let (score, scorer) = if args.exact {
        let cache = super::models::cache(&args.home);
        crate::providers::ensure_model(&cache, &answerloop_models::MINILM)?;
        let model = answerloop_models::MiniLm::load(&cache)?;
        (model.score(&args.answer, &args.reference)?, "exact")
    } else {
        (semantic::score(&args.answer, &args.reference), "semantic")
    };
    let verdict = decide::verdict(score, args.attempt, &params);
    if args.json {
        println!(
            "{}",
            json!({"score": score, "verdict": verdict.as_str(), "scorer": scorer, "threshold": params.threshold})
        );
    } else {
        println!("{score:.4}");
    }
    Ok(ExitCode::SUCCESS)
}
