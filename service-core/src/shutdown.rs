//! One cancellation token per process, cancelled by SIGTERM (what Cloud Run sends, with about
//! ten seconds of grace) or Ctrl-C. Servers, MCP sessions and workers hold child tokens.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or Ctrl-C.
///
/// The signal handlers are installed before this returns, so a signal that arrives while the
/// app is still starting is not lost.
pub fn cancel_on_signal() -> std::io::Result<CancellationToken> {
    let token = CancellationToken::new();
    #[cfg(unix)]
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let cancel = token.clone();
    tokio::spawn(async move {
        #[cfg(unix)]
        let terminate = async {
            sigterm.recv().await;
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        let interrupt = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                // Without a Ctrl-C handler SIGTERM still works: keep waiting for it.
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = terminate => tracing::info!(signal = "SIGTERM", "shutting down"),
            () = interrupt => tracing::info!(signal = "SIGINT", "shutting down"),
        }
        cancel.cancel();
    });
    Ok(token)
}

/// Runs `work` (serving, then draining what was in flight) to its end, but no longer than
/// `grace` after `shutdown` is cancelled: past that it logs that `what` did not finish and
/// returns `Ok(())`, so the process exits before the platform kills it.
pub async fn within_grace(
    shutdown: &CancellationToken,
    grace: Duration,
    what: &str,
    work: impl Future<Output = std::io::Result<()>>,
) -> std::io::Result<()> {
    tokio::select! {
        result = work => result,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(grace = ?grace, "{what} did not finish in time; stopping anyway");
            Ok(())
        }
    }
}
