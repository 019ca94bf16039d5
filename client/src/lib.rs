//! An agency (agencia de quiniela): it uploads its bets to the central
//! server in batches, says when it has finished, and asks for its winners,
//! riding out whatever faults come in between.
//!
//! - [`config`]: `config.yaml` and the environment.
//! - `agency_file`: the agency's bets file, read as a stream.
//! - `source`: the bets in order, validated and numbered, on a thread.
//! - `batch`: cutting bets into batches that fit a packet.
//! - `link`: one connection to the server, every wait bounded.
//! - [`fault`]: what goes wrong, sorted by what to do about it.
//! - `upload`: sending the batches of one read, pipelined.
//! - `progress`: how far the agency has got, and its `progreso` lines.
//! - `agency`: the whole session: resume, retry, finish, winners.

mod agency;
mod agency_file;
mod batch;
pub mod config;
pub mod fault;
mod link;
mod progress;
mod source;
mod upload;

pub use agency::{run, AgencyError, Ending, MIN_QUERY_INTERVAL};
pub use config::Config;
pub use link::{Link, WINNERS_WAIT};
pub use source::{BetSource, NoBet};
