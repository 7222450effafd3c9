//! The pipeline as separate processes of this binary on one home: the
//! broker server (`broker serve`) and the traffic, LLM (with llm-sim) and
//! store agents reaching it with `--broker remote`. `bench pipeline` runs it
//! to measure processes side by side with one process; the crash test runs
//! it and SIGKILLs agents at random moments.
//!
//! It only starts, watches, kills and stops processes: each agent writes its
//! stderr to `logs/NAME.log` in the home, and the store agent's metrics say
//! how many questions are final. What a run came to is read from the store
//! afterwards ([`crate::tally`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use answerloop_broker::records_in;
use answerloop_broker::select::BrokerArgs;
use answerloop_schema::{topics, Question};
use answerloop_storage::Store;
use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::home::Home;
use crate::tally::Tally;

/// What the LLM agent's llm-sim does, and how fast traffic sends.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Share of LLM calls llm-sim fails, with every kind of fault.
    pub fail_rate: f64,
    /// Questions a second the traffic agent sends; `None`: as fast as it can.
    pub traffic_rate: Option<f64>,
    /// llm-sim's seed at the LLM agent's first start (each restart adds one).
    pub seed: u64,
}

/// One agent process, restartable.
pub struct AgentProcess {
    pub name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    /// SIGKILLs it took.
    pub kills: u32,
    starts: u32,
}

/// The broker server and the agents, running.
pub struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    broker_addr: String,
    broker: Child,
    /// The store agent's metrics port, for [`Fleet::finals`].
    metrics_port: u16,
    seed: u64,
    pub agents: Vec<AgentProcess>,
    client: reqwest::Client,
}

impl Fleet {
    /// Prepare `dir` as a home (new or empty), write `questions` there as
    /// the traffic agent's CSV and start every process.
    pub async fn start(
        dir: &Path,
        questions: usize,
        plan: &FleetPlan,
    ) -> anyhow::Result<(Self, Vec<Question>)> {
        let home = Home::resolve(Some(dir))?;
        home.prepare()?;
        std::fs::create_dir_all(dir.join("logs"))?;
        let csv = dir.join("questions.csv");
        let questions = write_questions(&csv, questions)?;
        let exe = std::env::current_exe().context("cannot find this binary to start the agents")?;
        let csv = csv.display().to_string();
        let metrics_port = free_port()?;
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut traffic = strings(&["agent", "traffic", "--data", &csv]);
        if let Some(rate) = plan.traffic_rate {
            traffic.extend(strings(&["--rate", &rate.to_string()]));
        }
        let llm = strings(&[
            "agent",
            "llm",
            "--llm",
            "sim",
            "--data",
            &csv,
            "--sim-fail-rate",
            &plan.fail_rate.to_string(),
            "--sim-hang-secs",
            "1",
            "--llm-timeout-secs",
            "0.5",
            "--quota-delay-secs",
            "1",
        ]);
        let store = strings(&[
            "agent",
            "--metrics",
            &format!("127.0.0.1:{metrics_port}"),
            "store",
        ]);
        let mut fleet = Fleet {
            broker: start_broker(&exe, dir).await?,
            broker_addr: String::new(),
            exe,
            dir: dir.to_path_buf(),
            metrics_port,
            seed: plan.seed,
            agents: vec![
                AgentProcess::new("traffic", traffic),
                AgentProcess::new("llm", llm),
                AgentProcess::new("store", store),
            ],
            client: reqwest::Client::new(),
        };
        let log = fleet.log("broker");
        fleet.broker_addr = read_address(&mut fleet.broker, &log).await?;
        for i in 0..fleet.agents.len() {
            fleet.start_agent(i)?;
        }
        Ok((fleet, questions))
    }

    /// Where the process `name` writes its stderr, across restarts.
    pub fn log(&self, name: &str) -> PathBuf {
        log_path(&self.dir, name)
    }

    /// Start (or restart) agent `i`.
    pub fn start_agent(&mut self, i: usize) -> anyhow::Result<()> {
        let agent = &self.agents[i];
        let mut args = agent.args.clone();
        if agent.name == "llm" {
            args.push(format!(
                "--sim-seed={}",
                self.seed + u64::from(agent.starts)
            ));
        }
        let mut command = command(&self.exe, &self.dir, agent.name, &args)?;
        command
            .env("ANSWERLOOP_BROKER", "remote")
            .env("ANSWERLOOP_BROKER_ADDR", &self.broker_addr);
        let child = command
            .spawn()
            .with_context(|| format!("cannot start the {} agent", agent.name))?;
        let agent = &mut self.agents[i];
        agent.child = Some(child);
        agent.starts += 1;
        Ok(())
    }

    /// SIGKILL agent `i` (no chance to finish anything); `false` if it was
    /// not running.
    pub async fn kill_agent(&mut self, i: usize) -> bool {
        let agent = &mut self.agents[i];
        let Some(mut child) = agent.child.take() else {
            return false;
        };
        let _ = child.kill().await;
        agent.kills += 1;
        true
    }

