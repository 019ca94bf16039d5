//! What [`crate::ServerBuilder`] and [`crate::AgencyBuilder`] share: a
//! binary of the project, the folder it works in, its credentials, and an
//! environment whose settings later ones replace.

use std::fmt::Display;
use std::path::PathBuf;
use std::process::Command;

use crate::{binaries, credentials};

/// A program to run with exactly the environment its builder makes.
#[derive(Debug, Clone)]
pub(crate) struct Program {
    /// The project's binary of this name, unless `binary` says otherwise.
    name: &'static str,
    /// Its working directory.
    pub dir: PathBuf,
    pub binary: Option<PathBuf>,
    /// `None`: the tests' shared credentials.
    pub credentials: Option<PathBuf>,
    /// Settings added or replaced by the builder's `env`, in order.
    extra: Vec<(String, String)>,
}

impl Program {
    pub fn new(name: &'static str, dir: PathBuf) -> Program {
        Program { name, dir, binary: None, credentials: None, extra: Vec::new() }
    }

    /// Sets `key`, in place of what the builder would put there.
    pub fn set(&mut self, key: &str, value: impl Display) {
        self.extra.retain(|(k, _)| k != key);
        self.extra.push((key.to_owned(), value.to_string()));
    }

    /// The credentials folder: the one given, else the tests' shared one
    /// with agencies up to `agencies`.
    pub fn credentials_dir(&self, agencies: u32) -> PathBuf {
        self.credentials.clone().unwrap_or_else(|| credentials::shared(agencies))
    }

    /// `base` with the settings set here added, or in place of its own.
    pub fn environment<K: Into<String>>(&self, base: Vec<(K, String)>) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = base.into_iter().map(|(k, v)| (k.into(), v)).collect();
        for (key, value) in &self.extra {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
        env
    }

    /// The command that runs the binary in its folder with exactly `env`.
    pub fn command(&self, env: Vec<(String, String)>) -> Command {
        let binary = self.binary.clone().unwrap_or_else(|| binaries::binary(self.name));
        let mut command = Command::new(binary);
        command.current_dir(&self.dir).env_clear().envs(env);
        command
    }
}
