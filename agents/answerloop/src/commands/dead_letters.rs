//! `answerloop dead-letters list|retry`: the questions the pipeline gave up
//! on, and sending them back to be answered again (the redrive).
//!
//! `retry` produces each chosen dead letter's question to `questions` on
//! the home's broker (any transport), then moves the letter out of the
//! store's dead letters into its redriven record (see
//! `answerloop_storage::redrive`): a redriven question is final once, never
//! twice, and running `retry` again sends nothing new. By default every
//! dead letter is sent back except permanent ones (a 401 or a 404 fails the
//! same way again); `--class permanent` or `--id ID` asks for those. The
//! LLM agent answers the question from a fresh count of calls, so the cap on
//! calls bounds each redrive; `redrives` in the record counts them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::ExitCode;

use answerloop_broker::producer::Producer;
use answerloop_broker::select::BrokerArgs;
use answerloop_broker::Record;
use answerloop_schema::clock::now_ms;
use answerloop_schema::{topics, DeadLetter, FailureClass, Question};
use answerloop_storage::Store;
use serde::Serialize;

use super::answers::one_line;
use crate::cli::HomeArg;
use crate::config::FileConfig;
use crate::home::Home;

#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    #[command(flatten)]
    home: HomeArg,
    #[command(subcommand)]
    command: DeadLettersCommand,
}

#[derive(Debug, clap::Subcommand)]
enum DeadLettersCommand {
    /// Every dead letter with its class and reason.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Send dead letters back as questions: all but permanent ones, or
    /// those of --class, or --id. Run the pipeline (or its agents) after it.
    Retry(Box<RetryArgs>),
}

#[derive(Debug, clap::Args)]
struct RetryArgs {
    /// Only dead letters of this class: overload, quota, permanent, cap.
    #[arg(long, value_parser = parse_class)]
    class: Option<FailureClass>,
    /// Only this question (repeatable); permanent ones included.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<String>,
    /// One JSON object on stdout instead of a line of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    broker: BrokerArgs,
}

/// What a redrive did.
#[derive(Debug, Default, Serialize)]
pub struct RedriveReport {
    /// Questions sent back, by the class of their dead letter.
    pub redriven: BTreeMap<&'static str, usize>,
    pub ids: Vec<String>,
    /// Permanent dead letters left alone (ask with --class or --id).
    pub skipped_permanent: usize,
    /// Dead letters of records that were never readable questions.
    pub unreadable: usize,
    /// Asked-for ids with no dead letter, and whether each was redriven before.
    pub not_dead_lettered: Vec<String>,
}

fn parse_class(text: &str) -> Result<FailureClass, String> {
    [
        FailureClass::Overload,
        FailureClass::Quota,
        FailureClass::Permanent,
        FailureClass::Cap,
        FailureClass::Invalid,
    ]
    .into_iter()
    .find(|c| c.as_str() == text)
    .ok_or_else(|| {
        format!("unknown class {text:?}: use overload, quota, permanent, cap or invalid")
    })
}

fn open(home: &HomeArg) -> anyhow::Result<(Home, Store)> {
    let home = Home::resolve(home.home.as_deref())?;
    home.existing()?;
    let store = Store::open(&home.store())?;
    Ok((home, store))
}

pub async fn execute(args: DeadLettersArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        DeadLettersCommand::List { json } => list(&args.home, json),
        DeadLettersCommand::Retry(retry) => redrive(&args.home, *retry).await,
    }
}