    /// An error naming the agent that exited by itself, if one did.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        for i in 0..self.agents.len() {
            let agent = &mut self.agents[i];
            if let Some(child) = agent.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    let name = agent.name;
                    bail!(
                        "the {name} agent exited by itself ({status}); see {}",
                        self.log(name).display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Questions final in the answer store, from the store agent's metrics;
    /// `None` while it is down.
    pub async fn finals(&self) -> Option<u64> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{}/metrics", self.metrics_port))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        let entries = text
            .lines()
            .filter(|l| l.starts_with("answerloop_store_entries{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        Some(entries)
    }

    /// The peak resident memory of each running process (the broker server
    /// included), MB.
    pub fn peak_rss_mb(&self) -> BTreeMap<String, f64> {
        self.agents
            .iter()
            .map(|a| (a.name, a.child.as_ref()))
            .chain([("broker", Some(&self.broker))])
            .filter_map(|(name, child)| {
                let mb = child.and_then(Child::id).and_then(peak_rss_mb_of)?;
                Some((name.to_string(), mb))
            })
            .collect()
    }

    /// Stop every process gracefully (SIGTERM, then SIGKILL after 30 s),
    /// the agents before the broker server.
    pub async fn stop(mut self) -> Vec<AgentProcess> {
        for agent in &mut self.agents {
            if let Some(mut child) = agent.child.take() {
                stop(&mut child, Duration::from_secs(30)).await;
            }
        }
        stop(&mut self.broker, Duration::from_secs(30)).await;
        self.agents
    }
}

impl AgentProcess {
    fn new(name: &'static str, args: Vec<String>) -> Self {
        Self {
            name,
            args,
            child: None,
            kills: 0,
            starts: 0,
        }
    }
}

fn log_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

/// This binary with `args`, on the home `dir`, its stderr appended to the
/// process's log.
fn command(exe: &Path, dir: &Path, name: &str, args: &[String]) -> anyhow::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(dir, name))?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("ANSWERLOOP_HOME", dir)
        .env_remove("ANSWERLOOP_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    Ok(command)
}

async fn start_broker(exe: &Path, dir: &Path) -> anyhow::Result<Child> {
    let args = ["broker", "serve", "--listen", "127.0.0.1:0"].map(String::from);
    command(exe, dir, "broker", &args)?
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the broker server")
}

/// The address the broker server prints on its first line.
async fn read_address(broker: &mut Child, log: &Path) -> anyhow::Result<String> {
    let stdout = broker.stdout.take().expect("stdout is piped");
    let mut first = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut first),
    )
    .await
    .context("the broker server did not start within 30 s")??;
    let addr = first.trim().to_string();
    if addr.is_empty() {
        bail!("the broker server exited at start; see {}", log.display());
    }
    Ok(addr)
}

/// Send SIGTERM and wait up to `grace` for the exit; SIGKILL after that.
async fn stop(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid this process spawned and has not reaped.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// What a stopped fleet left in its home: the store's tally of `sent`, and
/// the records on `questions` and `answers`.
pub struct Finished {
    pub tally: Tally,
    pub question_records: u64,
    pub answer_records: u64,
}

/// Read what the fleet in `dir` left, once it has stopped (the broker
/// server is gone, so its topics are read in place, through the seam).
pub async fn finished(dir: &Path, sent: &[Question]) -> anyhow::Result<Finished> {
    let home = Home::resolve(Some(dir))?;
    let store = Store::open(&home.store()).context("opening the answer store")?;
    let expected: HashSet<&str> = sent.iter().map(|q| q.id.as_str()).collect();
    let tally = Tally::count(&store, Some(&expected), u32::MAX)?;
    let broker = BrokerArgs::default().connect(&home.broker()).await?;
    Ok(Finished {
        tally,
        question_records: records_in(broker.as_ref(), topics::QUESTIONS).await?,
        answer_records: records_in(broker.as_ref(), topics::ANSWERS).await?,
    })
}

/// Write `n` distinct questions built from the sample (variants past its
/// size) to `path` as a Yahoo! Answers CSV.
pub fn write_questions(path: &Path, n: usize) -> anyhow::Result<Vec<Question>> {
    let sample = answerloop_dataset::sample().questions;
    let mut writer =
        csv::Writer::from_path(path).with_context(|| format!("cannot write {}", path.display()))?;
    for i in 0..n {
        let base = &sample[i % sample.len()];
        let title = match i / sample.len() {
            0 => base.title.clone(),
            round => format!("{} (variant {round})", base.title),
        };
        writer.write_record([
            base.category.max(1).to_string(),
            title.clone(),
            base.content.clone(),
            base.reference.clone(),
        ])?;
    }
    writer.flush()?;
    drop(writer);
    // Read back as the agents will, so the ids are the agents' ids.
    let questions = answerloop_dataset::read_path(path)?.questions;
    anyhow::ensure!(
        questions.len() == n,
        "wrote {n} questions but {} read back as distinct",
        questions.len()
    );
    Ok(questions)
}

/// The peak resident set of process `pid` (VmHWM), MB; `None` off Linux.
pub fn peak_rss_mb_of(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
