//! The server's configuration: `config.ini` under `[DEFAULT]`, overridden
//! by environment variables of the same names.

use std::path::{Path, PathBuf};
use std::time::Duration;

use lottery::duration::GoDuration;
use lottery::log::Level;
use lottery::settings::{ConfigError, SettingError, Sources};

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
    /// A connection that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
}

impl Config {
    /// Reads `path` (a missing file is fine when the environment provides
    /// every required key) and the environment through `env`.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let ini = match ini::Ini::load_from_file(path) {
            Ok(ini) => Some(ini),
            Err(ini::Error::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ConfigError::File { path: path.into(), reason: e.to_string() }),
        };
        let file = |key: &str| -> Option<String> {
            let section = ini.as_ref()?.section(Some("DEFAULT"))?;
            section.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.to_owned())
        };
        let sources = Sources { env, file: &file };
        let (port, _) = sources.required("SERVER_PORT", "SERVER_PORT")?;
        let (listen_backlog, _) = sources.required("SERVER_LISTEN_BACKLOG", "SERVER_LISTEN_BACKLOG")?;
        let (logging_level, logging_level_name) = sources.required("LOGGING_LEVEL", "LOGGING_LEVEL")?;
        let agencies = sources.optional("SERVER_AGENCIES", "SERVER_AGENCIES", 5)?;
        if agencies > MAX_AGENCIES {
            let problem =
                format!("{agencies} is more than the {MAX_AGENCIES} agencies the server keeps state for");
            return Err(SettingError::new("SERVER_AGENCIES", "SERVER_AGENCIES", problem).into());
        }
        let storage_path =
            sources.optional("SERVER_STORAGE_PATH", "SERVER_STORAGE_PATH", PathBuf::from("./bets.csv"))?;
        let GoDuration(idle_timeout) = sources.optional(
            "SERVER_IDLE_TIMEOUT",
            "SERVER_IDLE_TIMEOUT",
            GoDuration(Duration::from_secs(60)),
        )?;
        let max_connections = sources.optional("SERVER_MAX_CONNECTIONS", "SERVER_MAX_CONNECTIONS", 256)?;
        if max_connections == 0 {
            let problem = "must be at least 1";
            return Err(SettingError::new("SERVER_MAX_CONNECTIONS", "SERVER_MAX_CONNECTIONS", problem).into());
        }
        Ok(Config {
            port,
            listen_backlog,
            logging_level,
            logging_level_name,
            agencies,
            storage_path,
            idle_timeout,
            max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COURSE_FILE: &str =
        "[DEFAULT]\nSERVER_PORT = 12345\nSERVER_IP = server\nSERVER_LISTEN_BACKLOG = 5\nLOGGING_LEVEL = INFO";

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.ini");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        Config::load(&path, &lottery::settings::env_of(env))
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
    }

    const KEYS: [&str; 8] = [
        "SERVER_PORT",
        "SERVER_LISTEN_BACKLOG",
        "LOGGING_LEVEL",
        "SERVER_AGENCIES",
        "SERVER_STORAGE_PATH",
        "SERVER_IDLE_TIMEOUT",
        "SERVER_MAX_CONNECTIONS",
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
