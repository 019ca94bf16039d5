//! The wire protocol spoken between an agency (`client`) and the central
//! server. Framing, the messages, the limits and the error codes are
//! specified in `docs/PROTOCOL.md`.
//!
//! The crate is split the way the data flows: [`frame`] cuts a byte stream
//! into frames (no I/O), [`message`] gives each frame its meaning,
//! [`io`] moves whole messages over an async byte stream, and [`tls`]
//! secures and authenticates the link.

mod bets;
mod error_code;
pub mod frame;
pub mod io;
pub mod message;
pub mod tls;

pub use frame::{Frame, FrameError, MAX_FRAME_LEN, VERSION};
pub use io::{MessageReader, MessageWriter, ReadError};
pub use message::{
    bet_wire_len, BetBatchBuilder, BetFields, BetRecord, Bets, DecodeError, ErrorCode, Message, RoundStage,
    BATCH_HEADER_LEN, HELLO_WAIT, MAX_WINNERS_WAIT, STATUS_HEADER_LEN,
};
