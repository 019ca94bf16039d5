//! The two shell scripts at the root, by their contract.

use e2e::{repo, run, run_ok};

fn generate(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let script = repo().join("generar-compose.sh");
    let mut all = vec![script.to_str().unwrap()];
    all.extend(args);
    run("bash", &all, dir)
}

#[test]
fn generar_compose_writes_the_server_and_n_clients() {
    let dir = tempfile::tempdir().unwrap();
    for n in [0usize, 1, 3] {
        let out = generate(dir.path(), &["compose.yaml", &n.to_string()]);
        assert!(out.status.success());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("Nombre del archivo de salida: compose.yaml\nCantidad de clientes: {n}\n")
        );
        let text = std::fs::read_to_string(dir.path().join("compose.yaml")).unwrap();
        assert!(text.contains("container_name: server"));
        assert!(text.contains(&format!("SERVER_AGENCIES={n}")));
        assert!(text.contains("subnet: 172.25.125.0/24"));
        assert!(!text.contains("\nname:"));
        // One port published, the status page's, on the host's loopback only.
        assert_eq!(text.matches("ports:").count(), 1);
        assert!(text.contains("    ports:\n      - \"127.0.0.1:8074:8074\"\n"));
        assert!(text.contains(r#"test: ["CMD", "/server", "health"]"#));
        assert!(
            !text.contains("LOG") && !text.contains("LOOP"),
            "no log or loop settings in the environment"
        );
        for k in 1..=n {
            assert!(text.contains(&format!("container_name: client{k}\n")));
            assert!(text.contains(&format!("CLI_ID={k}\n")));
            assert!(text.contains(&format!("CLI_DATA_FILE=/data/agency-{k}.csv")));
            // Its own credentials, as secrets, and nobody else's.
            assert!(text.contains(&format!("CLI_TLS_CERT=/run/secrets/agency-{k}.pem")));
            assert!(text.contains(&format!("  agency-{k}.key:\n    file: ./.credentials/agency-{k}.key\n")));
            for file in ["pem", "key"] {
                assert!(dir.path().join(format!(".credentials/agency-{k}.{file}")).is_file());
            }
        }
        assert!(!text.contains(&format!("client{}", n + 1)));
        assert!(text.contains("SERVER_TLS_CRL=/run/secrets/crl.pem"));
        assert!(!text.contains("ca.key"), "the CA's key never leaves the host's folder");
        assert!(!text.contains("BEGIN"), "no credential in the Compose file itself");
    }
}

#[test]
fn generar_compose_refuses_bad_arguments_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let bad: [&[&str]; 6] = [
        &[],
        &["out.yaml"],
        &["out.yaml", "-1"],
        &["out.yaml", "tres"],
        &["out.yaml", "1", "2"],
        &["no/such/dir/out.yaml", "1"],
    ];
    for args in bad {
        let out = generate(dir.path(), args);
        assert!(!out.status.success(), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "no file written, no credentials made");
}

#[test]
fn validar_echo_server_parses_under_dash() {
    let out = run("dash", &["-n", repo().join("validar-echo-server.sh").to_str().unwrap()], &repo());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_committed_compose_file_is_the_generated_one_with_five_clients() {
    let dir = tempfile::tempdir().unwrap();
    let out = generate(dir.path(), &["docker-compose-dev.yaml", "5"]);
    assert!(out.status.success());
    let generated = std::fs::read_to_string(dir.path().join("docker-compose-dev.yaml")).unwrap();
    let committed = std::fs::read_to_string(repo().join("docker-compose-dev.yaml")).unwrap();
    assert_eq!(generated, committed, "regenerate it: ./generar-compose.sh docker-compose-dev.yaml 5");
}

#[test]
fn credentials_work_from_any_folder_and_revoking_twice_then_rotating_brings_an_agency_back() {
    let root = tempfile::tempdir().unwrap();
    let script = repo().join("scripts/credentials.sh");
    let script = script.to_str().unwrap();
    // Made through a relative path, then used from elsewhere.
    run_ok("bash", &[script, "creds", "2"], root.path());
    let dir = root.path().join("creds");
    let other = tempfile::tempdir().unwrap();
    let dir_arg = dir.to_str().unwrap();
    let verify = |agency: &str| {
        let cert = dir.join(format!("{agency}.pem"));
        let args =
            ["verify", "-crl_check", "-CAfile", "ca.pem", "-CRLfile", "crl.pem", cert.to_str().unwrap()];
        run("openssl", &args, &dir).status.success()
    };
    assert!(verify("agency-1") && verify("agency-2") && verify("server"));
    for _ in 0..2 {
        let out = run_ok("bash", &[script, dir_arg, "--revoke", "1"], other.path());
        assert!(out.contains("agency 1: certificate revoked"), "{out}");
        assert!(!verify("agency-1") && verify("agency-2"));
    }
    // Making credentials again keeps the revoked files: it stays out.
    run_ok("bash", &[script, dir_arg, "2"], other.path());
    assert!(!verify("agency-1"));
    run_ok("bash", &[script, dir_arg, "--rotate", "1"], other.path());
    assert!(verify("agency-1") && verify("agency-2"));
    // Bad agency numbers and folders are refused, saying why.
    for (args, says) in [
        (vec![dir_arg, "--revoke", "01"], "a number from 1 on"),
        (vec![dir_arg, "--revoke", "7"], "no certificate for agency 7"),
        (vec![other.path().to_str().unwrap(), "--revoke", "1"], "holds no credentials"),
    ] {
        let mut all = vec![script];
        all.extend(args);
        let out = run("bash", &all, other.path());
        assert!(!out.status.success(), "{all:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(says), "{all:?}: {out:?}");
    }
    // An openssl failure is shown, not hidden.
    std::fs::write(dir.join("ca.key"), "not a key").unwrap();
    let out = run("bash", &[script, dir_arg, "3"], other.path());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && said.contains("openssl ca failed:") && said.contains("ca.key"),
        "{said}"
    );
}

#[test]
fn generar_stack_writes_what_docker_stack_deploy_takes_and_refuses_bad_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let script = repo().join("scripts/generar-stack.sh");
    let stack = |args: &[&str], env: &[(&str, &str)]| {
        std::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    // Its configs come from beside the file.
    let out = stack(&["stack.yaml", "2"], &[]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("server/config.ini"));
    for file in ["server/config.ini", "client/config.yaml"] {
        std::fs::create_dir_all(dir.path().join(file).parent().unwrap()).unwrap();
        std::fs::copy(repo().join(file), dir.path().join(file)).unwrap();
    }
    for args in [&[][..], &["out.yaml"], &["out.yaml", "0"], &["out.yaml", "dos"], &["no/dir/out.yaml", "1"]]
    {
        let out = stack(args, &[]);
        assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("usage:"), "{args:?}");
    }
    let out = stack(&["stack.yaml", "1"], &[("AGENCY_DATA", "relative/path")]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("absolute"));
    assert!(!dir.path().join("stack.yaml").exists(), "no file written");

    let env = [("SERVER_IMAGE", "registry.example:5000/lottery-server:7"), ("AGENCY_DATA", "/srv/lottery")];
    let out = stack(&["stack.yaml", "3"], &env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = std::fs::read_to_string(dir.path().join("stack.yaml")).unwrap();
    assert!(text.contains("version: \"3.8\""));
    assert!(!text.contains("container_name") && !text.contains("build:"), "stack deploy ignores them");
    assert!(text.contains("image: 'registry.example:5000/lottery-server:7'"));
    assert!(text.contains("image: 'client:latest'"));
    assert!(text.contains("endpoint_mode: dnsrr"));
    assert!(text.contains("constraints: [node.labels.lottery.storage == true]"));
    assert!(text.contains("driver: overlay\n    attachable: true"));
    assert!(text.contains("SERVER_AGENCIES=3"));
    assert!(text.contains(r#"test: ["CMD", "/server", "health"]"#), "Swarm asks the server's health");
    for k in 1..=3 {
        assert!(text.contains(&format!("  agency{k}:\n")));
        assert!(text.contains(&format!("source: '/srv/lottery/agency-{k}.csv'")));
        assert!(text.contains(&format!("secrets: [ca.pem, agency-{k}.pem, agency-{k}.key]")));
    }
    assert!(!text.contains("agency4"));
    assert!(!text.contains("ca.key") && !text.contains("BEGIN"), "no CA key, no credential in the file");
    assert_eq!(text.matches("condition: on-failure").count(), 4, "the server and each agency");
}
