//! Running the project's real binaries the way Docker would, reading their
//! logs as the course's suite does, and breaking things on purpose. The one
//! harness of the tests, the benchmark and the chaos campaign:
//!
//! - [`ServerBuilder`] / [`RunningServer`]: the real server, started with
//!   the test credentials, once it listens; restarted on its storage.
//! - [`AgencyBuilder`]: the real client, an agency, with its data file,
//!   credentials and settings.
//! - [`Process`]: a binary in its own process, its stdout line by line.
//! - [`binaries`]: where the real `server` and `client` are (built if needed).
//! - [`credentials`]: TLS credentials made by the project's own command.
//! - [`check`]: a round's bets file against the agencies' files.
//! - [`proxy`]: a TCP proxy that cuts or freezes connections.
//! - [`chaos`]: whole rounds with faults injected at random moments.
//! - [`power`]: whole rounds with power cuts, the storage on [`lazyfs`].
//! - [`winners`]: an agency's winners, asked of the server after a round.
//!
//! Waits are bounded generously ([`START_WITHIN`], [`EXIT_WITHIN`]) and
//! tests assert outcomes, never how long something took: a loaded
//! two-core machine must not fail a test.

pub mod agency;
pub mod binaries;
pub mod chaos;
pub mod check;
pub mod credentials;
pub mod power;
pub mod process;
mod program;
pub mod proxy;
pub mod server;
pub mod tmpfs;
pub mod winners;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use agency::AgencyBuilder;
pub use process::{send_signal, Process, Signal};
pub use server::{wait_listening, RunningServer, ServerBuilder, StartError};

/// How long a server may take to listen before a test gives up on it.
pub const START_WITHIN: Duration = Duration::from_secs(30);

/// How long a process may take to exit after a signal before a test gives
/// up on it: far above the server's own 2 s budget, which tests check
/// through its lines (`join_sessions | aborted: no`), not the clock.
pub const EXIT_WITHIN: Duration = Duration::from_secs(20);

/// A loopback port that was free a moment ago.
///
/// Taken below the kernel's range of ephemeral ports (read from
/// `ip_local_port_range`), so that no outgoing connection of a test (a
/// flood opens thousands) can take it before the server binds it; each
/// test process walks its own part of that range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral.saturating_sub(LOWEST).max(1);
    let start = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).expect("ports below the ephemeral range fit in u16");
        if TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("testkit lives in the repository").to_path_buf()
}
