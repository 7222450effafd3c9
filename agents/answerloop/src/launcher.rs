//! The pipeline as separate processes of this binary: the traffic agent,
//! one or more LLM agents (with llm-sim) and one or more store agents, on
//! a broker server (`broker serve`, the agents on `--broker remote`) or on
//! a Fluvio cluster. Several LLM or store agents split the questions with
//! `--member K/M`; each store agent writes to a home of its own. `bench
//! pipeline` and `bench fleet` run it to measure processes side by side;
//! the crash test runs it and SIGKILLs agents at random moments.
//!
//! It only starts, watches, kills and stops processes: each agent writes its
//! stderr to `logs/NAME.log` in the fleet's directory, and the store agents'
//! metrics say how many questions are final. What a run came to is read
//! from the stores afterwards ([`crate::tally`]).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use answerloop_broker::records_in;
use answerloop_broker::select::{BrokerArgs, BrokerKind};
use answerloop_schema::{topics, Question};
use answerloop_storage::Store;
use anyhow::{bail, Context};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::home::Home;
use crate::tally::Tally;

/// What the fleet is made of, what its llm-sim does, and how fast traffic
/// sends.
#[derive(Debug, Clone)]
pub struct FleetPlan {
    /// Share of LLM calls llm-sim fails, with every kind of fault.
    pub fail_rate: f64,
    /// Questions a second the traffic agent sends; `None`: as fast as it can.
    pub traffic_rate: Option<f64>,
    /// llm-sim's seed at the LLM agents' first start (each restart adds one).
    pub seed: u64,
    /// LLM agents, members 1 to N of N.
    pub llm_agents: u32,
    /// Store agents, members 1 to N of N, each with a home of its own.
    pub store_agents: u32,
    /// llm-sim's latency, ms.
    pub sim_latency_ms: u64,
    /// LLM calls in flight at once in each LLM agent; `None`: the default.
    pub concurrency: Option<usize>,
    /// Answers drawn for a regenerated attempt in each LLM agent; `None`:
    /// the default.
    pub regenerate_candidates: Option<u32>,
    pub broker: FleetBroker,
}

impl FleetPlan {
    /// One agent of each kind on a served embedded broker; llm-sim with no
    /// latency.
    pub fn new(fail_rate: f64, traffic_rate: Option<f64>, seed: u64) -> Self {
        Self {
            fail_rate,
            traffic_rate,
            seed,
            llm_agents: 1,
            store_agents: 1,
            sim_latency_ms: 0,
            concurrency: None,
            regenerate_candidates: None,
            broker: FleetBroker::Served,
        }
    }

    /// The home of store agent `k` (from 1): the fleet's own for a single
    /// store agent, `stores/K` under it for several.
    fn store_home(&self, dir: &Path, k: u32) -> PathBuf {
        if self.store_agents <= 1 {
            dir.to_path_buf()
        } else {
            dir.join("stores").join(k.to_string())
        }
    }

    fn store_homes(&self, dir: &Path) -> Vec<PathBuf> {
        (1..=self.store_agents.max(1))
            .map(|k| self.store_home(dir, k))
            .collect()
    }
}

/// Where the fleet's topics live.
#[derive(Debug, Clone)]
pub enum FleetBroker {
    /// The embedded broker of the fleet's home, served by `broker serve`.
    Served,
    /// A Fluvio or Kafka cluster as these flags reach it (`broker` set;
    /// topics created with their partitions and replication, under their
    /// prefix).
    Cluster(BrokerArgs),
}

impl FleetBroker {
    /// Whether agents share partitions in consumer groups (Kafka) rather
    /// than by `--member K/M`.
    fn groups(&self) -> bool {
        matches!(self, FleetBroker::Cluster(args) if args.broker == Some(BrokerKind::Kafka))
    }

    /// `--member K/N`, where agents split the records themselves.
    fn member_args(&self, k: u32, n: u32) -> Vec<String> {
        if self.groups() {
            Vec::new()
        } else {
            vec!["--member".to_string(), format!("{k}/{n}")]
        }
    }
}

/// What an agent process does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Traffic,
    Llm,
    Store,
}

