//! The status page as a person sees it: a real headless browser (Debian's
//! Chromium) loads it from the real server during a paced round, while
//! real agencies upload; the bars move, the draw's counts appear, and a
//! screenshot of each moment, and of the drawn page on a phone, is kept
//! (`target/tmp/status-page-*.png`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use testkit::{ServerBuilder, EXIT_WITHIN};

const SERVER: &str = env!("CARGO_BIN_EXE_server");

/// Chromium, headless, as root can run it, with `args`; its stdout.
fn chromium(args: &[&str]) -> String {
    let out = Command::new("chromium")
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"])
        .args(args)
        .output()
        .expect("chromium runs (scripts/host-deps.sh installs it)");
    assert!(out.status.success(), "chromium {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The page's DOM once its script has run a couple of refreshes.
fn dom(page: &str) -> String {
    chromium(&["--virtual-time-budget=2500", "--dump-dom", page])
}

/// A screenshot of the page in a window `size` wide and high ("900,640";
/// a phone's: "390,844"), kept among the test's outputs.
fn screenshot(page: &str, name: &str, size: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("status-page-{name}.png"));
    let _ = std::fs::remove_file(&path);
    let arg = format!("--screenshot={}", path.display());
    let window = format!("--window-size={size}");
    chromium(&["--virtual-time-budget=2500", &window, &arg, page]);
    let png = std::fs::read(&path).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot of a drawn page");
    path
}

/// The values of attribute `name` on the page's agency rows (in the
/// document, not in its script).
fn values(dom: &str, name: &str) -> Vec<String> {
    let needle = format!("{name}=\"");
    let document = dom.split("<script").next().unwrap_or_default();
    document
        .split(&needle)
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap_or_default().to_owned())
        .collect()
}

fn stored(dom: &str) -> u64 {
    values(dom, "data-stored").iter().map(|v| v.parse::<u64>().unwrap()).sum()
}

#[test]
fn the_status_page_shows_the_bars_move_and_the_draws_counts() {
    let dir = tempfile::tempdir().unwrap();
    let winners = [2, 0, 1];
    std::fs::create_dir(dir.path().join("data")).unwrap();
    let generated = datagen::generate(&dir.path().join("data"), &[1200, 900, 600], &winners, 11).unwrap();
    let mut server = ServerBuilder::new(dir.path()).binary(SERVER).agencies(3).start();
    let http: SocketAddr = server.http_addr().expect("the server's pages");
    let page = format!("http://{http}/");
    let before = dom(&page);
    assert_eq!(values(&before, "data-agency"), ["1", "2", "3"], "one bar per agency");
    assert_eq!(stored(&before), 0);

    let mut agencies: Vec<_> = generated
        .iter()
        .map(|g| server.agency(g.agency).data_file(&g.path).batch_max_amount(10).loop_period("60ms").start())
        .collect();
    std::thread::sleep(Duration::from_millis(800));
    let early = stored(&dom(&page));
    let uploading = screenshot(&page, "upload", "900,640");
    let later = stored(&dom(&page));
    assert!(0 < early && early < later, "the bars move: {early}, then {later}");

    for agency in &mut agencies {
        assert!(agency.wait_exit(EXIT_WITHIN).success());
        // Its progress, as its log says it: every 10 % of its file at most.
        let shares: Vec<u64> = agency
            .actions()
            .iter()
            .filter(|a| a.name == "progreso" && a.get("waiting").is_none())
            .map(|a| a.get("share").unwrap().trim_end_matches('%').parse().unwrap())
            .collect();
        assert!((2..=12).contains(&shares.len()) && shares.is_sorted(), "{shares:?}");
        assert!(shares.last().is_some_and(|&last| last >= 90), "{shares:?}");
    }
    let waited = agencies.iter().filter(|a| a.actions().iter().any(|l| l.get("waiting").is_some())).count();
    assert!(waited >= 1, "an agency that finished first said it waits for the draw");
    let drawn = dom(&page);
    assert!(drawn.contains("data-state=\"drawn\""), "the round shows drawn");
    assert_eq!(stored(&drawn), 2700);
    assert_eq!(values(&drawn, "data-winners"), ["2", "0", "1"], "each agency's winners");
    assert!(drawn.contains(">3</b>"), "the winners in all");
    let shot = screenshot(&page, "drawn", "900,640");
    let phone = screenshot(&page, "phone", "390,844");
    eprintln!("screenshots: {} {} {}", uploading.display(), shot.display(), phone.display());
    server.stop();
}
