//! The `answerloop` binary's library: the agents, the runs that put them
//! together, and the command line. The parts it uses are crates of their
//! own (records and scoring, the answer store, the dataset reader, the
//! models, the broker and its transports, the LLM providers and policy,
//! llm-sim, telemetry); this crate is what joins them along the data flow:
//!
//! - [`traffic`]: reads the question set, produces to `questions`.
//! - [`llm_agent`]: consumes questions, calls the model, produces to
//!   `answers`; reads rejected answers back through `answer-score` and
//!   `regenerate`.
//! - [`store`]: the store agent; takes `answers` through `answer-score`
//!   and `quality-gate`, and `dead-letters`, into the answer store.
//! - [`exact`]: `--scorer exact`, the transformer's embeddings computed
//!   by traffic and the LLM agent and carried in the records.
//! - [`chains`]: those SmartModule chains, and why scoring heads them.
//! - [`intake`]: the consume loop the agents share (bounded concurrency,
//!   commit behind finished work).
//! - [`providers`]: the provider a command asked for, made ready (the local
//!   model fetched, llm-sim started).
//! - [`tally`]: what a run came to, counted from the store: one computation
//!   for the run summary, the report and the crash test.
//! - [`pipeline`]: `answerloop run`, all agents in one process.
//! - [`launcher`]: the agents as separate processes of this binary, for the
//!   benchmarks and the crash test.
//! - [`chaos`]: the crash test, agents killed and restarted.
//! - [`local_cluster`]: a Fluvio cluster's processes on this machine, for
//!   their memory and for killing an SPU.
//! - [`report`]: the HTML report of a run.
//! - [`home`], [`config`], [`shutdown`]: where state lives, settings from
//!   flags and `answerloop.toml`, SIGINT/SIGTERM to a graceful stop.
//! - [`cli`] and [`commands`]: the command line, one module a subcommand.
//!
//! Layering runs one way: `commands` use everything else; nothing else uses
//! `commands` or `cli`.

pub mod chains;
pub mod chaos;
pub mod cli;
pub mod commands;
pub mod config;
pub mod exact;
pub mod home;
pub mod intake;
pub mod launcher;
pub mod llm_agent;
pub mod local_cluster;
pub mod pipeline;
pub mod providers;
pub mod report;
pub mod shutdown;
pub mod store;
pub mod tally;
pub mod traffic;
