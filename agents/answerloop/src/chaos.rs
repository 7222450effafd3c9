//! The crash test behind `answerloop chaos`: the pipeline as processes
//! ([`crate::launcher`]) on a served embedded broker or a Fluvio cluster;
//! llm-sim (in the LLM agent) injects faults; each agent is killed with
//! SIGKILL at random moments and restarted, and on a cluster running on
//! this machine an SPU is killed and restarted too
//! ([`crate::local_cluster`]). Afterwards the store is checked question by
//! question ([`crate::tally::Tally`]): every question stored or
//! dead-lettered exactly once, every dead letter with a reason.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use answerloop_broker::select::BrokerKind;
use answerloop_schema::Question;
use anyhow::Context;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::launcher::{finished, Finished, Fleet, FleetBroker, FleetPlan, Role};
use crate::local_cluster;

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
    pub broker: FleetBroker,
    /// SIGKILLs of an SPU of the local cluster (with `FleetBroker::Fluvio`).
    pub spu_kills: u32,
    /// How long a killed SPU stays down.
    pub spu_down: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub questions: usize,
    pub fail_rate: f64,
    pub kills: BTreeMap<String, u32>,
    /// The SPUs killed and restarted, in order.
    pub spus_killed: Vec<String>,
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
    /// Whether every SPU kill asked for happened.
    pub passed_spu_kills: bool,
    pub passed: bool,
    /// Up to ten lost question ids, for a failing run.
    pub lost_examples: Vec<String>,
}

/// When a kill happens.
enum Trigger {
    /// This long after the agents started.
    After(Duration),
    /// Once the store holds this many final questions.
    Progress(u64),
}

/// What a kill hits.
#[derive(Debug, Clone, Copy)]
enum Target {
    Agent(usize),
    Spu,
}

/// Run the test in `dir` (a new or empty directory).
pub async fn run(dir: &Path, config: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let plan = FleetPlan {
        broker: config.broker.clone(),
        ..FleetPlan::new(config.fail_rate, config.traffic_rate, config.seed)
    };
    let spu_kills = match plan.broker {
        FleetBroker::Cluster(ref args) if args.broker == Some(BrokerKind::Fluvio) => {
            config.spu_kills
        }
        _ => 0,
    };
    anyhow::ensure!(
        spu_kills == 0 || !local_cluster::spus().is_empty(),
        "no SPU of a local Fluvio cluster runs on this machine to kill \
         (`fluvio-run spu` processes); use --spu-kills 0 for a remote cluster"
    );
    let (mut fleet, questions) = Fleet::start(dir, config.questions, &plan).await?;
    let agents_started = Instant::now();

    // When each kill happens: the traffic agent's while it is sending (the
    // first eight seconds), the others' at random points of the progress,
    // so kills land in the middle of the work from start to end.
    let progress = |rng: &mut StdRng| {
        let share = rng.gen_range(0.02..0.9);
        Trigger::Progress((share * config.questions as f64) as u64)
    };
    let mut kills: Vec<(Target, Trigger)> = Vec::new();
    for (i, agent) in fleet.agents.iter().enumerate() {
        for _ in 0..config.kills {
            let trigger = if agent.role == Role::Traffic {
                Trigger::After(Duration::from_millis(rng.gen_range(500..8_000)))
            } else {
                progress(&mut rng)
            };
            kills.push((Target::Agent(i), trigger));
        }
    }
    for _ in 0..spu_kills {
        kills.push((Target::Spu, progress(&mut rng)));
    }
    let mut spus_killed = Vec::new();
    kills.shuffle(&mut rng);
    let deadline = started + config.timeout;
    let mut timed_out = false;
    let mut finals = None;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let due = kills.iter().position(|(_, trigger)| match trigger {
            Trigger::After(after) => agents_started.elapsed() >= *after,
            Trigger::Progress(at) => finals.is_some_and(|n| n >= *at),
        });
        if let Some(due) = due {
            match kills.swap_remove(due).0 {
                Target::Agent(i) => {
                    if fleet.kill_agent(i).await {
                        tracing::info!(agent = %fleet.agents[i].name, ?finals, "SIGKILL");
                    }
                    tokio::time::sleep(Duration::from_millis(rng.gen_range(50..400))).await;
                    fleet.start_agent(i)?;
                }
                Target::Spu => {
                    let spu = kill_an_spu(&mut rng, config.spu_down).await?;
                    tracing::info!(%spu, ?finals, "SPU killed and restarted");
                    spus_killed.push(spu);
                }
            }
        }
        fleet.check_running()?;
        finals = fleet.finals().await;
        if kills.is_empty() && finals.is_some_and(|n| n >= config.questions as u64) {
            break;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            break;
        }
    }
    let busy_s = agents_started.elapsed().as_secs_f64();
    let peak_rss_mb = fleet.peak_rss_mb();
    let agents = fleet.stop().await;

    let mut report = verify(dir, &plan, &questions).await?;
    report.fail_rate = config.fail_rate;
    report.passed_spu_kills = spus_killed.len() as u32 >= spu_kills;
    report.spus_killed = spus_killed;
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
        && report.passed_spu_kills
        && agents.iter().all(|a| a.kills >= config.kills);
    Ok(report)
}

/// SIGKILL one SPU of the local cluster, chosen at random, keep it down for
/// `down`, and start it again as it was started; its name.
async fn kill_an_spu(rng: &mut StdRng, down: Duration) -> anyhow::Result<String> {
    let spus = local_cluster::spus();
    let spu = spus
        .choose(rng)
        .context("the local cluster's SPUs are gone")?
        .clone();
    spu.kill().await?;
    tokio::time::sleep(down).await;
    spu.restart()?;
    Ok(spu.name)
}

/// Check the store question by question, and count what crossed the topics.
async fn verify(
    dir: &Path,
    plan: &FleetPlan,
    questions: &[Question],
) -> anyhow::Result<ChaosReport> {
    let Finished {
        tally,
        question_records,
        answer_records,
    } = finished(dir, plan, questions).await?;
    Ok(ChaosReport {
        questions: questions.len(),
        stored: tally.stored,
        dead_letters: tally.dead_letters,
        lost: tally.lost.len(),
        lost_examples: tally.lost.iter().take(10).cloned().collect(),
        duplicates: tally.duplicates,
        dead_letters_without_reason: tally.dead_letters_without_reason,
        dead_letters_by_class: tally.dead_letters_by_class,
        question_records: question_records as usize,
        answer_records: answer_records as usize,
        ..ChaosReport::default()
    })
}
