//! Logs go to stderr through `tracing`, so stdout stays for results.
//! `RUST_LOG` picks what is shown; by default long-running services (agents,
//! the broker server) log their own info lines, one-shot commands only
//! warnings, and dependencies (the Fluvio client is chatty) only warnings.
//! `--log-format json` writes one JSON object a line, for log collectors.

use std::io::IsTerminal;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Plain,
    /// One JSON object a line (timestamp, level, target, fields).
    Json,
}

pub fn init(format: LogFormat, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}