fn list(home: &HomeArg, json: bool) -> anyhow::Result<ExitCode> {
    let (_, store) = open(home)?;
    let mut out = std::io::stdout().lock();
    for letter in store.dead_letters() {
        let l = letter?;
        if json {
            writeln!(out, "{}", serde_json::to_string(&l)?)?;
        } else {
            writeln!(
                out,
                "{}  {:<9} {}",
                l.id,
                l.class.as_str(),
                one_line(&l.reason, 90)
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Which dead letters `args` asks for, and why the others stay.
fn choose(
    store: &Store,
    args: &RetryArgs,
    report: &mut RedriveReport,
) -> anyhow::Result<Vec<DeadLetter>> {
    let wanted: BTreeSet<&str> = args.ids.iter().map(String::as_str).collect();
    let mut chosen = Vec::new();
    let mut found = BTreeSet::new();
    for letter in store.dead_letters() {
        let letter = letter?;
        if !wanted.is_empty() && !wanted.contains(letter.id.as_str()) {
            continue;
        }
        found.insert(letter.id.clone());
        if args.class.is_some_and(|c| c != letter.class) {
            continue;
        }
        let asked_by_name = !wanted.is_empty() || args.class.is_some();
        if letter.class == FailureClass::Permanent && !asked_by_name {
            report.skipped_permanent += 1;
        } else if letter.question.is_none() {
            report.unreadable += 1;
        } else {
            chosen.push(letter);
        }
    }
    report.not_dead_lettered = wanted
        .iter()
        .filter(|id| !found.contains(**id))
        .map(|id| id.to_string())
        .collect();
    Ok(chosen)
}

/// The question a dead letter held, ready to be asked again: a fresh count
/// of calls, no parking time, one more redrive.
fn again(mut question: Question, now: u64) -> Question {
    question.llm_attempts = 0;
    question.failed_calls.clear();
    question.not_before_ms = None;
    question.redrives += 1;
    question.trace.queued_ms = now;
    question.trace.answered_ms = None;
    question
}

async fn redrive(home: &HomeArg, mut args: RetryArgs) -> anyhow::Result<ExitCode> {
    let (home_dir, store) = open(home)?;
    FileConfig::load(home.config.as_deref(), home_dir.root())?.onto(&mut args.broker);
    let mut report = RedriveReport::default();
    let letters = choose(&store, &args, &mut report)?;
    if !letters.is_empty() {
        let broker = args.broker.connect(&home_dir.broker()).await?;
        broker.deploy(&topics::ALL).await?;
        let (questions, task) = Producer::spawn(broker, topics::QUESTIONS, None, 256);
        let now = now_ms();
        for letter in letters {
            let question = again(
                letter
                    .question
                    .clone()
                    .expect("chosen letters hold a question"),
                now,
            );
            let value = serde_json::to_vec(&question)?;
            // Produced (and acknowledged) before the letter moves: a crash
            // in between leaves the letter, never a question in neither place.
            questions
                .send(Record::keyed(question.id.clone(), value))
                .await?;
            if store.redrive(&letter.id, now)?.is_some() {
                *report.redriven.entry(letter.class.as_str()).or_default() += 1;
                report.ids.push(letter.id);
            }
        }
        drop(questions);
        task.await?;
        store.flush().await?;
    }
    print_report(&report, args.json)?;
    Ok(ExitCode::SUCCESS)
}

fn print_report(report: &RedriveReport, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(report)?);
        return Ok(());
    }
    let total: usize = report.redriven.values().sum();
    let classes: Vec<String> = report
        .redriven
        .iter()
        .map(|(c, n)| format!("{c} {n}"))
        .collect();
    println!(
        "redriven {total}{}{}",
        if classes.is_empty() { "" } else { ": " },
        classes.join(", ")
    );
    if report.skipped_permanent > 0 {
        println!(
            "left {} permanent dead letters (send them with --class permanent or --id ID)",
            report.skipped_permanent
        );
    }
    if report.unreadable > 0 {
        println!(
            "left {} dead letters of unreadable records (no question to send)",
            report.unreadable
        );
    }
    for id in &report.not_dead_lettered {
        println!("{id}: no dead letter (never dead-lettered, or redriven already)");
    }
    if total > 0 {
        println!("run the pipeline (answerloop run, or its agents) to answer them");
    }
    Ok(())
}
