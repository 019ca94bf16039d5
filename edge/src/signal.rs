//! The shutdown signals both programs obey.

use std::future::Future;
use std::io;

use tokio::signal::unix::{signal, SignalKind};
use tracing::info;

use crate::log::Action;

/// Installs SIGTERM and SIGINT handlers now (so that a signal arriving
/// before the future is first polled is not lost) and returns a future that
/// completes, logging which one, at the first of them.
///
/// Needs a Tokio runtime with signals enabled.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!("{}", Action::success("signal").field("signal", name));
    })
}
