//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use answerloop::home::Home;
use answerloop::llm::agent::LlmAgentConfig;
use answerloop::llm::spec::{ProviderKind, ProviderSpec};
use answerloop::pipeline::RunOptions;
use answerloop::sim::{Quality, SimConfig};
use answerloop::traffic::arrival::Arrival;

/// Options for a run of the sample against the in-process simulator.
pub fn sim_run(home: &Path, sim: SimConfig, limit: Option<usize>) -> RunOptions {
    RunOptions {
        home: Home::resolve(Some(home)).unwrap(),
        data: None,
        limit,
        provider: ProviderSpec::new(ProviderKind::Sim, None, None, None, Duration::from_secs(2)),
        sim,
        agent: LlmAgentConfig::default(),
        schedule: (Arrival::Constant, None, 1, 0),
        stall_timeout: Duration::from_secs(120),
        progress: false,
    }
}

pub fn sim(quality: Quality) -> SimConfig {
    SimConfig {
        quality,
        ..SimConfig::default()
    }
}

/// The `answerloop` binary built for these tests.
pub fn binary() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_answerloop"))
}
