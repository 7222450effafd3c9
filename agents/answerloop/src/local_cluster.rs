//! The processes of a Fluvio cluster on this machine (`fluvio cluster start
//! --local`, or `fluvio-run sc|spu` started by hand) and of a Tansu Kafka
//! broker (`tansu broker`), found by their command lines: the benchmarks
//! read their peak memory, and the crash test kills an SPU and starts it again exactly as it was started (same arguments,
//! environment, directory and log file).
//!
//! Linux only (it reads `/proc`); elsewhere no process is found.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The name of the binary that runs an SC or an SPU.
const RUNNER: &str = "fluvio-run";
const TANSU: &str = "tansu";

/// One SC or SPU process.
#[derive(Debug, Clone)]
pub struct ClusterProcess {
    pub pid: u32,
    /// `sc`, or `spu-ID` (the SPU's id, e.g. `spu-5001`).
    pub name: String,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    cwd: PathBuf,
    /// Where its stdout went, when that is a file.
    log: Option<PathBuf>,
}

/// The SC and SPU processes running here, SC first, SPUs by id.
pub fn find() -> Vec<ClusterProcess> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<ClusterProcess> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(read)
        .collect();
    found.sort_by(|a, b| (a.name != "sc", &a.name).cmp(&(b.name != "sc", &b.name)));
    found
}

/// The SPUs alone.
pub fn spus() -> Vec<ClusterProcess> {
    find()
        .into_iter()
        .filter(|p| p.name.starts_with("spu"))
        .collect()
}

fn read(pid: u32) -> Option<ClusterProcess> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let argv = split_nul(std::fs::read(proc.join("cmdline")).ok()?);
    let program = PathBuf::from(argv.first()?);
    let args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let name = match args.get(1).map(String::as_str) {
        // A Tansu Kafka broker: measured beside the Kafka transport.
        Some("broker") if program.file_name()? == TANSU => TANSU.to_string(),
        _ if program.file_name()? != RUNNER => return None,
        Some("sc") => "sc".to_string(),
        Some("spu") => {
            let id = args
                .windows(2)
                .find(|w| w[0] == "-i" || w[0] == "--id")
                .map(|w| w[1].clone())
                .or_else(|| {
                    args.iter()
                        .find_map(|a| a.strip_prefix("--id=").map(String::from))
                })
                .unwrap_or_else(|| pid.to_string());
            format!("spu-{id}")
        }
        _ => return None,
    };
    let env = split_nul(std::fs::read(proc.join("environ")).unwrap_or_default())
        .into_iter()
        .filter_map(|pair| {
            let bytes = pair.into_vec();
            let eq = bytes.iter().position(|b| *b == b'=')?;
            Some((
                OsString::from_vec(bytes[..eq].to_vec()),
                OsString::from_vec(bytes[eq + 1..].to_vec()),
            ))
        })
        .collect();
    let cwd = std::fs::read_link(proc.join("cwd")).unwrap_or_else(|_| "/".into());
    let log = std::fs::read_link(proc.join("fd/1"))
        .ok()
        .filter(|path| path.is_file());
    Some(ClusterProcess {
        pid,
        name,
        argv,
        env,
        cwd,
        log,
    })
}

fn split_nul(bytes: Vec<u8>) -> Vec<OsString> {
    bytes
        .split(|b| *b == 0)
        .filter(|part| !part.is_empty())
        .map(|part| OsString::from_vec(part.to_vec()))
        .collect()
}

impl ClusterProcess {
    /// Its peak resident memory since it started (or since
    /// [`Self::reset_peak`]), MB.
    pub fn peak_rss_mb(&self) -> Option<f64> {
        crate::launcher::peak_rss_mb_of(self.pid)
    }

    /// Start counting its peak memory afresh (Linux's `clear_refs` 5);
    /// `false` when not allowed.
    pub fn reset_peak(&self) -> bool {
        reset_peak_of(self.pid)
    }

    /// SIGKILL it, and wait until it is gone.
    pub async fn kill(&self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on a pid read from /proc just now.
        let sent = unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
        anyhow::ensure!(sent == 0, "cannot SIGKILL {} (pid {})", self.name, self.pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{}/cmdline", self.pid)).exists()
            && read(self.pid).is_some()
        {
            anyhow::ensure!(Instant::now() < deadline, "{} did not die", self.name);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Start it again as it was started, in a session of its own (it
    /// outlives this process, as the original did). Returns the new pid.
    pub fn restart(&self) -> anyhow::Result<u32> {
        let (program, args) = self.argv.split_first().context("no command line")?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .stdin(Stdio::null())
            .process_group(0);
        match &self.log {
            Some(log) => {
                let out = std::fs::OpenOptions::new().append(true).open(log)?;
                command.stdout(out.try_clone()?).stderr(out);
            }
            None => {
                command.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        let child = command
            .spawn()
            .with_context(|| format!("cannot start {} again", self.name))?;
        Ok(child.id())
    }
}

/// Reset the peak resident memory of `pid`; `false` when not allowed.
pub fn reset_peak_of(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}
