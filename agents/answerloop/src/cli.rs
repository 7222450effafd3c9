//! The command line: one subcommand a file under [`crate::commands`].

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::commands;

#[derive(Debug, Parser)]
#[command(
    name = "answerloop",
    version,
    about = "Answers questions with an LLM, scores every answer in the \
    broker with WASM SmartModules, regenerates weak ones and stores the final answers."
)]
pub struct Cli {
    /// Threads of the local model: each llama.cpp engine's forward pass
    /// (one: a second thread of one engine spins waiting for the first; a
    /// second core serves better as a second engine, `--model-engines`), or
    /// each candle worker's.
    #[arg(
        long,
        global = true,
        env = "ANSWERLOOP_MODEL_THREADS",
        default_value_t = 1
    )]
    pub model_threads: usize,
    /// Engines of the local model (llama.cpp): each a thread of
    /// `--model-threads` with its own context, the slots shared out among
    /// them. Two engines of one thread use two cores without the spinning
    /// of one engine's two threads waiting for each other. Default: one a
    /// core, at most two (the whole sample 1.8 times faster on two cores
    /// than one engine; docs/benchmarks.md).
    #[arg(
        long,
        global = true,
        env = "ANSWERLOOP_MODEL_ENGINES",
        default_value_t = answerloop_models::batched::default_engines()
    )]
    pub model_engines: usize,
    /// Weights of the local model's llama.cpp engine: `packaged` (the
    /// package's Q4_1), `q4_0` (requantised by llama.cpp once: eight
    /// answers in flight about 1.75 times faster, answers scoring about
    /// 0.035 lower on the sample; docs/benchmarks.md) or `q8_0` (requantised
    /// once to 8-bit: no 4-bit-to-4-bit loss; in flight faster than the
    /// package's, slower than `q4_0`).
    #[arg(
        long,
        global = true,
        env = "ANSWERLOOP_MODEL_WEIGHTS",
        default_value = "packaged",
        value_parser = answerloop_models::requantise::EngineWeights::NAMES
    )]
    pub model_weights: String,
    /// Log lines on stderr as plain text or JSON; `RUST_LOG` picks the level.
    #[arg(
        long,
        value_enum,
        global = true,
        env = "ANSWERLOOP_LOG_FORMAT",
        default_value = "plain"
    )]
    pub log_format: answerloop_telemetry::logging::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Set the thread counts candle reads. Call before any thread starts:
    /// candle and rayon read them once, from the environment only.
    pub fn configure_model_threads(&self) {
        let threads = self.model_threads.max(1).to_string();
        std::env::set_var("RAYON_NUM_THREADS", &threads);
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
        // The batched llama.cpp engine reads it when it starts.
        std::env::set_var(answerloop_models::batched::MODEL_THREADS_ENV, &threads);
        std::env::set_var(
            answerloop_models::requantise::MODEL_WEIGHTS_ENV,
            &self.model_weights,
        );
        std::env::set_var(
            answerloop_models::batched::MODEL_ENGINES_ENV,
            self.model_engines.max(1).to_string(),
        );
    }
}

/// `--home` and `--config`, shared by every command that touches state.
#[derive(Debug, Clone, clap::Args)]
pub struct HomeArg {
    /// Directory holding all state (broker topics, answer store).
    /// Default: $XDG_DATA_HOME/answerloop or ~/.local/share/answerloop.
    #[arg(long, env = "ANSWERLOOP_HOME", value_name = "DIR", global = true)]
    pub home: Option<PathBuf>,
    /// Configuration file (TOML). Default: answerloop.toml in the home, if present.
    #[arg(long, env = "ANSWERLOOP_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline in one process until every question is final.
    Run(Box<commands::run::RunArgs>),
    /// Make a broker ready: topics, SmartModules registered and runnable.
    Deploy(commands::deploy::DeployArgs),
    /// Serve the embedded broker to agents in other processes.
    Broker(commands::broker::BrokerCommandArgs),
    /// Run one agent (traffic, llm or store) until SIGINT or SIGTERM.
    Agent(Box<commands::agent::AgentArgs>),
    /// Query and export the stored answers.
    Answers(commands::answers::AnswersArgs),
    /// The questions the pipeline gave up on: list them, or send them back.
    #[command(name = "dead-letters")]
    DeadLetters(commands::dead_letters::DeadLettersArgs),
    /// The run in a home as one self-contained HTML page with SVG plots.
    Report(commands::report::ReportArgs),
    /// The compiled SmartModules the binary carries.
    Smartmodules(commands::smartmodules::SmartmodulesArgs),
    /// Score an answer against a reference, as answer-score does in the broker.
    Score(commands::score::ScoreArgs),
    /// The local model cache: fetch, list, verify.
    Models(commands::models::ModelsArgs),
    /// Serve the local model as an OpenAI-compatible chat-completions API.
    Serve(commands::serve::ServeArgs),
    /// Evaluations: the semantic scorer against the original metric;
    /// regeneration strategies against each other.
    Eval(commands::eval::EvalArgs),
    /// Benchmarks with machine-readable output.
    Bench(commands::bench::BenchArgs),
    /// Crash test: agents as processes, SIGKILLed and restarted under LLM faults.
    Chaos(commands::chaos::ChaosArgs),
    /// TEST TOOL: a simulated OpenAI-compatible LLM server with fault injection.
    #[command(name = "llm-sim")]
    LlmSim(commands::sim::SimArgs),
}

impl Command {
    /// Services log what they do (their dependencies only warnings);
    /// one-shot commands print results instead.
    pub fn default_log_level(&self) -> &'static str {
        match self {
            Command::Agent(_)
            | Command::Broker(_)
            | Command::Serve(_)
            | Command::LlmSim(_)
            | Command::Chaos(_) => "warn,answerloop=info",
            _ => "warn",
        }
    }
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    match cli.command {
        Command::Run(args) => commands::run::execute(*args).await,
        Command::Deploy(args) => commands::deploy::execute(args).await,
        Command::Broker(args) => commands::broker::execute(args).await,
        Command::Agent(args) => commands::agent::execute(*args).await,
        Command::Answers(args) => commands::answers::execute(args),
        Command::DeadLetters(args) => commands::dead_letters::execute(args).await,
        Command::Report(args) => commands::report::execute(args).await,
        Command::Smartmodules(args) => commands::smartmodules::execute(args),
        Command::Score(args) => commands::score::execute(args),
        Command::Chaos(args) => commands::chaos::execute(args).await,
        Command::LlmSim(args) => commands::sim::execute(args).await,
        Command::Bench(args) => commands::bench::execute(args).await,
        Command::Models(args) => commands::models::execute(args),
        Command::Eval(args) => commands::eval::execute(args).await,
        Command::Serve(args) => commands::serve::execute(args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
