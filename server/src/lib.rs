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
//! - `board`: where the rounds stand, for everyone who asks.
//! - `clock`: rounds that close and open on time.
//! - `status`: the round's status, as the operator sees it.
//! - `admin`: the operator's command (`server admin`).
//! - `http`: the status page, the metrics and the health check.
//! - `metrics`: what the server counts, for Prometheus.
//!
//! The public API is what the program, the tests and the benchmark need:
//! a [`Server`] started from a [`Config`], and the limits they measure
//! against.

pub mod admin;
mod agencies;
mod board;
mod clock;
pub mod config;
mod connection;
mod gate;
pub mod http;
mod metrics;
mod penalty;
mod server;
mod session;
pub mod status;
mod writer;

pub use agencies::QUEUE_BYTES;
pub use clock::Schedule;
pub use config::{Config, DEFAULT_HTTP_ADDRESS, DEFAULT_MAX_UNAUTHENTICATED, MAX_AGENCIES};
pub use gate::BEFORE_HELLO_BYTES;
pub use server::{raise_open_files, Server, StartError, SESSION_GRACE};
pub use session::{ANONYMOUS_LOG_LINES, LOG_LINES, PEER_LINES_PER_SECOND};
pub use writer::WriterFailed;
