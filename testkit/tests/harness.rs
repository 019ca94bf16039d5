//! The harness itself: the builders start the real binaries as the tests,
//! the benchmark and the chaos campaign rely on.

use std::net::TcpListener;

use testkit::{ServerBuilder, EXIT_WITHIN};

#[test]
fn a_server_whose_port_was_taken_meanwhile_listens_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let settings = ServerBuilder::new(dir.path()).agencies(1);
    let taken = settings.port_number();
    let _squatter = TcpListener::bind(("0.0.0.0", taken)).unwrap();
    let mut server = settings.start();
    assert_ne!(server.port(), taken);
    assert_eq!(settings.port_number(), server.port(), "the builder keeps the port that worked");
    assert!(server.stop().success());
}

#[test]
fn a_port_given_is_kept_even_when_taken() {
    let dir = tempfile::tempdir().unwrap();
    let squatter = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = squatter.local_addr().unwrap().port();
    let error = ServerBuilder::new(dir.path()).port(port).try_start().err().expect("the port is taken");
    assert!(error.exited.is_some_and(|s| !s.success()), "{error}");
    assert!(error.lines.contains("Address already in use"), "{error}");
}

#[test]
fn a_restarted_server_listens_on_the_same_port_and_resumes_its_round() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerBuilder::new(dir.path()).agencies(1).start();
    let (port, storage) = (server.port(), server.storage().to_path_buf());
    server.wait_for("action: new_round", EXIT_WITHIN);
    server.kill();
    let mut server = server.restart();
    assert_eq!((server.port(), server.storage()), (port, storage.as_path()));
    server.wait_for("action: recover", EXIT_WITHIN);
}

#[test]
fn a_quiet_server_is_known_to_listen_by_connecting() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = ServerBuilder::new(dir.path()).log_level("WARNING").start();
    assert!(std::net::TcpStream::connect(server.addr()).is_ok());
    assert!(server.stop().success());
    assert!(!server.has_action("accept_connections", "in_progress"), "{:?}", server.seen);
}

#[test]
fn an_agency_of_a_running_server_uploads_its_file_and_gets_its_winners() {
    let dir = tempfile::tempdir().unwrap();
    let agencies = datagen::generate(dir.path(), &[300, 200], &[2, 1], datagen::SAMPLE_SEED).unwrap();
    let mut server = ServerBuilder::new(dir.path()).agencies(2).start();
    let mut running: Vec<_> = agencies
        .iter()
        .map(|a| server.agency(a.agency).data_file(&a.path).batch_max_amount(40).start())
        .collect();
    for (agency, process) in agencies.iter().zip(&mut running) {
        assert!(process.wait_exit(EXIT_WITHIN).success(), "{}", process.seen.join("\n"));
        let told = process.action("consulta_ganadores").expect("its winners");
        assert_eq!(told.get("cant_ganadores"), Some(agency.winners.len().to_string().as_str()));
    }
    assert!(server.stop().success());
    assert_eq!(lottery::storage::load_bets(server.storage()).unwrap().count(), 500);
}
