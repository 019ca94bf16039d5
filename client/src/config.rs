//! The agency's configuration: `config.yaml`, overridden by the
//! environment (`CLI_*`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use edge::credentials::{self, CredentialFile, Credentials};
use edge::duration::GoDuration;
use edge::log::Level;
use edge::settings::{ConfigError, Problem, SettingError, Sources};
use protocol::tls::{self, ServerName};
use serde_norway::Value;

/// Everything an agency needs to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: u32,
    /// The round the agency's bets are for (`CLI_ROUND`, from 1).
    pub round: u64,
    /// `host:port` of the server.
    pub server_address: String,
    /// Winners queries to make before giving up.
    pub loop_amount: u32,
    /// Pause between two consecutive requests to the server.
    pub loop_period: Duration,
    pub log_level: Level,
    /// The level as configured, for the `config` log line.
    pub log_level_name: String,
    /// Most bets in one batch.
    pub batch_max_amount: usize,
    /// The agency's bets; when it does not exist the agency sends the
    /// single bet of its environment.
    pub data_file: PathBuf,
    /// Longest wait for a connection or for any reply.
    pub reply_timeout: Duration,
    /// How long the agency keeps connecting again without any progress
    /// before it gives up.
    pub retry_timeout: Duration,
    /// TLS: the CA that signs the server, and this agency's certificate.
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must be for: the host of
    /// `server_address`.
    pub server_name: ServerName<'static>,
}

/// Where the credentials are unless the environment says otherwise: the
/// folder `scripts/credentials.sh` fills.
pub const CREDENTIALS: &str = ".credentials";

/// [`Config::reply_timeout`] unless `CLI_REPLY_TIMEOUT` says otherwise.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// [`Config::retry_timeout`] unless `CLI_RETRY_TIMEOUT` says otherwise.
pub const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);

impl Config {
    /// Reads `path` (a missing file is fine when the environment provides
    /// every key) and the environment through `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let file_error = |source: Box<dyn std::error::Error + Send + Sync>| ConfigError::File {
            path: path.into(),
            source,
        };
        let yaml: Value = match std::fs::read_to_string(path) {
            Ok(text) => serde_norway::from_str(&text).map_err(|e| file_error(Box::new(e)))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Value::Null,
            Err(e) => return Err(file_error(Box::new(e))),
        };
        let file = |key: &str| -> Option<String> {
            let value = key.split('.').try_fold(&yaml, |node, part| node.get(part))?;
            match value {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        let sources = Sources { env, file: &file };

        let (id, _) = sources.required("id", "CLI_ID")?;
        let round = sources.optional("round", "CLI_ROUND", 1)?;
        if round == 0 {
            return Err(SettingError::new("round", "CLI_ROUND", Problem::Below(1)).into());
        }
        let (server_address, _): (String, _) = sources.required("server.address", "CLI_SERVER_ADDRESS")?;
        let (loop_amount, _) = sources.required("loop.amount", "CLI_LOOP_AMOUNT")?;
        let (GoDuration(loop_period), _) = sources.required("loop.period", "CLI_LOOP_PERIOD")?;
        let (log_level, log_level_name) = sources.required("log.level", "CLI_LOG_LEVEL")?;
        let (batch_max_amount, _) = sources.required("batch.maxAmount", "CLI_BATCH_MAXAMOUNT")?;
        let data_file = sources.optional(
            "data.file",
            "CLI_DATA_FILE",
            PathBuf::from(format!(".data/agency-{id}.csv")),
        )?;
        let GoDuration(reply_timeout) =
            sources.optional("reply.timeout", "CLI_REPLY_TIMEOUT", GoDuration(DEFAULT_REPLY_TIMEOUT))?;
        let GoDuration(retry_timeout) =
            sources.optional("retry.timeout", "CLI_RETRY_TIMEOUT", GoDuration(DEFAULT_RETRY_TIMEOUT))?;
        if reply_timeout.is_zero() {
            return Err(SettingError::new("reply.timeout", "CLI_REPLY_TIMEOUT", Problem::Zero).into());
        }
        let server_name = tls::server_name(&server_address).map_err(|e| {
            SettingError::new("server.address", "CLI_SERVER_ADDRESS", Problem::Tls(Box::new(e)))
        })?;
        let tls = tls(&sources, id)?;
        let at_least_one = |key: &str, env: &str| SettingError::new(key, env, Problem::Below(1));
        if batch_max_amount == 0 {
            return Err(at_least_one("batch.maxAmount", "CLI_BATCH_MAXAMOUNT").into());
        }
        if loop_amount == 0 {
            return Err(at_least_one("loop.amount", "CLI_LOOP_AMOUNT").into());
        }
        Ok(Config {
            id,
            round,
            server_address,
            loop_amount,
            loop_period,
            log_level,
            log_level_name,
            batch_max_amount,
            data_file,
            reply_timeout,
            retry_timeout,
            tls,
            server_name,
        })
    }
}

