//! The central server: it receives every agency's bets, stores them, runs
//! the draw once every agency has finished and tells each agency its own
//! winners.
//!
//! Where things live:
//! - `config`: `config.ini` and the environment.
//! - `server`: the round, the listener and shutdown.
//! - `connection`: a connection until it is authenticated (or not).
//! - `gate`: the bound on unauthenticated connections.
//! - `penalty`: slowing down addresses whose credentials keep failing.
//! - `session`: one connection's requests and replies.
//! - `agencies`: the state shared by every session (one mutex).
//! - `writer`: the one owner of the round's files (group commit).
//! - `draw`: the barrier before the draw, and the draw itself.
//!
//! The public API is what the program, the tests and the benchmark need:
//! a [`Server`] started from a [`Config`], and the limits they measure
//! against.

mod agencies;
mod config;
mod connection;
mod draw;
mod gate;
mod penalty;
mod server;
mod session;
mod writer;

pub use agencies::QUEUE_BYTES;
pub use config::{Config, DEFAULT_MAX_UNAUTHENTICATED, MAX_AGENCIES};
pub use gate::BEFORE_HELLO_BYTES;
pub use server::{Server, StartError, SESSION_GRACE};
pub use session::{ANONYMOUS_LOG_LINES, LOG_LINES, PEER_LINES_PER_SECOND};
pub use writer::WriterFailed;
