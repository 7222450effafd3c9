//! The crash test behind `answerloop chaos`: the broker server and the
//! traffic, LLM and store agents run as separate processes of this binary
//! on one home; llm-sim (in the LLM agent) injects faults; each agent is
//! killed with SIGKILL at random moments and restarted. Afterwards the store
//! is checked question by question: every question stored or dead-lettered
//! exactly once, every dead letter with a reason.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use answerloop_schema::{topics, Question};
use answerloop_storage::Store;
use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::broker::embedded::EmbeddedBroker;
use crate::home::Home;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub questions: usize,
    /// SIGKILLs per agent.
    pub kills: u32,
    pub fail_rate: f64,
    pub seed: u64,
    /// Give up (and report what was lost) after this long.
    pub timeout: Duration,
    /// Questions a second the traffic agent sends; `None`: as fast as it can.
    pub traffic_rate: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub questions: usize,
    pub fail_rate: f64,
    pub kills: BTreeMap<String, u32>,
    pub stored: usize,
    pub dead_letters: usize,
    /// Questions neither stored nor dead-lettered.
    pub lost: usize,
    /// Questions final twice (stored and dead-lettered), plus entries for
    /// questions that were never sent.
    pub duplicates: usize,
    pub dead_letters_without_reason: usize,
    pub dead_letters_by_class: BTreeMap<String, usize>,
    /// Records on `questions`: more than `questions` means a restarted
    /// traffic agent sent some again (absorbed downstream).
    pub question_records: usize,
    /// Records on `answers` (first answers, regenerations and replays).
    pub answer_records: usize,
    pub elapsed_s: f64,
    /// Final questions a second, from the agents' start to the last one.
    pub questions_per_s: f64,
    /// Peak resident memory of each process (its last run), MB.
    pub peak_rss_mb: BTreeMap<String, f64>,
    pub timed_out: bool,
    pub passed: bool,
    /// Up to ten lost question ids, for a failing run.
    pub lost_examples: Vec<String>,
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

/// When a kill happens.
enum Trigger {
    /// This long after the agents started.
    After(Duration),
    /// Once the store holds this many final questions.
    Progress(u64),
}

struct Agent {
    name: &'static str,
    args: Vec<String>,
    child: Option<Child>,
    kills: u32,
    starts: u32,
}

impl Agent {
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

struct Fleet {
    exe: PathBuf,
    dir: PathBuf,
    broker_addr: String,
}

impl Fleet {
    /// Where the process `name` writes its stderr, across restarts.
    fn log(&self, name: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{name}.log"))
    }

    fn command(&self, name: &str, args: &[String]) -> anyhow::Result<Command> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(name))?;
        let mut command = Command::new(&self.exe);
        command
            .args(args)
            .env("ANSWERLOOP_HOME", &self.dir)
            .env("ANSWERLOOP_BROKER", "remote")
            .env("ANSWERLOOP_BROKER_ADDR", &self.broker_addr)
            .env_remove("ANSWERLOOP_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        Ok(command)
    }

