//! Graceful stop for long-lived agents: SIGINT or SIGTERM turns a watch to
//! `true`; the agent stops taking work, finishes what is in flight, commits
//! and returns. A second signal exits at once.

use tokio::sync::watch;

/// A receiver that turns `true` on the first SIGINT or SIGTERM.
pub fn on_signal() -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("stopping: finishing the work in flight (signal again to exit at once)");
            let _ = tx.send(true);
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::warn!("second signal: exiting now; uncommitted work is read again on restart");
            std::process::exit(130);
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        let _ = tx.send(true);
    });
    Ok(rx)
}
