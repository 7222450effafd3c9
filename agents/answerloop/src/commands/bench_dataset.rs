//! `bench dataset`: what a question set costs the processes that read it,
//! as the file grows. For each size a synthetic Yahoo! Answers CSV is
//! written to a temporary directory and the real binary is run on it as
//! child processes, each measured from outside: its peak resident memory
//! (the kernel's `ru_maxrss` for the child, from wait4) and the time until
//! it has its first question (traffic) or serves (llm-sim). Flat figures
//! from the smallest size to the largest are the claim: cost grows with
//! the distinct questions (an 8-byte id each), not with the file.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

/// Write `rows` rows in the Yahoo! Answers format to `path`, about 185
/// bytes each as the real training set's are: distinct questions, with a
/// repeat every 1000th row and a malformed row every 5000th, so that the
/// reader's skipping is on the measured path. Returns the file's size and
/// the text of its last question.
pub fn write_rows(path: &Path, rows: usize) -> anyhow::Result<(u64, String)> {
    const WORDS: [&str; 16] = [
        "water", "engine", "market", "garden", "planet", "history", "music", "battery", "river",
        "kitchen", "winter", "signal", "ladder", "coffee", "window", "bridge",
    ];
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut last = String::new();
    for i in 0..rows {
        let n = if i % 1000 == 999 { i - 500 } else { i };
        let w = |k: usize| WORDS[(n / 16usize.pow(k as u32)) % 16];
        if i % 5000 == 4999 {
            writeln!(out, "\"{}\",\"a row cut short {n}\"", n % 10 + 1)?;
            continue;
        }
        let title = format!(
            "Why does the {} {} need a {} (question {n})?",
            w(0),
            w(1),
            w(2)
        );
        let content = format!("Asked about the {} and the {}.", w(3), w(0));
        writeln!(
            out,
            "\"{}\",\"{title}\",\"{content}\",\"Because the {} keeps the {} from the {};\\nso the {} lasts.\"",
            n % 10 + 1,
            w(1),
            w(2),
            w(3),
            w(0),
        )?;
        last = format!("{title}\n{content}");
    }
    out.flush()?;
    Ok((std::fs::metadata(path)?.len(), last))
}

/// A child process's end: its exit status and peak resident memory.
struct Ended {
    success: bool,
    peak_rss_mb: f64,
}

/// Wait for `child` with wait4(2), for its own peak resident memory.
fn wait_measured(child: Child) -> anyhow::Result<Ended> {
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: wait4 on a child this process spawned and has not reaped;
    // `status` and `usage` are valid for writes.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    anyhow::ensure!(
        waited == pid,
        "waiting for child {pid}: {}",
        std::io::Error::last_os_error()
    );
    // The std handle must not wait again for a reaped child.
    std::mem::forget(child);
    Ok(Ended {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        // Kilobytes on Linux.
        peak_rss_mb: usage.ru_maxrss as f64 / 1024.0,
    })
}

/// Start this binary with `args` on a fresh home `home`; its stderr lines
/// come back on a channel, each with when it was seen.
fn start(
    exe: &Path,
    home: &Path,
    args: &[&str],
) -> anyhow::Result<(Child, std::sync::mpsc::Receiver<(Instant, String)>)> {
    start_with(exe, home, args, &[])
}

/// [`start`] with more environment variables.
fn start_with(
    exe: &Path,
    home: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<(Child, std::sync::mpsc::Receiver<(Instant, String)>)> {
    let mut child = Command::new(exe)
        .args(args)
        .envs(env.iter().copied())
        .env("ANSWERLOOP_HOME", home)
        .env_remove("ANSWERLOOP_CONFIG")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {} {}", exe.display(), args.join(" ")))?;
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    Ok((child, rx))
}

/// The first stderr line holding `marker`, and when it came; every line
/// seen until then is kept in `seen` for an error.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<(Instant, String)>,
    marker: &str,
    timeout: Duration,
    seen: &mut Vec<String>,
) -> Option<(Instant, String)> {
    let deadline = Instant::now() + timeout;
    while let Ok((at, line)) =
        lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        if line.contains(marker) {
            return Some((at, line));
        }
        seen.push(line);
    }
    None
}

