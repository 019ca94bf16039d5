//! An agency (agencia de quiniela): it uploads its bets to the central
//! server in batches, says when it has finished, and asks for its winners.
//!
//! - [`config`]: `config.yaml` and the environment.
//! - [`agency_file`]: the agency's bets file, read as a stream.
//! - [`batch`]: cutting bets into batches that fit a packet.
//! - [`agency`]: the session with the server.

pub mod agency;
pub mod agency_file;
pub mod batch;
pub mod config;

pub use agency::{run, BetSource, Ending};
pub use config::Config;
