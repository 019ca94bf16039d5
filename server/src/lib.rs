//! The central server: it receives every agency's bets, stores them, runs
//! the draw once every agency has finished and tells each agency its own
//! winners.
//!
//! Where things live:
//! - [`config`]: `config.ini` and the environment.
//! - [`server`]: the round, the listener and shutdown.
//! - [`connection`]: a connection until it is authenticated (or not).
//! - [`gate`]: the bound on unauthenticated connections.
//! - [`penalty`]: slowing down addresses whose credentials keep failing.
//! - [`session`]: one connection's requests and replies.
//! - [`agencies`]: the state shared by every session (one mutex).
//! - [`writer`]: the one owner of `bets.csv` (group commit).
//! - [`draw`]: the barrier before the draw, and the draw itself.

pub mod agencies;
pub mod config;
pub mod connection;
pub mod draw;
pub mod gate;
pub mod penalty;
pub mod server;
pub mod session;
pub mod writer;

pub use agencies::QUEUE_BYTES;
pub use config::{Config, DEFAULT_MAX_UNAUTHENTICATED};
pub use gate::BEFORE_HELLO_BYTES;
pub use server::Server;
