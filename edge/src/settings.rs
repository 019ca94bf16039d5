//! Reading settings from a configuration file and the environment, where
//! the environment wins.
//!
//! Both programs describe each setting by the name it has in their file and
//! the environment variable that overrides it; every missing or invalid
//! value becomes one [`SettingError`] that names both and says what is
//! wrong.

use std::error::Error;
use std::path::PathBuf;
use std::str::FromStr;

use crate::credentials::CredentialError;
use crate::duration::GoDuration;

/// Why a program cannot start with its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", .path.display())]
    File { path: PathBuf, source: Box<dyn Error + Send + Sync> },
    #[error(transparent)]
    Setting(#[from] SettingError),
}

/// A setting that is missing or cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {key} ({env}): {problem}")]
pub struct SettingError {
    pub key: String,
    pub env: String,
    pub problem: Problem,
}

/// What is wrong with a setting.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("missing: set it in the configuration file or the environment")]
    Missing,
    #[error("{value:?}: {source}")]
    Invalid { value: String, source: Box<dyn Error + Send + Sync> },
    #[error("must be above 0s")]
    Zero,
    #[error("must be at least {0}")]
    Below(u64),
    #[error("must be at most {max}")]
    Above { max: u64 },
    #[error("must be from {min} to {max}")]
    Outside { min: u64, max: u64 },
    #[error("{value} is longer than {other} ({limit}): {why}")]
    LongerThan { value: GoDuration, other: &'static str, limit: GoDuration, why: &'static str },
    #[error("{0} (scripts/credentials.sh makes the credentials)")]
    Credentials(Box<CredentialError>),
    #[error(transparent)]
    Tls(Box<protocol::tls::TlsError>),
}

impl SettingError {
    pub fn new(key: &str, env: &str, problem: Problem) -> SettingError {
        SettingError { key: key.into(), env: env.into(), problem }
    }
}

/// Where settings come from: the environment (as a lookup function, so
/// tests need not touch the process environment) over a file's values.
pub struct Sources<'a> {
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub file: &'a dyn Fn(&str) -> Option<String>,
}

impl Sources<'_> {
    /// The raw value of `key` (file) / `env` (environment), if any.
    pub fn raw(&self, key: &str, env: &str) -> Option<String> {
        (self.env)(env).or_else(|| (self.file)(key))
    }

    /// A setting that must be present, and its text as configured.
    pub fn required<T>(&self, key: &str, env: &str) -> Result<(T, String), SettingError>
    where
        T: FromStr,
        T::Err: Error + Send + Sync + 'static,
    {
        let raw = self.raw(key, env).ok_or_else(|| SettingError::new(key, env, Problem::Missing))?;
        parse(key, env, raw)
    }

    /// A setting with a default.
    pub fn optional<T>(&self, key: &str, env: &str, default: T) -> Result<T, SettingError>
    where
        T: FromStr,
        T::Err: Error + Send + Sync + 'static,
    {
        match self.raw(key, env) {
            Some(raw) => parse(key, env, raw).map(|(v, _)| v),
            None => Ok(default),
        }
    }
}

fn parse<T>(key: &str, env: &str, raw: String) -> Result<(T, String), SettingError>
where
    T: FromStr,
    T::Err: Error + Send + Sync + 'static,
{
    let trimmed = raw.trim();
    match trimmed.parse() {
        Ok(value) => Ok((value, trimmed.to_owned())),
        Err(e) => Err(SettingError::new(
            key,
            env,
            Problem::Invalid { value: trimmed.to_owned(), source: Box::new(e) },
        )),
    }
}

/// The process environment, for [`Sources::env`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// An environment made of `pairs`, for tests.
pub fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_wins_over_the_file() {
        let env = |k: &str| (k == "PORT").then(|| "2".to_string());
        let file = |_: &str| Some("1".to_string());
        let sources = Sources { env: &env, file: &file };
        assert_eq!(sources.required::<u16>("port", "PORT").unwrap().0, 2);
        assert_eq!(sources.required::<u16>("other", "OTHER").unwrap().0, 1);
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        let none = |_: &str| None;
        let bad = |_: &str| Some("abc".to_string());
        let missing = Sources { env: &none, file: &none }.required::<u16>("port", "PORT");
        assert_eq!(
            missing.unwrap_err().to_string(),
            "invalid configuration: port (PORT): missing: set it in the configuration file or the environment"
        );
        let invalid = Sources { env: &bad, file: &none }.required::<u16>("port", "PORT");
        assert_eq!(
            invalid.unwrap_err().to_string(),
            "invalid configuration: port (PORT): \"abc\": invalid digit found in string"
        );
    }
}