/// `agent traffic` on `csv` (`--limit N`, or the whole file), until it
/// exits: time to its first question, wall time, peak memory.
fn traffic(
    exe: &Path,
    home: &Path,
    csv: &Path,
    limit: Option<usize>,
    env: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let csv = csv.to_str().context("a temporary path that is not UTF-8")?;
    let limit = limit.map(|n| n.to_string());
    let mut args = vec!["agent", "traffic", "--data", csv, "--exit-when-done"];
    if let Some(limit) = &limit {
        args.extend(["--limit", limit.as_str()]);
    }
    let started = Instant::now();
    let (child, lines) = start_with(exe, home, &args, env)?;
    let mut seen = Vec::new();
    let first = wait_for_line(
        &lines,
        crate::traffic::FIRST_QUESTION_LOG,
        Duration::from_secs(3600),
        &mut seen,
    );
    // The rest of its log, until it exits.
    let rest: Vec<String> = lines.iter().map(|(_, line)| line).collect();
    let ended = wait_measured(child)?;
    let elapsed_s = started.elapsed().as_secs_f64();
    seen.extend(rest);
    anyhow::ensure!(
        ended.success && first.is_some(),
        "agent traffic {} failed: {}",
        args.join(" "),
        seen.join("\n")
    );
    let sent = seen
        .iter()
        .find(|l| l.contains("traffic agent: sent"))
        .cloned()
        .unwrap_or_default();
    Ok(json!({
        "peak_rss_mb": ended.peak_rss_mb,
        "first_question_s": first.map(|(at, _)| at.duration_since(started).as_secs_f64()),
        "elapsed_s": elapsed_s,
        "log": sent.split("traffic agent: ").nth(1).unwrap_or(&sent).trim(),
    }))
}

/// The whole file sent by `agent traffic` to a broker served by another
/// process (`broker serve`), so that the traffic process holds only what
/// traffic holds; the broker server's peak beside it.
fn traffic_served(exe: &Path, home: &Path, csv: &Path) -> anyhow::Result<Value> {
    let mut broker = Command::new(exe)
        .args(["broker", "serve", "--listen", "127.0.0.1:0"])
        .env("ANSWERLOOP_HOME", home)
        .env_remove("ANSWERLOOP_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start the broker server")?;
    let mut addr = String::new();
    BufReader::new(broker.stdout.take().expect("stdout is piped")).read_line(&mut addr)?;
    let addr = addr.trim().to_string();
    let sent = match addr.is_empty() {
        true => Err(anyhow::anyhow!("the broker server did not start")),
        false => traffic(
            exe,
            &home.join("traffic"),
            csv,
            None,
            &[
                ("ANSWERLOOP_BROKER", "remote"),
                ("ANSWERLOOP_BROKER_ADDR", addr.as_str()),
            ],
        ),
    };
    let _ = broker.kill();
    let broker = wait_measured(broker)?;
    let mut sent = sent?;
    sent["broker_server_peak_rss_mb"] = json!(broker.peak_rss_mb);
    Ok(sent)
}

/// `llm-sim --data csv`: time until it serves, one question answered from
/// the file (checked: answered, not unknown), peak memory.
async fn llm_sim(exe: &Path, home: &Path, csv: &Path, probe: &str) -> anyhow::Result<Value> {
    let csv = csv.to_str().context("a temporary path that is not UTF-8")?;
    let args = ["llm-sim", "--data", csv, "--listen", "127.0.0.1:0"];
    let started = Instant::now();
    let (mut child, lines) = start(exe, home, &args)?;
    let mut seen = Vec::new();
    let serving = tokio::task::block_in_place(|| {
        wait_for_line(&lines, "serving", Duration::from_secs(600), &mut seen)
    });
    let Some((at, line)) = serving else {
        let _ = child.kill();
        let _ = wait_measured(child);
        anyhow::bail!("llm-sim did not start: {}", seen.join("\n"));
    };
    let ready_s = at.duration_since(started).as_secs_f64();
    let base = line
        .split_whitespace()
        .last()
        .context("llm-sim printed no address")?
        .to_string();
    let probed = probe_sim(&base, probe).await;
    let _ = child.kill();
    let ended = tokio::task::block_in_place(|| wait_measured(child))?;
    let answered = probed?;
    Ok(json!({
        "peak_rss_mb": ended.peak_rss_mb,
        "ready_s": ready_s,
        "first_answer_s": answered,
        "serving": line.trim(),
    }))
}

