//! `answerloop report --out report.html`: the run in a home as one
//! self-contained HTML page (see [`crate::report`]).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::HomeArg;
use crate::config::{FileConfig, ScoringArgs};
use crate::home::Home;
use crate::report::ReportData;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Where to write the page.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Also print the headline numbers as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// The run's scoring, for the verdicts of weak answers (default: the
    /// home's answerloop.toml, then 0.4 and 3).
    #[command(flatten)]
    scoring: ScoringArgs,
}

pub async fn execute(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let home = Home::resolve(args.home.home.as_deref())?;
    let file = FileConfig::load(args.home.config.as_deref(), home.root())?;
    let params = args.scoring.resolve(&file.scoring)?;
    let data = ReportData::load(&home, &params).await?;
    if let Some(note) = &data.scored_note {
        eprintln!("note: {note}");
    }
    let title = format!("answerloop report: {}", home.root().display());
    std::fs::write(&args.out, data.html(&title))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    let headline = data.headline();
    if args.json {
        println!("{}", serde_json::to_string(&headline)?);
    } else {
        eprintln!(
            "wrote {} ({} questions final)",
            args.out.display(),
            headline.questions_final
        );
    }
    Ok(ExitCode::SUCCESS)
}
