//! Helpers shared by the end-to-end tests.
#![allow(dead_code)]

pub mod redrive;

use std::path::Path;
use std::time::Duration;

use answerloop::home::Home;
use answerloop::llm_agent::LlmAgentConfig;
use answerloop::pipeline::RunOptions;
use answerloop::traffic::arrival::ScheduleArgs;
use answerloop_broker::select::BrokerArgs;
use answerloop_llm::spec::{ProviderKind, ProviderSpec};
use answerloop_llm_sim::{Quality, SimConfig};

/// Options for a run of the sample against the in-process simulator.
pub fn sim_run(home: &Path, sim: SimConfig, limit: Option<usize>) -> RunOptions {
    RunOptions {
        home: Home::resolve(Some(home)).unwrap(),
        data: None,
        limit,
        provider: ProviderSpec::new(ProviderKind::Sim, None, None, None, Duration::from_secs(2)),
        fallbacks: Vec::new(),
        sim,
        agent: LlmAgentConfig::default(),
        schedule: ScheduleArgs::default(),
        broker: BrokerArgs::default(),
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

/// Run the binary with `args`, require success, and parse the last line of
/// stdout as JSON.
pub fn json_of<I, S>(args: I) -> serde_json::Value
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    json_from(binary().args(args))
}

/// Run `command`, require success, and parse the last line of stdout as JSON.
pub fn json_from(command: &mut std::process::Command) -> serde_json::Value {
    let stdout = String::from_utf8(succeed(command).stdout).unwrap();
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("not JSON ({e}): {last}"))
}

/// Run `command` and require success (its stderr is the failure message).
pub fn succeed(command: &mut std::process::Command) -> std::process::Output {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run the binary with `args`, require failure, and return its stderr.
pub fn error_of<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let out = binary().args(args).output().unwrap();
    assert!(!out.status.success(), "expected a failure");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The cache when `package` is installed. Otherwise the test fails when
/// `ANSWERLOOP_REQUIRE_MODEL` is set (CI fetches the models first, so a
/// test must never skip there), or says why it skips and returns `None`.
pub fn installed_or_skip(
    package: &answerloop_models::ModelPackage,
) -> Option<answerloop_models::ModelCache> {
    let why = match answerloop_models::cache::locate_installed(package) {
        Ok(cache) => return Some(cache),
        Err(why) => why,
    };
    skip_unless_required("ANSWERLOOP_REQUIRE_MODEL", &why);
    None
}

/// A test is about to skip because something it needs is missing, `why`:
/// fail instead when `require` is set (CI installs everything and sets it),
/// else say why on stderr.
pub fn skip_unless_required(require: &str, why: &dyn std::fmt::Display) {
    assert!(std::env::var_os(require).is_none(), "{why}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {why}");
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something listens on loopback `port`.
pub fn wait_listening(port: u16) {
    wait_for(&format!("a server on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// Poll `done` every 20 ms; a test that waits longer than two minutes for
/// it is broken, and fails saying what it waited for.
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "waited two minutes for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `answerloop llm-sim` as a process on loopback `port`, with `knobs`,
/// once it listens. Kill it to make an outage.
pub fn llm_sim_process(port: u16, knobs: &[&str]) -> std::process::Child {
    let child = binary()
        .args(["llm-sim", "--listen", &format!("127.0.0.1:{port}")])
        .args(knobs)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_listening(port);
    child
}

/// `name{labels} value` lines of an OpenMetrics page.
pub fn metric_samples(page: &str) -> std::collections::HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The metrics a process serves on loopback `port`, when it answers.
pub fn scrape(port: u16) -> Option<std::collections::HashMap<String, f64>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let page = runtime.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    })?;
    Some(metric_samples(&page))
}