/// One agent process, restartable.
pub struct AgentProcess {
    /// `traffic`, `llm` or `store`; `llm-2`, `store-1` when there are several.
    pub name: String,
    pub role: Role,
    home: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
    /// SIGKILLs it took.
    pub kills: u32,
    starts: u32,
}

/// The broker server (if any) and the agents, running.
pub struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    /// Environment every agent gets: which broker, and how to reach it.
    broker_env: Vec<(&'static str, String)>,
    /// The broker server, on a served embedded broker.
    broker: Option<Child>,
    /// The store agents' metrics ports, for [`Fleet::finals`].
    metrics_ports: Vec<u16>,
    seed: u64,
    pub agents: Vec<AgentProcess>,
    client: reqwest::Client,
}

impl Fleet {
    /// Prepare `dir` as a home (new or empty), write `questions` there as
    /// the traffic agent's CSV, make the broker ready and start every
    /// process.
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
        let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut agents = Vec::new();
        let mut traffic = strings(&["agent", "traffic", "--data", &csv]);
        if let Some(rate) = plan.traffic_rate {
            traffic.extend(strings(&["--rate", &rate.to_string()]));
        }
        agents.push(AgentProcess::new(
            "traffic".into(),
            Role::Traffic,
            dir,
            traffic,
        ));
        let numbered = |role: &str, k: u32, n: u32| {
            if n <= 1 {
                role.to_string()
            } else {
                format!("{role}-{k}")
            }
        };
        for k in 1..=plan.llm_agents.max(1) {
            let n = plan.llm_agents.max(1);
            let mut llm = strings(&[
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
                "--sim-latency-ms",
                &plan.sim_latency_ms.to_string(),
            ]);
            llm.extend(plan.broker.member_args(k, n));
            if let Some(concurrency) = plan.concurrency {
                llm.extend(strings(&["--concurrency", &concurrency.to_string()]));
            }
            if let Some(n) = plan.regenerate_candidates {
                llm.extend(strings(&["--regenerate-candidates", &n.to_string()]));
            }
            agents.push(AgentProcess::new(
                numbered("llm", k, n),
                Role::Llm,
                dir,
                llm,
            ));
        }
        let mut metrics_ports = Vec::new();
        for k in 1..=plan.store_agents.max(1) {
            let n = plan.store_agents.max(1);
            let port = free_port()?;
            metrics_ports.push(port);
            let store_home = plan.store_home(dir, k);
            Home::resolve(Some(&store_home))?.prepare()?;
            let mut store = strings(&["agent", "--metrics", &format!("127.0.0.1:{port}"), "store"]);
            store.extend(plan.broker.member_args(k, n));
            agents.push(AgentProcess::new(
                numbered("store", k, n),
                Role::Store,
                &store_home,
                store,
            ));
        }
        let (broker, broker_env) = match &plan.broker {
            FleetBroker::Served => {
                let mut broker = start_broker(&exe, dir).await?;
                let addr = read_address(&mut broker, &log_path(dir, "broker")).await?;
                let env = vec![
                    ("ANSWERLOOP_BROKER", "remote".to_string()),
                    ("ANSWERLOOP_BROKER_ADDR", addr),
                ];
                (Some(broker), env)
            }
            FleetBroker::Cluster(args) => (None, deploy_on_cluster(dir, args).await?),
        };
        let mut fleet = Fleet {
            broker,
            broker_env,
            exe,
            dir: dir.to_path_buf(),
            metrics_ports,
            seed: plan.seed,
            agents,
            client: reqwest::Client::new(),
        };
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
        if agent.role == Role::Llm {
            // A different fault sequence for each member and each start.
            let member = i as u64 * 1_000;
            args.push(format!(
                "--sim-seed={}",
                self.seed + member + u64::from(agent.starts)
            ));
        }
        let log = self.log(&agent.name);
        // A line of its own before each start, so a reader of the log (and
        // the crash test) sees every start, even one killed before it said
        // anything.
        {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)?;
            writeln!(
                file,
                "--- launcher: start {} of {}: answerloop {}",
                agent.starts + 1,
                agent.name,
                args.join(" ")
            )?;
        }
        let mut command = command(&self.exe, &agent.home, &log, &args)?;
        command.envs(self.broker_env.iter().map(|(k, v)| (k, v)));
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
                    let name = agent.name.clone();
                    bail!(
                        "the {name} agent exited by itself ({status}); see {}",
                        self.log(&name).display()
                    );
                }
            }
        }
        Ok(())
    }

    /// Questions final in the answer stores, from the store agents'
    /// metrics; `None` while one of them is down.
    pub async fn finals(&self) -> Option<u64> {
        let mut total = 0;
        for port in &self.metrics_ports {
            total += self.finals_at(*port).await?;
        }
        Some(total)
    }

    async fn finals_at(&self, port: u16) -> Option<u64> {
        let text = self
            .client
            .get(format!("http://127.0.0.1:{port}/metrics"))
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
            .map(|a| (a.name.as_str(), a.child.as_ref()))
            .chain(self.broker.as_ref().map(|b| ("broker", Some(b))))
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
        if let Some(broker) = self.broker.as_mut() {
            stop(broker, Duration::from_secs(30)).await;
        }
        self.agents
    }
}

