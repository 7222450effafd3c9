//! `answerloop answers stats|get|list|export`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use answerloop_storage::export::Format;
use answerloop_storage::Store;
use anyhow::Context;

use crate::cli::HomeArg;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct AnswersArgs {
    #[command(flatten)]
    home: HomeArg,
    #[command(subcommand)]
    command: AnswersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AnswersCommand {
    /// Counts and means over the stored answers.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// One stored answer by question id (JSON).
    Get { id: String },
    /// Stored answers, one a line.
    List {
        #[arg(long)]
        limit: Option<usize>,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every stored answer as JSON lines or CSV.
    Export {
        #[arg(long, default_value = "jsonl")]
        format: Format,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn open(home: &HomeArg) -> anyhow::Result<Store> {
    let home = Home::resolve(home.home.as_deref())?;
    home.existing()?;
    Ok(Store::open(&home.store())?)
}

pub fn execute(args: AnswersArgs) -> anyhow::Result<ExitCode> {
    let store = open(&args.home)?;
    let mut out = std::io::stdout().lock();
    match args.command {
        AnswersCommand::Stats { json } => {
            let stats = store.stats()?;
            if json {
                writeln!(out, "{}", serde_json::to_string(&stats)?)?;
            } else {
                writeln!(
                    out,
                    "stored        {} (accepted {}, exhausted {})",
                    stats.stored, stats.accepted, stats.exhausted
                )?;
                writeln!(out, "dead letters  {}", stats.dead_letters)?;
                writeln!(out, "mean score    {:.3}", stats.mean_score_stored)?;
                writeln!(out, "mean attempts {:.2}", stats.mean_attempts)?;
                writeln!(out, "by attempt    {:?}", stats.stored_by_attempt)?;
            }
        }
        AnswersCommand::Get { id } => match store.get(&id)? {
            Some(answer) => writeln!(out, "{}", serde_json::to_string_pretty(&answer)?)?,
            None => {
                let why = match store.dead_letter(&id)? {
                    Some(letter) => format!(
                        "it was dead-lettered ({}): {}",
                        letter.class.as_str(),
                        letter.reason
                    ),
                    None => "no such question in the store".to_string(),
                };
                eprintln!("no stored answer for {id}: {why}");
                return Ok(ExitCode::from(1));
            }
        },
        AnswersCommand::List { limit, json } => {
            for answer in store.answers().take(limit.unwrap_or(usize::MAX)) {
                let a = answer?;
                if json {
                    writeln!(out, "{}", serde_json::to_string(&a)?)?;
                } else {
                    writeln!(
                        out,
                        "{}  {:.3}  {:<9} {}",
                        a.id,
                        a.score,
                        a.verdict.as_str(),
                        one_line(&a.title, 70)
                    )?;
                }
            }
        }
        AnswersCommand::Export { format, out: path } => {
            let n = match path {
                Some(path) => {
                    let file = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    store.export(format, std::io::BufWriter::new(file))?
                }
                None => store.export(format, &mut out)?,
            };
            eprintln!("exported {n} answers");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= max {
        flat
    } else {
        format!("{}…", flat.chars().take(max - 1).collect::<String>())
    }
}
