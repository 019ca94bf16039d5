//! The project's real binaries, for tests that run them as processes.

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

/// The path of the project's binary `name` (`server`, `client`), in the
/// profile the running program was built with, built first if needed (a
/// no-op when it is fresh). Each binary is built once per process.
pub fn binary(name: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let dir = profile_dir();
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.get_or_insert_with(HashSet::new).insert(name.to_owned()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = Command::new(cargo);
        build.args(["build", "--locked", "--quiet", "-p", name, "--bin", name]);
        if dir.ends_with("release") {
            build.arg("--release");
        }
        let status = build.status().unwrap_or_else(|e| panic!("cannot run cargo to build {name}: {e}"));
        assert!(status.success(), "building {name} failed");
    }
    let path = dir.join(name);
    assert!(path.is_file(), "no {name} binary at {}", path.display());
    path
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