/// Make the cluster ready (topics with their partitions and replication,
/// the SmartModules), as `answerloop deploy` does; the environment that
/// puts the agents on it.
async fn deploy_on_cluster(
    dir: &Path,
    args: &BrokerArgs,
) -> anyhow::Result<Vec<(&'static str, String)>> {
    let kind = args.kind()?;
    let home = Home::resolve(Some(dir))?;
    let broker = args.connect(&home.broker()).await?;
    broker.deploy(&topics::ALL).await?;
    let mut env = vec![
        ("ANSWERLOOP_BROKER", kind.name().to_string()),
        ("ANSWERLOOP_TOPIC_PREFIX", args.topic_prefix()),
    ];
    if let Some(sc) = args.fluvio_sc().filter(|_| kind == BrokerKind::Fluvio) {
        env.push(("FLUVIO_SC", sc));
    }
    #[cfg(feature = "kafka")]
    if kind == BrokerKind::Kafka {
        env.push((
            "KAFKA_BOOTSTRAP_SERVERS",
            args.kafka_options()?.settings.bootstrap,
        ));
    }
    Ok(env)
}

impl AgentProcess {
    fn new(name: String, role: Role, home: &Path, args: Vec<String>) -> Self {
        Self {
            name,
            role,
            home: home.to_path_buf(),
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

/// This binary with `args`, on the home `home`, its stderr appended to `log`.
fn command(exe: &Path, home: &Path, log: &Path, args: &[String]) -> anyhow::Result<Command> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut command = Command::new(exe);
    command
        .args(args)
        .env("ANSWERLOOP_HOME", home)
        .env_remove("ANSWERLOOP_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true);
    Ok(command)
}

async fn start_broker(exe: &Path, dir: &Path) -> anyhow::Result<Child> {
    let args = ["broker", "serve", "--listen", "127.0.0.1:0"].map(String::from);
    command(exe, dir, &log_path(dir, "broker"), &args)?
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

/// What a stopped fleet left: its stores' tally of `sent`, and the records
/// on `questions` and `answers`.
pub struct Finished {
    pub tally: Tally,
    pub question_records: u64,
    pub answer_records: u64,
}

/// Read what the fleet `plan` ran in `dir` left, once it has stopped (a
/// served broker is gone by then, so its topics are read in place, through
/// the seam).
pub async fn finished(dir: &Path, plan: &FleetPlan, sent: &[Question]) -> anyhow::Result<Finished> {
    let mut stores = Vec::new();
    for home in plan.store_homes(dir) {
        let home = Home::resolve(Some(&home))?;
        stores.push(Store::open(&home.store()).context("opening an answer store")?);
    }
    let expected: HashSet<&str> = sent.iter().map(|q| q.id.as_str()).collect();
    let tally = Tally::count_all(
        &stores.iter().collect::<Vec<_>>(),
        Some(&expected),
        u32::MAX,
    )?;
    let home = Home::resolve(Some(dir))?;
    let broker = match &plan.broker {
        FleetBroker::Served => BrokerArgs::embedded(),
        FleetBroker::Cluster(args) => args.clone(),
    };
    let broker = broker.connect(&home.broker()).await?;
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
    let questions = answerloop_dataset::open(path, None)?.collect::<Result<Vec<_>, _>>()?;
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
