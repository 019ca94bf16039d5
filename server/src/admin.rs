//! `server admin status|close|open`: the operator's command. It talks to
//! the running server over the agencies' port and the same TLS, with the
//! operator's certificate (`CN=operator`, made by
//! `scripts/credentials.sh`), asks one thing, prints the answer, and exits
//! 0, or ≠ 0 with one line that says why.
//!
//! Settings, from the environment over `config.ini` (`[DEFAULT]`):
//! `SERVER_PORT` (for the default address, `127.0.0.1:SERVER_PORT`),
//! `SERVER_TLS_CA`, `SERVER_ADMIN_CERT` and `SERVER_ADMIN_KEY` (by default
//! `.credentials/ca.pem`, `operator.pem`, `operator.key`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use edge::credentials::{self, CredentialFile, Credentials};
use edge::settings::{ConfigError, Problem, SettingError, Sources};
use protocol::tls::{ServerName, TlsConnector};
use protocol::{ErrorCode, Message, MessageReader, MessageWriter, MAX_FRAME_LEN};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::config::{file_settings, CREDENTIALS};
use crate::status::Status;

/// How long the command waits for the server, each step.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What the operator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum Command {
    /// Where the open round stands: a table, or one JSON object.
    Status {
        /// One JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Closes the open round now: the draw runs over every bet stored.
    Close,
    /// Opens the next round, once the current one is drawn.
    Open,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot reach the server at {address}: {source}")]
    Connect { address: String, source: std::io::Error },
    #[error("the server at {address} did not answer within {}s", ADMIN_TIMEOUT.as_secs())]
    Timeout { address: String },
    #[error("the server at {address}: {source}")]
    Link { address: String, source: std::io::Error },
    #[error("the server refused: {reason}")]
    Refused { code: ErrorCode, reason: String },
    #[error("the server answered {0}, not a status")]
    Unexpected(&'static str),
    #[error("the server's status is not what this command reads: {0}")]
    Status(serde_json::Error),
}

/// The operator's link settings.
pub struct Admin {
    address: String,
    server_name: ServerName<'static>,
    tls: Arc<rustls::ClientConfig>,
}

impl Admin {
    /// Settings from `env` over the file at `config` (see the module
    /// documentation); `address` (`HOST:PORT`) over the default one.
    pub fn load(
        config: &Path,
        env: &dyn Fn(&str) -> Option<String>,
        address: Option<String>,
    ) -> Result<Admin, AdminError> {
        let file = file_settings(config)?;
        let sources = Sources { env, file: &file };
        let address = match address {
            Some(address) => address,
            None => {
                let (port, _): (u16, String) =
                    sources.required("SERVER_PORT", "SERVER_PORT").map_err(ConfigError::from)?;
                format!("127.0.0.1:{port}")
            }
        };
        let server_name = protocol::tls::server_name(&address)
            .map_err(|e| SettingError::new("--address", "--address", Problem::Tls(Box::new(e))))
            .map_err(ConfigError::from)?;
        let path = |key: &str, file: &str| sources.optional(key, key, Path::new(CREDENTIALS).join(file));
        let credentials = Credentials {
            ca: path("SERVER_TLS_CA", "ca.pem").map_err(ConfigError::from)?,
            cert: path("SERVER_ADMIN_CERT", "operator.pem").map_err(ConfigError::from)?,
            key: path("SERVER_ADMIN_KEY", "operator.key").map_err(ConfigError::from)?,
        };
        let tls = credentials::client_config(&credentials).map_err(|e| {
            let key = match e.file() {
                Some(CredentialFile::Ca) => "SERVER_TLS_CA",
                Some(CredentialFile::Key) => "SERVER_ADMIN_KEY",
                _ => "SERVER_ADMIN_CERT",
            };
            ConfigError::from(SettingError::new(key, key, Problem::Credentials(Box::new(e))))
        })?;
        Ok(Admin { address, server_name, tls })
    }

    /// Runs `command`; what to print.
    pub async fn run(&self, command: Command) -> Result<String, AdminError> {
        let request = match command {
            Command::Status { .. } => Message::StatusQuery,
            Command::Close => Message::CloseRound,
            Command::Open => Message::OpenRound,
        };
        let status = self.ask(&request).await?;
        Ok(match command {
            Command::Status { json: true } => serde_json::to_string(&status).expect("a status serializes"),
            Command::Status { json: false } => status.table().trim_end().to_owned(),
            Command::Close => {
                let reason = status.reason.as_deref().unwrap_or("operator");
                let winners = status.winners.map(|w| format!(", {w} winners")).unwrap_or_default();
                format!("round {} closed ({reason}): {} bets{winners}", status.round, status.bets)
            }
            Command::Open => format!("round {} opened", status.round),
        })
    }

    /// Sends `request` and reads the status that answers it.
    async fn ask(&self, request: &Message) -> Result<Status, AdminError> {
        let address = &self.address;
        let within = |e| AdminError::Link { address: address.clone(), source: e };
        let stream = match timeout(ADMIN_TIMEOUT, TcpStream::connect(address)).await {
            Err(_) => return Err(AdminError::Timeout { address: address.clone() }),
            Ok(Err(source)) => return Err(AdminError::Connect { address: address.clone(), source }),
            Ok(Ok(stream)) => stream,
        };
        let connector = TlsConnector::from(self.tls.clone());
        let tls = match timeout(ADMIN_TIMEOUT, connector.connect(self.server_name.clone(), stream)).await {
            Err(_) => return Err(AdminError::Timeout { address: address.clone() }),
            Ok(result) => result.map_err(within)?,
        };
        let (read_half, write_half) = tokio::io::split(tls);
        let mut writer = MessageWriter::new(write_half);
        let mut reader = MessageReader::new(read_half, MAX_FRAME_LEN);
        writer.send(request).await.map_err(within)?;
        let mut text = String::new();
        loop {
            let reply = match timeout(ADMIN_TIMEOUT, reader.read()).await {
                Err(_) => return Err(AdminError::Timeout { address: address.clone() }),
                Ok(Err(e)) => return Err(within(std::io::Error::other(e))),
                Ok(Ok(None)) => return Err(within(std::io::ErrorKind::UnexpectedEof.into())),
                Ok(Ok(Some(reply))) => reply,
            };
            match reply {
                Message::Status { last, text: part } => {
                    text.push_str(&part);
                    if last {
                        break;
                    }
                }
                Message::Error { code, reason, .. } => return Err(AdminError::Refused { code, reason }),
                other => return Err(AdminError::Unexpected(other.name())),
            }
        }
        let _ = timeout(ADMIN_TIMEOUT, writer.shutdown()).await;
        serde_json::from_str(&text).map_err(AdminError::Status)
    }
}
