//! The server's configuration: `config.ini` under `[DEFAULT]`, overridden
//! by environment variables of the same names.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge::credentials::{self, CredentialFile, Credentials};
use edge::duration::GoDuration;
use edge::log::Level;
use edge::settings::{ConfigError, Problem, SettingError, Sources};

use crate::clock::Schedule;

/// Most agencies one server expects (it keeps a few bytes per agency).
pub const MAX_AGENCIES: u32 = 1_000_000;

/// Everything the server needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    /// Applied to the listening socket with `listen(2)`.
    pub listen_backlog: u32,
    pub logging_level: Level,
    /// The level as configured, for the `config` log line.
    pub logging_level_name: String,
    /// How many agencies must finish before the draw.
    pub agencies: u32,
    pub storage_path: PathBuf,
    /// An agency's connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// TLS: the server's certificate, and how agencies are verified.
    pub tls: Arc<rustls::ServerConfig>,
    /// Whether `tls` checks a revocation list (`SERVER_TLS_CRL` not empty).
    pub revocation: bool,
    /// A connection must have authenticated (TLS with an agency's
    /// certificate) within this long, or it is closed.
    pub auth_timeout: Duration,
    /// A reply that cannot be written within this long (the peer stopped
    /// reading) closes the connection.
    pub write_timeout: Duration,
    /// Connections not authenticated yet, at most; a new one past it
    /// pushes another out (see the gate module).
    pub max_unauthenticated: usize,
    /// When rounds close and open by themselves (`SERVER_ROUND_CLOSE`,
    /// `SERVER_ROUND_EVERY`).
    pub schedule: Schedule,
    /// Where the status page, the metrics and the health check listen
    /// (`SERVER_HTTP_ADDRESS`); `None` turns them off.
    pub http_address: Option<SocketAddr>,
}

/// `SERVER_HTTP_ADDRESS` when it is not set: this host only.
pub const DEFAULT_HTTP_ADDRESS: &str = "127.0.0.1:8074";

/// `SERVER_MAX_UNAUTHENTICATED`, when it is not set, is this many places
/// more than the agencies: every agency that starts at the same moment as
/// the others gets a place, and newcomers this many more.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 128;

/// The most `SERVER_MAX_UNAUTHENTICATED` can be: the gate scans its pool
/// on every connection, and each place costs a connection's buffers.
pub const MAX_UNAUTHENTICATED: usize = 65_536;

/// Where the credentials are unless the environment says otherwise: the
/// folder `scripts/credentials.sh` fills.
pub const CREDENTIALS: &str = ".credentials";

impl Config {
    /// Reads `path` (a missing file is fine when the environment provides
    /// every required key) and the environment through `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file = file_settings(path)?;
        let sources = Sources { env, file: &file };
        let (port, _) = sources.required("SERVER_PORT", "SERVER_PORT")?;
        let (listen_backlog, _) = sources.required("SERVER_LISTEN_BACKLOG", "SERVER_LISTEN_BACKLOG")?;
        let (logging_level, logging_level_name) = sources.required("LOGGING_LEVEL", "LOGGING_LEVEL")?;
        let agencies = sources.optional("SERVER_AGENCIES", "SERVER_AGENCIES", 5)?;
        if agencies > MAX_AGENCIES {
            let problem = Problem::Above { max: MAX_AGENCIES.into() };
            return Err(SettingError::new("SERVER_AGENCIES", "SERVER_AGENCIES", problem).into());
        }
        let storage_path =
            sources.optional("SERVER_STORAGE_PATH", "SERVER_STORAGE_PATH", PathBuf::from("./bets.csv"))?;
        let herd = (agencies as usize).saturating_add(DEFAULT_MAX_UNAUTHENTICATED);
        let max_unauthenticated = sources.optional(
            "SERVER_MAX_UNAUTHENTICATED",
            "SERVER_MAX_UNAUTHENTICATED",
            herd.clamp(DEFAULT_MAX_UNAUTHENTICATED, MAX_UNAUTHENTICATED),
        )?;
        if !(1..=MAX_UNAUTHENTICATED).contains(&max_unauthenticated) {
            let problem = Problem::Outside { min: 1, max: MAX_UNAUTHENTICATED as u64 };
            return Err(SettingError::new(
                "SERVER_MAX_UNAUTHENTICATED",
                "SERVER_MAX_UNAUTHENTICATED",
                problem,
            )
            .into());
        }
        let (tls, revocation) = tls(&sources)?;
        let schedule = schedule(&sources)?;
        let http_address = http_address(&sources)?;
        Ok(Config {
            port,
            listen_backlog,
            logging_level,
            logging_level_name,
            agencies,
            storage_path,
            idle_timeout: duration(&sources, "SERVER_IDLE_TIMEOUT", Duration::from_secs(60))?,
            tls,
            revocation,
            auth_timeout: duration(&sources, "SERVER_AUTH_TIMEOUT", Duration::from_secs(5))?,
            write_timeout: duration(&sources, "SERVER_WRITE_TIMEOUT", Duration::from_secs(10))?,
            max_unauthenticated,
            schedule,
            http_address,
        })
    }
}

