//! `answerloop models fetch|list|verify`: the local model cache;
//! `models distill|corpus|learn`: the static embedding table.

use std::process::ExitCode;

use answerloop_models::cache::{python, Fetched, ALL};
use answerloop_models::ModelCache;

use crate::cli::HomeArg;

mod learn;

pub use learn::read_corpus;

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
    /// Distil the static embedding table answer-score uses from all-MiniLM-L6-v2.
    Distill {
        /// Where to write the table (the committed one is
        /// core/scoring/data/static-embedding.bin).
        #[arg(long)]
        out: std::path::PathBuf,
        /// Dimensions kept by PCA (124 keeps the table under 4 MB).
        #[arg(long, default_value_t = 124)]
        dims: usize,
        /// SIF smoothing of the token weights.
        #[arg(long, default_value_t = 1e-3)]
        sif_a: f64,
        /// Take the token frequencies (SIF weights, common component) from
        /// this corpus file (one text a line, see `models corpus`) instead
        /// of the sample's questions and answers.
        #[arg(long, value_name = "FILE")]
        sif_corpus: Option<std::path::PathBuf>,
    },
    /// Write a training corpus for `models learn` (one text a line) from
    /// WordNet's data files and, optionally, fortune files.
    Corpus(learn::CorpusArgs),
    /// Fit a table's token vectors to the teacher's sentence embeddings of
    /// a corpus (Tokenlearn-style), starting from a distilled table.
    Learn(learn::LearnArgs),
}

/// The model cache for these arguments: ANSWERLOOP_MODELS_DIR, else the
/// home's `models/` when a home was given, else the user's cache directory.
pub fn cache(home: &HomeArg) -> ModelCache {
    ModelCache::locate(home.home.as_deref())
}

pub fn execute(args: ModelsArgs) -> anyhow::Result<ExitCode> {
    let cache = cache(&args.home);
    match args.command {
        ModelsCommand::Fetch => {
            // The models go to DIR/models: make DIR a home first, so that
            // `run --home DIR` takes it (and a directory holding other data
            // is refused before anything is written into it).
            if let Some(dir) = &args.home.home {
                crate::home::Home::resolve(Some(dir))?.prepare()?;
            }
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
        ModelsCommand::Distill {
            out,
            dims,
            sif_a,
            sif_corpus,
        } => distill(&cache, &out, dims, sif_a, sif_corpus.as_deref())?,
        ModelsCommand::Corpus(args) => learn::corpus(&args)?,
        ModelsCommand::Learn(args) => learn::learn(&cache, &args)?,
        ModelsCommand::Verify => {
            for package in ALL.iter().filter(|p| cache.is_installed(p)) {
                cache.verify(package)?;
                println!("{}: checksum verified", package.name);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn distill(
    cache: &ModelCache,
    out: &std::path::Path,
    dims: usize,
    sif_a: f64,
    sif_corpus: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    use answerloop_models::distill::{distill, DistillOptions};
    use answerloop_models::{MiniLm, MINILM};

    crate::providers::ensure_model(cache, &MINILM)?;
    let model = MiniLm::load(cache)?;
    let sample = crate::traffic::dataset::sample();
    let lines = match sif_corpus {
        Some(path) => learn::read_corpus(path)?,
        None => Vec::new(),
    };
    let corpus: Vec<&str> = match sif_corpus {
        Some(_) => lines.iter().map(String::as_str).collect(),
        None => sample
            .questions
            .iter()
            .flat_map(|q| [q.title.as_str(), q.content.as_str(), q.reference.as_str()])
            .collect(),
    };
    let frequencies = match sif_corpus {
        Some(path) => format!(
            "the corpus file {} ({} texts)",
            file_name(path),
            corpus.len()
        ),
        None => "data/sample.csv".to_string(),
    };
    let sif_flag = match sif_corpus {
        Some(path) => format!(" --sif-corpus {}", file_name(path)),
        None => String::new(),
    };
    let options = DistillOptions {
        dims,
        sif_a,
        ..DistillOptions::default()
    };
    let table = distill(&model, &corpus, &options)?;
    let provenance = serde_json::json!({
        "teacher": "sentence-transformers/all-MiniLM-L6-v2",
        "teacher_package": MINILM.requirement,
        "teacher_sha256": MINILM.artifacts[0].sha256,
        "licence": MINILM.licence,
        "method": format!("each WordPiece token alone ([CLS] t [SEP]) through the teacher, mean-pooled; PCA; SIF weights a/(a+p) from token frequencies in {frequencies}; first principal direction of the weighted sentence vectors projected out; int8 per-token scale"),
        "dims": table.dims,
        "pca_explained_variance": table.explained,
        "sif_a": sif_a,
        "tokens": table.tokens.len(),
        "command": format!("answerloop models distill --out {} --dims {dims} --sif-a {sif_a}{sif_flag}", file_name(out)),
    })
    .to_string();
    let bytes = answerloop_scoring::table::write(
        &provenance,
        table.dims,
        &table.tokens,
        &table.scales,
        &table.vectors,
    );
    answerloop_scoring::semantic::StaticModel::parse(&bytes)?;
    std::fs::write(out, &bytes)?;
    println!(
        "{} tokens x {} dims ({:.1}% of the variance), {} bytes: {}",
        table.tokens.len(),
        table.dims,
        table.explained * 100.0,
        bytes.len(),
        out.display()
    );
    Ok(())
}

/// A path as it goes into a table's provenance: as given when relative,
/// else its file name only, so no machine's directories are recorded.
pub fn file_name(path: &std::path::Path) -> String {
    match path.file_name() {
        Some(name) if path.is_absolute() => name.to_string_lossy().into_owned(),
        _ => path.display().to_string(),
    }
}
