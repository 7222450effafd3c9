//! One module a subcommand: its arguments and what it does.

pub mod agent;
pub mod answers;
pub mod bench;
pub mod bench_dataset;
pub mod bench_engine;
pub mod broker;
pub mod chaos;
pub mod dead_letters;
pub mod deploy;
pub mod eval;
pub mod models;
pub mod report;
pub mod run;
pub mod score;
pub mod serve;
pub mod sim;
pub mod smartmodules;
