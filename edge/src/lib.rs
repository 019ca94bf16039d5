//! What both programs (the server and the agency) share at their edges,
//! apart from the domain: the log lines ([`log`]), reading settings
//! ([`settings`], [`duration`]), the shutdown signals ([`signal`]) and TLS
//! credentials from files ([`credentials`]).

pub mod credentials;
pub mod duration;
pub mod log;
pub mod settings;
pub mod signal;
