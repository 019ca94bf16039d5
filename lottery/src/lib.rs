//! The lottery's domain, apart from any transport, runtime or program:
//! what a bet is and when it is valid ([`bet`]), where bets are kept
//! ([`storage`]), a round and its recovery ([`round`]), and how far an
//! agency's upload has got ([`progress`]).
//!
//! Nothing here knows about sockets, threads, configuration or log lines:
//! the programs at the edges (the server, the agency) call into it.

pub mod bet;
pub mod progress;
pub mod round;
pub mod storage;

pub use bet::{Bet, BetRef, InvalidBet, WINNING_NUMBER};
pub use progress::{Progress, Share};
