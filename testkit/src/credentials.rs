//! Credentials for tests, made by the project's own command
//! (`scripts/credentials.sh`), once, in `target/test-credentials`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use edge::credentials::Credentials;

use crate::repo;

/// Runs `scripts/credentials.sh` with `args`; panics if it fails.
pub fn run_script(args: &[&str]) {
    let out = Command::new("bash")
        .arg(repo().join("scripts/credentials.sh"))
        .args(args)
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/credentials.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Credentials for the server and agencies 1..=`agencies` in `dir`.
pub fn make(dir: &Path, agencies: u32) -> PathBuf {
    run_script(&[dir.to_str().expect("a UTF-8 path"), &agencies.to_string()]);
    dir.to_path_buf()
}

/// A folder of credentials shared by every test, with agencies up to
/// `agencies` at least. Test processes run in parallel: a file lock keeps
/// them from making it at the same time.
pub fn shared(agencies: u32) -> PathBuf {
    static MADE: Mutex<u32> = Mutex::new(0);
    let dir = repo().join("target/test-credentials");
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if *made < agencies {
        std::fs::create_dir_all(repo().join("target")).expect("target/ can be made");
        let lock = File::create(repo().join("target/test-credentials.lock")).expect("a lock file");
        lock.lock().expect("the lock");
        make(&dir, agencies);
        *made = agencies;
    }
    dir
}

/// The server's credentials in `dir`.
pub fn server(dir: &Path) -> Credentials {
    Credentials { ca: dir.join("ca.pem"), cert: dir.join("server.pem"), key: dir.join("server.key") }
}

/// Agency `agency`'s credentials in `dir`.
pub fn agency(dir: &Path, agency: u32) -> Credentials {
    Credentials {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("agency-{agency}.pem")),
        key: dir.join(format!("agency-{agency}.key")),
    }
}

/// The operator's credentials in `dir`.
pub fn operator(dir: &Path) -> Credentials {
    Credentials { ca: dir.join("ca.pem"), cert: dir.join("operator.pem"), key: dir.join("operator.key") }
}

/// The server's environment for the credentials in `dir`.
pub fn server_env(dir: &Path) -> Vec<(&'static str, String)> {
    let path = |file: &str| dir.join(file).display().to_string();
    vec![
        ("SERVER_TLS_CA", path("ca.pem")),
        ("SERVER_TLS_CERT", path("server.pem")),
        ("SERVER_TLS_KEY", path("server.key")),
        ("SERVER_TLS_CRL", path("crl.pem")),
    ]
}

/// Agency `agency`'s environment for the credentials in `dir`.
pub fn client_env(dir: &Path, agency: u32) -> Vec<(&'static str, String)> {
    let c = self::agency(dir, agency);
    vec![
        ("CLI_TLS_CA", c.ca.display().to_string()),
        ("CLI_TLS_CERT", c.cert.display().to_string()),
        ("CLI_TLS_KEY", c.key.display().to_string()),
    ]
}
