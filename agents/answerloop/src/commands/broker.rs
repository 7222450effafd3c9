//! `answerloop broker serve`: the embedded broker of a home, served on TCP
//! so the traffic, LLM and store agents can run as separate processes
//! (`--broker remote`). The broker's database is sled's, which one process
//! may open; this process is that one.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use answerloop_broker::select::{BrokerArgs, DEFAULT_BROKER_ADDR};
use answerloop_broker::server;
use answerloop_schema::topics;
use answerloop_telemetry::metrics::MetricsArg;
use anyhow::Context;

use crate::cli::HomeArg;
use crate::home::Home;
use crate::shutdown;

#[derive(Debug, clap::Args)]
pub struct BrokerCommandArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Serve the home's embedded broker until SIGINT or SIGTERM. Prints the
    /// address it listens on as the first line of stdout (useful with port 0).
    Serve(ServeArgs),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    #[command(flatten)]
    home: HomeArg,
    /// Address to listen on; keep it on loopback (the protocol has no
    /// authentication).
    #[arg(long, default_value = DEFAULT_BROKER_ADDR)]
    listen: SocketAddr,
    #[command(flatten)]
    metrics: MetricsArg,
}

pub async fn execute(args: BrokerCommandArgs) -> anyhow::Result<ExitCode> {
    let Action::Serve(args) = args.action;
    let home = Home::resolve(args.home.home.as_deref())?;
    home.prepare()?;
    let stop = shutdown::on_signal().context("installing the signal handlers")?;
    // The embedded broker, metered like every transport.
    let broker = BrokerArgs::default().connect(&home.broker()).await?;
    broker.deploy(&topics::ALL).await?;
    let listener = server::bind(args.listen).await?;
    let addr = listener.local_addr()?;
    if let Some(metrics) = args.metrics.start().await? {
        tracing::info!("metrics at http://{metrics}/metrics");
    }
    println!("{addr}");
    std::io::stdout().flush()?;
    tracing::info!(
        "serving the embedded broker of {} at {addr}",
        home.root().display()
    );
    server::serve(broker, listener, stop).await?;
    Ok(ExitCode::SUCCESS)
}
