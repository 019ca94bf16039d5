//! What both programs (the server and the agency) share at their edges,
//! apart from the domain: the log lines ([`log`]), reading settings
//! ([`settings`], [`duration`]), the shutdown signals ([`signal`]), TLS
//! credentials from files ([`credentials`]) and how a program starts
//! ([`program`]).

pub mod credentials;
pub mod duration;
pub mod log;
pub mod program;
pub mod settings;
pub mod signal;
