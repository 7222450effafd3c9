//! `answerloop eval regenerate`: does asking again improve answers, and
//! which way of asking improves them most?
//!
//! Each strategy (a regenerate prompt at a sampling temperature) answers
//! the same questions through the whole pipeline on a fresh embedded
//! broker and store of its own, so its scores, verdicts and stored answers
//! are exactly what `run` would give. For each: acceptance and mean score
//! by attempt, and the lift of the stored mean over the first-attempt mean
//! (what regeneration added over keeping the first answers).

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use answerloop_llm::prompt::RegeneratePrompt;
use clap::ValueEnum;
use serde::Serialize;

use super::super::sim::SimKnobs;
use crate::cli::HomeArg;
use crate::config::{FileConfig, LlmArgs, ScoringArgs};
use crate::home::Home;
use crate::pipeline::{self, RunOptions, RunSummary};
use crate::tally::AttemptFigures;
use answerloop_broker::select::BrokerArgs;

#[derive(Debug, clap::Args)]
pub struct RegenerateArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Strategies to compare, each `PROMPT@TEMPERATURE`, with `+STEP` for
    /// a temperature that rises by STEP each attempt after the first, and
    /// `xN` for the best of N draws at each regenerated attempt (prompts:
    /// feedback, plain, revise). The default run's is `plain@0.7x3`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "feedback@0,plain@0.7,plain@0.7x3,revise@0.7x3"
    )]
    strategies: Vec<Strategy>,
    /// Yahoo! Answers CSV; default: the built-in sample.
    #[arg(long, value_name = "CSV")]
    data: Option<std::path::PathBuf>,
    /// Use only the first N distinct questions.
    #[arg(long)]
    limit: Option<usize>,
    /// Keep each strategy's home (broker topics and store) under this
    /// directory; default: a temporary one, removed afterwards.
    #[arg(long, value_name = "DIR")]
    keep: Option<std::path::PathBuf>,
    /// One JSON object instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    scoring: ScoringArgs,
    #[command(flatten)]
    llm: LlmArgs,
    #[command(flatten)]
    sim: SimKnobs,
}

/// A regenerate prompt at a sampling temperature.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Strategy {
    pub prompt: RegeneratePrompt,
    pub temperature: f32,
    /// Added to the temperature for each attempt after the first.
    pub step: f32,
    /// Draws at each regenerated attempt, the best-scored kept.
    pub draws: u32,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (prompt, temperature) = s
            .split_once('@')
            .ok_or_else(|| format!("strategy {s:?} is not PROMPT@TEMPERATURE (e.g. revise@0.7)"))?;
        let prompt = RegeneratePrompt::from_str(prompt, true).map_err(|_| {
            format!("strategy {s:?}: unknown prompt {prompt:?} (feedback, plain or revise)")
        })?;
        let (temperature, draws) = match temperature.split_once('x') {
            Some((temperature, draws)) => {
                let draws = draws
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::config::MAX_REGENERATE_CANDIDATES).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "strategy {s:?}: draws {draws:?} is not a whole number from 1 to {}",
                            crate::config::MAX_REGENERATE_CANDIDATES
                        )
                    })?;
                (temperature, draws)
            }
            None => (temperature, 1),
        };
        let (temperature, step) = temperature.split_once('+').unwrap_or((temperature, "0"));
        let number = |text: &str, what: &str| {
            text.parse()
                .ok()
                .filter(|t: &f32| t.is_finite() && (0.0..=2.0).contains(t))
                .ok_or_else(|| {
                    format!("strategy {s:?}: {what} {text:?} is not a number from 0 to 2")
                })
        };
        Ok(Self {
            prompt,
            temperature: number(temperature, "temperature")?,
            step: number(step, "temperature step")?,
            draws,
        })
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prompt = self
            .prompt
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default();
        write!(f, "{prompt}@{}", self.temperature)?;
        if self.step > 0.0 {
            write!(f, "+{}", self.step)?;
        }
        if self.draws > 1 {
            write!(f, "x{}", self.draws)?;
        }
        Ok(())
    }
}

/// What one strategy came to.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub strategy: String,
    pub questions: usize,
    pub stored: usize,
    pub accepted: usize,
    pub dead_letters: usize,
    /// Accepted over questions.
    pub acceptance: Option<f64>,
    pub stored_by_attempt: Vec<usize>,
    pub by_attempt: Vec<AttemptFigures>,
    pub mean_score_first_attempt: Option<f64>,
    pub mean_score_stored: Option<f64>,
    /// Stored mean minus first-attempt mean.
    pub lift: Option<f64>,
    pub llm_calls: u64,
    pub elapsed_s: f64,
}

