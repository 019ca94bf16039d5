//! How both programs start: the configuration first (a problem with it is
//! one line on stderr and exit 1, before any log line), then the log, the
//! runtime and the shutdown signals, caught from before the first line so
//! that a SIGTERM at any moment after it ends in a clean exit.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;

use tokio::runtime::{Builder, Runtime};
use tracing::error;

use crate::log::{Action, Level, LogGuard};

/// A program ready to run.
pub struct Started<C> {
    pub config: C,
    /// Written out when dropped.
    pub log: LogGuard,
    pub runtime: Runtime,
    /// Completes, logging which, at the first SIGTERM or SIGINT.
    pub shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
}

/// Starts program `name` with the configuration `config` (or the reason
/// it cannot be used), logging at the level `level` picks, on the runtime
/// `runtime` builds.
pub fn start<C, E: Display>(
    name: &str,
    config: Result<C, E>,
    level: impl FnOnce(&C) -> Level,
    mut runtime: Builder,
) -> Result<Started<C>, ExitCode> {
    let config = config.map_err(|e| {
        eprintln!("{name}: {e}");
        ExitCode::FAILURE
    })?;
    let log = crate::log::init(level(&config));
    let fail = |action: &'static str, e: std::io::Error| {
        error!("{}", Action::fail(action).field("error", e));
        ExitCode::FAILURE
    };
    let runtime = runtime.enable_all().build().map_err(|e| fail("start", e))?;
    let shutdown = {
        let _inside = runtime.enter();
        crate::signal::shutdown_signal().map_err(|e| fail("signal_handler", e))?
    };
    Ok(Started { config, log, runtime, shutdown: Box::pin(shutdown) })
}