/// `SERVER_HTTP_ADDRESS`: `HOST:PORT` (names are resolved), or empty for
/// no HTTP listener.
pub fn http_address(sources: &Sources<'_>) -> Result<Option<SocketAddr>, SettingError> {
    let key = "SERVER_HTTP_ADDRESS";
    let raw = sources.raw(key, key).unwrap_or_else(|| DEFAULT_HTTP_ADDRESS.to_owned());
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let invalid = |source: Box<dyn std::error::Error + Send + Sync>| {
        SettingError::new(key, key, Problem::Invalid { value: raw.to_owned(), source })
    };
    let mut addresses = raw.to_socket_addrs().map_err(|e| invalid(Box::new(e)))?;
    addresses.next().map(Some).ok_or_else(|| invalid("names no address".into()))
}

/// The settings of the file at `path` (none if it is missing), under
/// `[DEFAULT]`, by key in any case.
pub fn file_settings(path: &Path) -> Result<impl Fn(&str) -> Option<String>, ConfigError> {
    let ini = match ini::Ini::load_from_file(path) {
        Ok(ini) => Some(ini),
        Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(ConfigError::File { path: path.into(), source: Box::new(e) }),
    };
    Ok(move |key: &str| -> Option<String> {
        let section = ini.as_ref()?.section(Some("DEFAULT"))?;
        section.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.to_owned())
    })
}

/// `SERVER_ROUND_CLOSE` and `SERVER_ROUND_EVERY`: both optional, above
/// zero, and a round closes no later than the next one opens.
fn schedule(sources: &Sources<'_>) -> Result<Schedule, SettingError> {
    let optional = |key: &str| -> Result<Option<Duration>, SettingError> {
        match sources.raw(key, key).filter(|v| !v.trim().is_empty()) {
            None => Ok(None),
            Some(_) => duration(sources, key, Duration::ZERO).map(Some),
        }
    };
    let schedule =
        Schedule { close_after: optional("SERVER_ROUND_CLOSE")?, every: optional("SERVER_ROUND_EVERY")? };
    if let (Some(close), Some(every)) = (schedule.close_after, schedule.every) {
        if close > every {
            let problem = Problem::LongerThan {
                value: GoDuration(close),
                other: "SERVER_ROUND_EVERY",
                limit: GoDuration(every),
                why: "a round would close after the next opened",
            };
            return Err(SettingError::new("SERVER_ROUND_CLOSE", "SERVER_ROUND_CLOSE", problem));
        }
    }
    Ok(schedule)
}

/// A duration setting that must be above zero.
fn duration(sources: &Sources<'_>, key: &str, default: Duration) -> Result<Duration, SettingError> {
    let GoDuration(value) = sources.optional(key, key, GoDuration(default))?;
    if value.is_zero() {
        return Err(SettingError::new(key, key, Problem::Zero));
    }
    Ok(value)
}

