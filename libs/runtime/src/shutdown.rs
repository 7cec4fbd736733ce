//! Graceful shutdown: SIGTERM or Ctrl-C cancels one token shared by every task of the process.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on SIGTERM or SIGINT.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing in-flight work, then stopping"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: finishing in-flight work, then stopping"),
        }
        t.cancel();
    });
    token
}