/// Ask llm-sim at `base` (its `/v1` root) `question`; seconds from
/// `ready` until it answers from the reference it read back.
async fn probe_sim(base: &str, question: &str) -> anyhow::Result<f64> {
    let client = reqwest::Client::new();
    let asked = Instant::now();
    let reply = client
        .post(format!("{base}/chat/completions"))
        .json(&json!({
            "model": "llm-sim",
            "messages": [{ "role": "user", "content": question }],
        }))
        .send()
        .await?
        .error_for_status()?;
    let _: Value = reply.json().await?;
    let took = asked.elapsed().as_secs_f64();
    let root = base.trim_end_matches("/v1");
    let stats: Value = client
        .get(format!("{root}/sim/stats"))
        .send()
        .await?
        .json()
        .await?;
    anyhow::ensure!(
        stats["answered"] == 1 && stats["unknown_questions"] == 0,
        "llm-sim did not know a question of its file: {stats}"
    );
    Ok(took)
}

/// `bench dataset --hold`: the question set parsed whole into memory, as
/// every reader did before it streamed; the baseline.
pub fn hold_whole(csv: &Path) -> anyhow::Result<()> {
    let file =
        std::fs::File::open(csv).with_context(|| format!("cannot read {}", csv.display()))?;
    let held = answerloop_dataset::parse(file, &csv.display().to_string())?;
    eprintln!("held {} questions", held.questions.len());
    Ok(())
}

/// `bench dataset --stream`: the question set read through to its end as
/// a stream, nothing else in the process: the reader's own cost.
pub fn stream_through(csv: &Path) -> anyhow::Result<()> {
    let mut questions = answerloop_dataset::open(csv, None)?;
    let mut n = 0usize;
    for question in questions.by_ref() {
        question?;
        n += 1;
    }
    let report = questions.report();
    eprintln!(
        "streamed {n} questions: {} rows, {} malformed, {} repeats",
        report.rows,
        report.malformed.len(),
        report.duplicates
    );
    Ok(())
}

/// A child that exits by itself: its wall time and peak memory.
fn measured_run(exe: &Path, home: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let started = Instant::now();
    let (child, lines) = start(exe, home, args)?;
    let log: Vec<String> = lines.iter().map(|(_, line)| line).collect();
    let ended = wait_measured(child)?;
    anyhow::ensure!(
        ended.success,
        "{} failed: {}",
        args.join(" "),
        log.join("\n")
    );
    Ok(json!({
        "peak_rss_mb": ended.peak_rss_mb,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "log": log.last().map(|l| l.trim()),
    }))
}

/// One size: write the file, run each measured process on it.
pub async fn one_size(dir: &Path, rows: usize, whole: bool) -> anyhow::Result<Value> {
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let csv = dir.join(format!("questions-{rows}.csv"));
    // The last question is the one asked of llm-sim: read back from the end.
    let (bytes, probe) = write_rows(&csv, rows)?;
    let home = |name: &str| -> PathBuf { dir.join(format!("home-{rows}-{name}")) };
    let mut report = json!({ "rows": rows, "file_mb": bytes as f64 / 1e6 });
    report["traffic_limit_10"] =
        tokio::task::block_in_place(|| traffic(&exe, &home("traffic-limit"), &csv, Some(10), &[]))?;
    report["llm_sim"] = llm_sim(&exe, &home("sim"), &csv, &probe).await?;
    if whole {
        report["traffic_whole_file"] =
            tokio::task::block_in_place(|| traffic(&exe, &home("traffic-whole"), &csv, None, &[]))?;
        report["traffic_whole_file_served_broker"] =
            tokio::task::block_in_place(|| traffic_served(&exe, &home("served"), &csv))?;
        let csv_arg = csv.to_str().context("a temporary path that is not UTF-8")?;
        for (key, name, flag) in [
            ("stream_whole_file", "stream", "--stream"),
            ("held_whole_baseline", "held", "--hold"),
        ] {
            let args = ["bench", "dataset", flag, csv_arg];
            report[key] = tokio::task::block_in_place(|| measured_run(&exe, &home(name), &args))?;
        }
    }
    std::fs::remove_file(&csv)?;
    Ok(report)
}