/// The TLS configuration from the credentials' settings, and whether it
/// checks a revocation list.
fn tls(sources: &Sources<'_>) -> Result<(Arc<rustls::ServerConfig>, bool), SettingError> {
    let path = |key: &str, file: &str| sources.optional(key, key, Path::new(CREDENTIALS).join(file));
    let credentials = Credentials {
        ca: path("SERVER_TLS_CA", "ca.pem")?,
        cert: path("SERVER_TLS_CERT", "server.pem")?,
        key: path("SERVER_TLS_KEY", "server.key")?,
    };
    // An empty SERVER_TLS_CRL means: no revocation list.
    let crl =
        sources.raw("SERVER_TLS_CRL", "SERVER_TLS_CRL").unwrap_or_else(|| format!("{CREDENTIALS}/crl.pem"));
    let crl = (!crl.trim().is_empty()).then(|| PathBuf::from(crl.trim()));
    let tls = credentials::server_config(&credentials, crl.as_deref()).map_err(|e| {
        let key = match e.file() {
            Some(CredentialFile::Ca) => "SERVER_TLS_CA",
            Some(CredentialFile::Key) => "SERVER_TLS_KEY",
            Some(CredentialFile::Crl) => "SERVER_TLS_CRL",
            Some(CredentialFile::Cert) | None => "SERVER_TLS_CERT",
        };
        SettingError::new(key, key, Problem::Credentials(Box::new(e)))
    })?;
    Ok((tls, crl.is_some()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const COURSE_FILE: &str =
        "[DEFAULT]\nSERVER_PORT = 12345\nSERVER_IP = server\nSERVER_LISTEN_BACKLOG = 5\nLOGGING_LEVEL = INFO";

    /// Loads with `env` over the test credentials' environment.
    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ini");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let credentials = testkit::credentials::server_env(&testkit::credentials::shared(1));
        let mut all: Vec<(&str, &str)> = credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.retain(|(k, _)| !env.iter().any(|(key, _)| key == k));
        all.extend_from_slice(env);
        Config::load(&path, &edge::settings::env_of(&all))
    }

    #[test]
    fn reads_the_course_file_without_a_final_newline() {
        let config = load(Some(COURSE_FILE), &[]).unwrap();
        assert_eq!((config.port, config.listen_backlog), (12345, 5));
        assert_eq!(config.logging_level, Level::Info);
        assert_eq!(config.agencies, 5);
        assert_eq!(config.storage_path, PathBuf::from("./bets.csv"));
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = load(
            Some(COURSE_FILE),
            &[("SERVER_PORT", "7000"), ("LOGGING_LEVEL", "debug"), ("SERVER_AGENCIES", "3")],
        )
        .unwrap();
        assert_eq!(config.port, 7000);
        assert_eq!(config.logging_level, Level::Debug);
        assert_eq!(config.logging_level_name, "debug");
        assert_eq!(config.agencies, 3);
    }

    #[test]
    fn a_missing_file_is_fine_when_the_environment_has_every_key() {
        let env = [("SERVER_PORT", "1"), ("SERVER_LISTEN_BACKLOG", "2"), ("LOGGING_LEVEL", "INFO")];
        assert!(load(None, &env).is_ok());
        let err = load(None, &env[..2]).unwrap_err().to_string();
        assert!(err.contains("LOGGING_LEVEL") && err.contains("missing"), "{err}");
    }

    #[test]
    fn invalid_values_name_their_key() {
        let err = load(Some(COURSE_FILE), &[("SERVER_LISTEN_BACKLOG", "-1")]).unwrap_err();
        assert!(err.to_string().contains("SERVER_LISTEN_BACKLOG"), "{err}");
        let err = load(Some(COURSE_FILE), &[("LOGGING_LEVEL", "LOUD")]).unwrap_err();
        assert!(err.to_string().contains("LOGGING_LEVEL"), "{err}");
        let err = load(Some(COURSE_FILE), &[("SERVER_AGENCIES", "4000000000")]).unwrap_err();
        assert!(err.to_string().contains("SERVER_AGENCIES"), "{err}");
        for pool in ["0", "65537", "18446744073709551615"] {
            let err = load(Some(COURSE_FILE), &[("SERVER_MAX_UNAUTHENTICATED", pool)]).unwrap_err();
            assert!(err.to_string().contains("SERVER_MAX_UNAUTHENTICATED"), "{err}");
        }
        let config = load(Some(COURSE_FILE), &[("SERVER_MAX_UNAUTHENTICATED", "65536")]).unwrap();
        assert_eq!(config.max_unauthenticated, MAX_UNAUTHENTICATED);
    }

    #[test]
    fn credentials_that_cannot_be_read_name_their_setting() {
        for key in ["SERVER_TLS_CA", "SERVER_TLS_CERT", "SERVER_TLS_KEY", "SERVER_TLS_CRL"] {
            let err = load(Some(COURSE_FILE), &[(key, "/no/such/file.pem")]).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("/no/such/file.pem"), "{err}");
        }
        let config = load(Some(COURSE_FILE), &[("SERVER_TLS_CRL", "")]);
        assert!(config.is_ok(), "an empty SERVER_TLS_CRL means no revocation list");
    }

    #[test]
    fn rounds_close_and_follow_each_other_only_when_told() {
        let config = load(Some(COURSE_FILE), &[]).unwrap();
        assert_eq!(config.schedule, Schedule::default(), "the course's round: no deadline, no next round");
        let config =
            load(Some(COURSE_FILE), &[("SERVER_ROUND_CLOSE", "90s"), ("SERVER_ROUND_EVERY", "24h")]).unwrap();
        let hour = Duration::from_secs(3600);
        assert_eq!(
            config.schedule,
            Schedule { close_after: Some(Duration::from_secs(90)), every: Some(24 * hour) }
        );
        for (key, value) in
            [("SERVER_ROUND_CLOSE", "0s"), ("SERVER_ROUND_EVERY", "soon"), ("SERVER_ROUND_EVERY", "1m")]
        {
            let env = [(key, value), ("SERVER_ROUND_CLOSE", "2m")];
            let err = load(Some(COURSE_FILE), &env).unwrap_err().to_string();
            assert!(err.contains(key), "{key}={value}: {err}");
        }
    }

    #[test]
    fn the_pool_of_newcomers_grows_with_the_agencies() {
        let config = load(Some(COURSE_FILE), &[]).unwrap();
        assert_eq!(config.max_unauthenticated, DEFAULT_MAX_UNAUTHENTICATED + 5);
        let config = load(Some(COURSE_FILE), &[("SERVER_AGENCIES", "1000")]).unwrap();
        assert_eq!(config.max_unauthenticated, 1000 + DEFAULT_MAX_UNAUTHENTICATED);
        let config =
            load(Some(COURSE_FILE), &[("SERVER_AGENCIES", "1000"), ("SERVER_MAX_UNAUTHENTICATED", "64")])
                .unwrap();
        assert_eq!(config.max_unauthenticated, 64);
    }

    #[test]
    fn the_pages_listen_on_this_host_unless_told() {
        let config = load(Some(COURSE_FILE), &[]).unwrap();
        assert_eq!(config.http_address, Some(SocketAddr::from(([127, 0, 0, 1], 8074))));
        let config = load(Some(COURSE_FILE), &[("SERVER_HTTP_ADDRESS", "0.0.0.0:9000")]).unwrap();
        assert_eq!(config.http_address, Some(SocketAddr::from(([0, 0, 0, 0], 9000))));
        assert_eq!(load(Some(COURSE_FILE), &[("SERVER_HTTP_ADDRESS", " ")]).unwrap().http_address, None);
        let err = load(Some(COURSE_FILE), &[("SERVER_HTTP_ADDRESS", "nowhere")]).unwrap_err().to_string();
        assert!(err.contains("SERVER_HTTP_ADDRESS"), "{err}");
    }

    const KEYS: [&str; 17] = [
        "SERVER_HTTP_ADDRESS",
        "SERVER_ROUND_CLOSE",
        "SERVER_ROUND_EVERY",
        "SERVER_PORT",
        "SERVER_LISTEN_BACKLOG",
        "LOGGING_LEVEL",
        "SERVER_AGENCIES",
        "SERVER_STORAGE_PATH",
        "SERVER_IDLE_TIMEOUT",
        "SERVER_AUTH_TIMEOUT",
        "SERVER_WRITE_TIMEOUT",
        "SERVER_MAX_UNAUTHENTICATED",
        "SERVER_TLS_CA",
        "SERVER_TLS_CERT",
        "SERVER_TLS_KEY",
        "SERVER_TLS_CRL",
        "SERVER_IP",
    ];

    proptest::proptest! {
        /// Whatever a setting holds, loading never panics, and a refusal
        /// names the setting.
        #[test]
        fn no_value_of_any_setting_panics_or_goes_unnamed(
            key in proptest::sample::select(KEYS.to_vec()),
            value in proptest::prop_oneof![
                "\\PC{0,30}",
                "[0-9]{1,40}",
                "-?[0-9]{1,12}(\\.[0-9]{0,40})?(ns|us|µs|ms|s|m|h){0,3}",
            ],
        ) {
            match load(Some(COURSE_FILE), &[(key, &value)]) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(e.to_string().contains(key), "{key}={value:?}: {e}"),
            }
        }
    }
}
