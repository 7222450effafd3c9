//! What answerloop tells its operators: metrics and logs.
//!
//! It exists as its own crate so that every part (broker transports, LLM
//! policy, agents) counts into one registry without depending on the binary,
//! and so that counting never pulls in a transport.
//!
//! - [`metrics`]: one Prometheus registry a process, served at `/metrics`
//!   with `--metrics HOST:PORT`.
//! - [`logging`]: `tracing` to stderr, plain or JSON.
//!
//! It must never depend on another answerloop crate: everything else depends
//! on it.

pub mod logging;
pub mod metrics;

pub use metrics::{metrics, Metrics, MetricsArg};