/// Agency `id`'s TLS configuration, from its credentials' settings.
fn tls(sources: &Sources<'_>, id: u32) -> Result<Arc<rustls::ClientConfig>, SettingError> {
    let path = |key: &str, file: String| sources.optional(key, key, Path::new(CREDENTIALS).join(file));
    let credentials = Credentials {
        ca: path("CLI_TLS_CA", "ca.pem".into())?,
        cert: path("CLI_TLS_CERT", format!("agency-{id}.pem"))?,
        key: path("CLI_TLS_KEY", format!("agency-{id}.key"))?,
    };
    credentials::client_config(&credentials).map_err(|e| {
        let key = match e.file() {
            Some(CredentialFile::Ca) => "CLI_TLS_CA",
            Some(CredentialFile::Key) => "CLI_TLS_KEY",
            _ => "CLI_TLS_CERT",
        };
        SettingError::new(key, key, Problem::Credentials(Box::new(e)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const COURSE_FILE: &str = "server:\n  address: \"server:12345\"\nloop:\n  amount: 5\n  period: \"5s\"\nlog:\n  level: \"INFO\"\nbatch:\n  maxAmount: 10";

    /// Loads with `env` over agency 1's test credentials' environment.
    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let credentials = testkit::credentials::client_env(&testkit::credentials::shared(3), 1);
        let mut all: Vec<(&str, &str)> = credentials.iter().map(|(k, v)| (*k, v.as_str())).collect();
        all.retain(|(k, _)| !env.iter().any(|(key, _)| key == k));
        all.extend_from_slice(env);
        Config::load(&path, &edge::settings::env_of(&all))
    }

    #[test]
    fn reads_the_course_file_with_the_id_from_the_environment() {
        let config = load(Some(COURSE_FILE), &[("CLI_ID", "3")]).unwrap();
        assert_eq!(config.id, 3);
        assert_eq!(config.server_address, "server:12345");
        assert_eq!(config.loop_amount, 5);
        assert_eq!(config.loop_period, Duration::from_secs(5));
        assert_eq!(config.log_level, Level::Info);
        assert_eq!(config.batch_max_amount, 10);
        assert_eq!(config.data_file, PathBuf::from(".data/agency-3.csv"));
        assert_eq!(
            (config.reply_timeout, config.retry_timeout),
            (DEFAULT_REPLY_TIMEOUT, DEFAULT_RETRY_TIMEOUT)
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let config = load(
            Some(COURSE_FILE),
            &[
                ("CLI_ID", "1"),
                ("CLI_LOOP_PERIOD", "150ms"),
                ("CLI_BATCH_MAXAMOUNT", "64"),
                ("CLI_LOG_LEVEL", "debug"),
                ("CLI_DATA_FILE", "/data/agency-1.csv"),
                ("CLI_REPLY_TIMEOUT", "2s"),
                ("CLI_RETRY_TIMEOUT", "1m30s"),
            ],
        )
        .unwrap();
        assert_eq!(
            (config.reply_timeout, config.retry_timeout),
            (Duration::from_secs(2), Duration::from_secs(90))
        );
        assert_eq!(config.loop_period, Duration::from_millis(150));
        assert_eq!(config.batch_max_amount, 64);
        assert_eq!(config.log_level_name, "debug");
        assert_eq!(config.data_file, PathBuf::from("/data/agency-1.csv"));
    }

    #[test]
    fn missing_and_invalid_values_name_their_key() {
        let err = load(Some(COURSE_FILE), &[]).unwrap_err().to_string();
        assert!(err.contains("CLI_ID") && err.contains("missing"), "{err}");
        let err = load(Some(COURSE_FILE), &[("CLI_ID", "1"), ("CLI_LOOP_PERIOD", "soon")]).unwrap_err();
        assert!(err.to_string().contains("loop.period"), "{err}");
        let err = load(Some(COURSE_FILE), &[("CLI_ID", "1"), ("CLI_BATCH_MAXAMOUNT", "0")]).unwrap_err();
        assert!(err.to_string().contains("batch.maxAmount"), "{err}");
    }

    #[test]
    fn broken_yaml_is_a_clear_error() {
        let err = load(Some("server: [unclosed"), &[("CLI_ID", "1")]).unwrap_err().to_string();
        assert!(err.starts_with("cannot read"), "{err}");
    }

    #[test]
    fn an_agency_bets_on_round_1_unless_told() {
        assert_eq!(load(Some(COURSE_FILE), &[("CLI_ID", "1")]).unwrap().round, 1);
        assert_eq!(load(Some(COURSE_FILE), &[("CLI_ID", "1"), ("CLI_ROUND", "7")]).unwrap().round, 7);
        for bad in ["0", "-1", "one"] {
            let err =
                load(Some(COURSE_FILE), &[("CLI_ID", "1"), ("CLI_ROUND", bad)]).unwrap_err().to_string();
            assert!(err.contains("CLI_ROUND"), "{bad}: {err}");
        }
    }

    const KEYS: [&str; 13] = [
        "CLI_ROUND",
        "CLI_TLS_CA",
        "CLI_TLS_CERT",
        "CLI_TLS_KEY",
        "CLI_ID",
        "CLI_SERVER_ADDRESS",
        "CLI_LOOP_AMOUNT",
        "CLI_LOOP_PERIOD",
        "CLI_LOG_LEVEL",
        "CLI_BATCH_MAXAMOUNT",
        "CLI_DATA_FILE",
        "CLI_REPLY_TIMEOUT",
        "CLI_RETRY_TIMEOUT",
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
            let env = [("CLI_ID", "1"), (key, value.as_str())];
            let env = if key == "CLI_ID" { &env[1..] } else { &env[..] };
            match load(Some(COURSE_FILE), env) {
                Ok(_) => {}
                Err(e) => proptest::prop_assert!(e.to_string().contains(key), "{key}={value:?}: {e}"),
            }
        }
    }
}