    fn start(&self, agent: &mut Agent, seed: u64) -> anyhow::Result<()> {
        let mut args = agent.args.clone();
        if agent.name == "llm" {
            args.push(format!("--sim-seed={}", seed + u64::from(agent.starts)));
        }
        agent.child = Some(
            self.command(agent.name, &args)?
                .spawn()
                .with_context(|| format!("cannot start the {} agent", agent.name))?,
        );
        agent.starts += 1;
        Ok(())
    }
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

/// Run the test in `dir` (a new or empty directory).
pub async fn run(dir: &Path, config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let home = Home::resolve(Some(dir))?;
    home.prepare()?;
    std::fs::create_dir_all(dir.join("logs"))?;
    let csv = dir.join("chaos-questions.csv");
    let questions = write_questions(&csv, config.questions)?;
    let exe = std::env::current_exe().context("cannot find this binary to start the agents")?;
    let mut rng = StdRng::seed_from_u64(config.seed);

    let mut fleet = Fleet {
        exe,
        dir: dir.to_path_buf(),
        broker_addr: String::new(),
    };
    let (mut broker, addr) = start_broker(&fleet).await?;
    fleet.broker_addr = addr;
    let metrics_port = free_port()?;
    let csv = csv.display().to_string();
    let strings = |args: &[&str]| args.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut traffic = strings(&["agent", "traffic", "--data", &csv]);
    if let Some(rate) = config.traffic_rate {
        traffic.extend(strings(&["--rate", &rate.to_string()]));
    }
    let agents_started = Instant::now();
    let mut agents = vec![
        Agent::new("traffic", traffic),
        Agent::new(
            "llm",
            strings(&[
                "agent",
                "llm",
                "--llm",
                "sim",
                "--data",
                &csv,
                "--sim-fail-rate",
                &config.fail_rate.to_string(),
                "--sim-hang-secs",
                "1",
                "--llm-timeout-secs",
                "0.5",
                "--quota-delay-secs",
                "1",
            ]),
        ),
        Agent::new(
            "store",
            strings(&[
                "agent",
                "--metrics",
                &format!("127.0.0.1:{metrics_port}"),
                "store",
            ]),
        ),
    ];
    for agent in &mut agents {
        fleet.start(agent, config.seed)?;
    }

    // When each kill happens: the traffic agent's while it is sending (the
    // first eight seconds), the others' at random points of the progress,
    // so kills land in the middle of the work from start to end.
    let mut kills: Vec<(usize, Trigger)> = Vec::new();
    for (i, agent) in agents.iter().enumerate() {
        for _ in 0..config.kills {
            let trigger = if agent.name == "traffic" {
                Trigger::After(Duration::from_millis(rng.gen_range(500..8_000)))
            } else {
                let share = rng.gen_range(0.02..0.9);
                Trigger::Progress((share * config.questions as f64) as u64)
            };
            kills.push((i, trigger));
        }
    }
    kills.shuffle(&mut rng);
    let deadline = started + config.timeout;
    let client = reqwest::Client::new();
    let mut timed_out = false;
    let mut finals = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due = kills.iter().position(|(_, trigger)| match trigger {
            Trigger::After(after) => agents_started.elapsed() >= *after,
            Trigger::Progress(at) => finals.is_some_and(|n| n >= *at),
        });
        if let Some(due) = due {
            let agent = &mut agents[kills.swap_remove(due).0];
            if let Some(mut child) = agent.child.take() {
                let _ = child.kill().await;
                agent.kills += 1;
                tracing::info!(agent = agent.name, ?finals, "SIGKILL");
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
            fleet.start(agent, config.seed)?;
        }
        for agent in &mut agents {
            if let Some(child) = agent.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!(
                        "the {} agent exited by itself ({status}); see {}",
                        agent.name,
                        fleet.log(agent.name).display()
                    );
                }
            }
        }
        finals = store_entries(&client, metrics_port).await;
        if kills.is_empty() && finals.is_some_and(|n| n >= config.questions as u64) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    let busy_s = agents_started.elapsed().as_secs_f64();
    let mut peak_rss_mb = BTreeMap::new();
    for (name, child) in agents
        .iter()
        .map(|a| (a.name, a.child.as_ref()))
        .chain([("broker", Some(&broker))])
    {
        if let Some(mb) = child.and_then(Child::id).and_then(peak_rss_mb_of) {
            peak_rss_mb.insert(name.to_string(), mb);
        }
    }
    for agent in &mut agents {
        if let Some(mut child) = agent.child.take() {
            stop(&mut child, Duration::from_secs(30)).await;
        }
    }
    stop(&mut broker, Duration::from_secs(30)).await;

    let mut report = verify(&home, &questions).await?;
    report.fail_rate = config.fail_rate;
    report.kills = agents
        .iter()
        .map(|a| (a.name.to_string(), a.kills))
        .collect();
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.questions_per_s = (report.stored + report.dead_letters) as f64 / busy_s;
    report.peak_rss_mb = peak_rss_mb;
    report.timed_out = timed_out;
    report.passed = !timed_out
        && report.lost == 0
        && report.duplicates == 0
        && report.dead_letters_without_reason == 0
        && agents.iter().all(|a| a.kills >= config.kills);
    Ok(report)
}

async fn start_broker(fleet: &Fleet) -> anyhow::Result<(Child, String)> {
    let args = ["broker", "serve", "--listen", "127.0.0.1:0"].map(String::from);
    let mut broker = fleet
        .command("broker", &args)?
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start the broker server")?;
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
        bail!(
            "the broker server exited at start; see {}",
            fleet.log("broker").display()
        );
    }
    Ok((broker, addr))
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

/// Entries in the answer store, from the store agent's metrics; `None`
/// while it is down.
async fn store_entries(client: &reqwest::Client, port: u16) -> Option<u64> {
    let text = client
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

/// Check the store question by question, and count what crossed the topics.
async fn verify(home: &Home, questions: &[Question]) -> anyhow::Result<ChaosReport> {
    let store = Store::open(&home.store()).context("opening the answer store")?;
    let expected: HashSet<&str> = questions.iter().map(|q| q.id.as_str()).collect();
    let mut stored = HashSet::new();
    for answer in store.answers() {
        stored.insert(answer?.id);
    }
    let mut dead = HashSet::new();
    let mut report = ChaosReport {
        questions: expected.len(),
        ..ChaosReport::default()
    };
    for letter in store.dead_letters() {
        let letter = letter?;
        if letter.reason.trim().is_empty() {
            report.dead_letters_without_reason += 1;
        }
        *report
            .dead_letters_by_class
            .entry(letter.class.as_str().to_string())
            .or_default() += 1;
        dead.insert(letter.id);
    }
    report.stored = stored.len();
    report.dead_letters = dead.len();
    report.duplicates = stored.intersection(&dead).count()
        + stored
            .iter()
            .chain(&dead)
            .filter(|id| !expected.contains(id.as_str()))
            .count();
    let mut lost: Vec<&str> = expected
        .iter()
        .filter(|id| !stored.contains(**id) && !dead.contains(**id))
        .copied()
        .collect();
    lost.sort_unstable();
    report.lost = lost.len();
    report.lost_examples = lost.iter().take(10).map(|s| s.to_string()).collect();

    let broker = EmbeddedBroker::open(&home.broker())?;
    report.question_records = broker.topic_len(topics::QUESTIONS)? as usize;
    report.answer_records = broker.topic_len(topics::ANSWERS)? as usize;
    Ok(report)
}
