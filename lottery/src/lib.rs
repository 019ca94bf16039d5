//! The lottery's domain, apart from any transport: what a bet is and when
//! it is valid ([`bet`]), where bets are kept ([`storage`]), sample agency
//! files ([`sample`]) and the log lines both programs print ([`log`]).

pub mod bet;
pub mod duration;
pub mod log;
pub mod sample;
pub mod settings;
pub mod storage;

pub use bet::{Bet, InvalidBet, WINNING_NUMBER};