impl Outcome {
    fn of(strategy: Strategy, s: &RunSummary) -> Self {
        let lift = match (s.mean_score_stored, s.mean_score_first_attempt) {
            (Some(stored), Some(first)) => Some(stored - first),
            _ => None,
        };
        Self {
            strategy: strategy.to_string(),
            questions: s.questions,
            stored: s.stored,
            accepted: s.accepted,
            dead_letters: s.dead_letters,
            acceptance: crate::tally::share(s.accepted, s.questions),
            stored_by_attempt: s.stored_by_attempt.clone(),
            by_attempt: s.by_attempt.clone(),
            mean_score_first_attempt: s.mean_score_first_attempt,
            mean_score_stored: s.mean_score_stored,
            lift,
            llm_calls: s.llm_calls,
            elapsed_s: s.elapsed_s,
        }
    }
}

pub async fn execute(args: RegenerateArgs) -> anyhow::Result<ExitCode> {
    if args.strategies.is_empty() {
        anyhow::bail!("--strategies names no strategy");
    }
    let home = Home::resolve(args.home.home.as_deref())?;
    let file = FileConfig::load(args.home.config.as_deref(), home.root())?;
    let params = args.scoring.resolve(&file.scoring)?;
    let models = crate::commands::models::cache(&args.home);
    let settings = args.llm.resolve(&file.llm, params, models)?;
    let temporary = tempfile::tempdir()?;
    let root = args.keep.clone().unwrap_or(temporary.path().to_path_buf());
    let sim = args.sim.config()?;
    let mut outcomes = Vec::new();
    for (n, strategy) in args.strategies.iter().enumerate() {
        let dir = root.join(format!("{n}-{strategy}"));
        if dir.exists() {
            anyhow::bail!(
                "{} already exists: give --keep an empty directory",
                dir.display()
            );
        }
        let mut agent = settings.agent.clone();
        agent.regenerate_prompt = strategy.prompt;
        agent.temperature = strategy.temperature;
        agent.temperature_step = strategy.step;
        agent.regenerate_candidates = strategy.draws;
        if !args.json {
            eprintln!("{strategy}: answering ...");
        }
        let options = RunOptions {
            home: Home::resolve(Some(&dir))?,
            data: args.data.clone(),
            limit: args.limit,
            provider: settings.provider.clone(),
            fallbacks: settings.fallbacks.clone(),
            sim: sim.clone(),
            agent,
            schedule: Default::default(),
            broker: BrokerArgs::default(),
            stall_timeout: Duration::from_secs(600),
            progress: false,
        };
        let summary = pipeline::run(options).await?;
        outcomes.push(Outcome::of(*strategy, &summary));
    }
    if args.json {
        println!("{}", serde_json::to_string(&outcomes)?);
    } else {
        print_table(&outcomes);
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(outcomes: &[Outcome]) {
    let num = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}"));
    println!(
        "{:<16} {:>9} {:>10} {:>10} {:>7} {:>16}  by attempt: answers / acceptance / mean",
        "strategy", "accepted", "first mean", "stored mean", "lift", "stored by attempt"
    );
    for o in outcomes {
        let attempts: Vec<String> = o
            .by_attempt
            .iter()
            .map(|a| {
                format!(
                    "{}: {} / {} / {}",
                    a.attempt,
                    a.answers,
                    num(a.acceptance),
                    num(a.mean_score)
                )
            })
            .collect();
        println!(
            "{:<16} {:>9} {:>10} {:>10} {:>7} {:>16}  {}",
            o.strategy,
            format!("{}/{}", o.accepted, o.questions),
            num(o.mean_score_first_attempt),
            num(o.mean_score_stored),
            num(o.lift),
            format!("{:?}", o.stored_by_attempt),
            attempts.join("; ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_strategy_is_a_prompt_at_a_temperature() {
        let s: Strategy = "revise@0.7".parse().unwrap();
        assert_eq!(s.prompt, RegeneratePrompt::Revise);
        assert_eq!(s.temperature, 0.7);
        assert_eq!(s.to_string(), "revise@0.7");
        let s: Strategy = "plain@0.7+0.3".parse().unwrap();
        assert_eq!((s.temperature, s.step), (0.7, 0.3));
        assert_eq!(s.to_string(), "plain@0.7+0.3");
        assert!("plain@0.7+y"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("step"));
        let s: Strategy = "plain@0.7+0.1x3".parse().unwrap();
        assert_eq!((s.temperature, s.step, s.draws), (0.7, 0.1, 3));
        assert_eq!(s.to_string(), "plain@0.7+0.1x3");
        assert_eq!("feedback@0".parse::<Strategy>().unwrap().draws, 1);
        for bad in ["plain@0.7x0", "plain@0.7x17", "plain@0.7x"] {
            assert!(
                bad.parse::<Strategy>().unwrap_err().contains("draws"),
                "{bad}"
            );
        }
        assert!("revise"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("PROMPT@TEMPERATURE"));
        assert!("shout@0.7"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("unknown prompt"));
        assert!("plain@hot"
            .parse::<Strategy>()
            .unwrap_err()
            .contains("temperature"));
        assert!("plain@3".parse::<Strategy>().is_err());
    }
}
