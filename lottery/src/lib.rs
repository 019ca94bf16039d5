//! The lottery's domain, apart from any transport: what a bet is and when
//! it is valid ([`bet`]), where bets are kept ([`storage`]), a round and
//! its recovery ([`round`]), how far an agency's upload has got
//! ([`progress`]), sample agency files ([`sample`]), and what both programs
//! share at their edges: the log lines ([`log`]), reading settings
//! ([`settings`], [`duration`]) and the shutdown signals ([`signal`]).

pub mod bet;
pub mod duration;
pub mod log;
pub mod progress;
pub mod round;
pub mod sample;
pub mod settings;
pub mod signal;
pub mod storage;

pub use bet::{Bet, BetRef, InvalidBet, WINNING_NUMBER};
pub use progress::{Progress, Share};
