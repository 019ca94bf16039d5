//! Why the server refused a request: the code sent in an `Error`.

/// Why the server refused a request. Sent in `Message::Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// The frame could not be decoded (truncated field, bad UTF-8, trailing bytes).
    Malformed = 1,
    /// The frame's version is not [`VERSION`].
    UnsupportedVersion = 2,
    /// The frame's kind is not a request this server knows.
    UnknownMessage = 3,
    /// The frame announced more than [`crate::MAX_FRAME_LEN`] bytes.
    FrameTooLarge = 4,
    /// A bet of the batch is invalid; the index says which. Nothing of the batch was stored.
    InvalidBet = 5,
    /// The agency id is outside `1..=N`.
    UnknownAgency = 6,
    /// The agency already said it finished.
    AlreadyFinished = 7,
    /// A batch does not start where the agency's stored bets end, or a
    /// `Finished` counts other bets than the server holds. Nothing was
    /// stored; the agency should say `Hello` again and resume from there.
    OutOfSequence = 8,
    /// The bets could not be written to disk. Nothing of the batch was
    /// stored; it may be sent again later.
    StorageFailure = 9,
    /// A request before `Hello`, a second `Hello`, or a reply sent to the server.
    UnexpectedMessage = 10,
    /// The server is shutting down.
    ShuttingDown = 11,
    /// A newer connection of the same agency said `Hello`; this one is over.
    Superseded = 12,
    /// The request needs an agency's certificate, over TLS, and this
    /// connection has none: only `Echo` is served without one.
    Unauthenticated = 13,
    /// `Hello` named another agency than the one the certificate is for,
    /// an agency asked for what only the operator may, or the operator
    /// for what only an agency may.
    Forbidden = 14,
    /// The round closed before this batch or `Finished`: nothing more is
    /// stored. The agency asks for its winners.
    RoundClosed = 15,
    /// The round named in `Hello` has not opened yet (sent after waiting
    /// for it a while); the agency may say `Hello` again. Also the answer
    /// to the operator's `CloseRound` when no round is open.
    RoundNotOpen = 16,
    /// The operator's `OpenRound` while a round is still open or not drawn.
    RoundOpen = 17,
    /// The round named in `Hello` is neither open nor kept by this server.
    UnknownRound = 18,
    /// A code this version does not know (only ever decoded, never sent).
    Unknown = 255,
}

impl ErrorCode {
    pub(crate) fn from_u8(code: u8) -> ErrorCode {
        use ErrorCode::*;
        [
            Malformed,
            UnsupportedVersion,
            UnknownMessage,
            FrameTooLarge,
            InvalidBet,
            UnknownAgency,
            AlreadyFinished,
            OutOfSequence,
            StorageFailure,
            UnexpectedMessage,
            ShuttingDown,
            Superseded,
            Unauthenticated,
            Forbidden,
            RoundClosed,
            RoundNotOpen,
            RoundOpen,
            UnknownRound,
        ]
        .into_iter()
        .find(|c| *c as u8 == code)
        .unwrap_or(Unknown)
    }
}
