//! The project's real binaries, for tests that run them as processes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::SystemTime;

/// The crates a binary is built from.
const SOURCES: [&str; 5] = ["protocol", "lottery", "edge", "server", "client"];

/// The path of the project's binary `name` (`server`, `client`), in the
/// profile the running program was built with.
///
/// `cargo test` of the workspace builds both before any test runs; then
/// this only checks they are newer than every source. Otherwise (one
/// package's tests, `make chaos`) it builds them first: running cargo when
/// nothing is stale is avoided on purpose, as a build with other features
/// than the test's would recompile half the dependencies.
///
/// The check is made once per test process: a source edited while a round
/// runs does not rebuild a binary between a kill and the restart.
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    let dir = profile_dir();
    let path = dir.join(name);
    if checked.iter().any(|n| n == name) {
        return path;
    }
    if is_stale(&path) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--locked", "--quiet", "-p", name, "--bin", name]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success(), "building {name} failed");
    }
    assert!(path.is_file(), "no {name} binary at {}", path.display());
    checked.push(name.to_owned());
    path
}

/// Whether `binary` is missing or older than a source it is built from.
fn is_stale(binary: &Path) -> bool {
    let Ok(built) = binary.metadata().and_then(|m| m.modified()) else { return true };
    let root = crate::repo();
    // A crate's tests and benches are not in its binary: editing them
    // must not rebuild it.
    let sources =
        SOURCES.iter().flat_map(|krate| [root.join(krate).join("src"), root.join(krate).join("Cargo.toml")]);
    sources.chain([root.join("Cargo.lock")]).any(|path| newest(&path).is_some_and(|changed| changed > built))
}

/// The newest modification time under `path` (a file or a folder).
fn newest(path: &Path) -> Option<SystemTime> {
    let meta = path.metadata().ok()?;
    if meta.is_file() {
        return meta.modified().ok();
    }
    std::fs::read_dir(path)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "target" && e.file_name() != "fuzz")
        .filter_map(|e| newest(&e.path()))
        .max()
}

/// `target/<profile>`: where the running test or tool was built.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running program has a path");
    let mut dir = exe.parent().expect("a program lives in a folder").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}
