//! Waiting for the user or a supervisor to ask the process to stop: SIGINT (Ctrl-C) or
//! SIGTERM.

use tokio::signal::unix::{SignalKind, signal};

/// Completes at the first SIGINT or SIGTERM received after the call.
///
/// If a handler cannot be installed, that signal keeps its default action (ending the
/// process), which is still a way to stop; so the failure is logged, not fatal.
pub async fn shutdown_signal() {
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM");
            None
        }
    };
    let terminated = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    };
    let interrupted = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = interrupted => tracing::info!("SIGINT received"),
        _ = terminated => tracing::info!("SIGTERM received"),
    }
}
