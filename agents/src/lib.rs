//! answerloop's agents and their plumbing. The layout follows the data flow:
//!
//! - [`traffic`]: reads the question set, produces to `questions`.
//! - [`llm`]: the LLM agent and its providers; answers go to `answers`,
//!   scored on produce by the `answer-score` SmartModule.
//! - [`store`]: the store agent; takes `answers` through `quality-gate`
//!   and `dead-letters` into the answer store.
//! - [`broker`]: the seam between agents and a transport; the embedded
//!   transport (sled topics, SmartModules through fluvio-smartengine) and
//!   the Fluvio one.
//! - [`intake`]: the consume loop the agents share (bounded concurrency,
//!   commit behind finished work).
//! - [`pipeline`]: `answerloop run`, all agents in one process.
//! - [`metrics`]: Prometheus metrics, served with `--metrics`.
//! - [`report`]: the HTML report of a run.
//! - [`shutdown`]: SIGINT/SIGTERM to a graceful stop, for agent daemons.
//! - [`sim`]: llm-sim, a test tool that stands in for an LLM API.
//! - [`chaos`]: the crash test, agents as processes killed and restarted.
//! - [`cli`] and [`commands`]: the command line.

pub mod broker;
pub mod chaos;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod home;
pub mod intake;
pub mod llm;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod report;
pub mod secret;
pub mod shutdown;
pub mod sim;
pub mod store;
pub mod traffic;
