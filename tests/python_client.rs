//! The standard-library Python example client (scripts/example_client.py)
//! against the real server: the same framing and requests as the original
//! ThreadCenter's clients.

mod common;

use std::process::Command;

use common::TestServer;

/// Whether python3 is here; if not, `test` is skipped (a failure under
/// `CI=true`).
fn python3_available(test: &str) -> bool {
    common::tool_available(test, "python3", "apt-get install -y python3")
}

#[test]
fn the_python_example_client_works_against_both_modes() {
    if !python3_available("the_python_example_client_works_against_both_modes") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/example_client.py");
    for mode in common::MODES {
        let server = TestServer::start(mode, 2, &[]);
        let out = Command::new("python3")
            .args([script, "--port", &server.addr.port().to_string(), "--timeout", "30"])
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: example client failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("ping: "), "{stdout}");
        assert!(stdout.contains("replies matched by id"), "{stdout}");
        assert!(stdout.lines().any(|l| l.starts_with("Done: 20 responses in ")), "{stdout}");
    }
}

/// An IdentyFire client, as its users wrote them (standard library, a new
/// connection per call), against the real server in both modes.
#[test]
fn an_identyfire_style_python_client_works_unchanged() {
    if !python3_available("an_identyfire_style_python_client_works_unchanged") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/identyfire_client.py");
    for mode in common::MODES {
        let server = TestServer::start(mode, 2, &[]);
        let out = Command::new("python3")
            .args([script, "--port", &server.addr.port().to_string()])
            .output()
            .expect("python3 runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: IdentyFire client failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Done: 0 failed checks"), "{stdout}");
        assert!(!stdout.contains("FAIL"), "{stdout}");
    }
}

/// Both Python clients over TLS (the standard library's `ssl`), against a
/// server with certificates made by `tc-server gen-cert`; the example
/// client with a client certificate too (mutual TLS).
#[test]
fn the_python_clients_speak_tls() {
    if !python3_available("the_python_clients_speak_tls") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(["gen-cert", "--out", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let server = TestServer::start(
        "threads",
        2,
        &[
            "--tls-cert",
            &file("server.pem"),
            "--tls-key",
            &file("server.key"),
            "--tls-client-ca",
            &file("ca.pem"),
        ],
    );
    let port = server.addr.port().to_string();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/example_client.py");
    let out = Command::new("python3")
        .args([example, "--host", "localhost", "--port", &port, "--tls", "--cafile", &file("ca.pem")])
        .args(["--certfile", &file("client.pem"), "--keyfile", &file("client.key")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().any(|l| l.starts_with("Done: 20 responses in ")), "{stdout}");
    // Without its certificate, the server refuses the example client.
    let out = Command::new("python3")
        .args([example, "--host", "localhost", "--port", &port, "--tls", "--cafile", &file("ca.pem")])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    // The IdentyFire client over TLS (no client certificates in its world).
    let open = TestServer::start(
        "threads",
        2,
        &["--tls-cert", &file("server.pem"), "--tls-key", &file("server.key")],
    );
    let identyfire = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/identyfire_client.py");
    let out = Command::new("python3")
        .args([
            identyfire,
            "--host",
            "localhost",
            "--port",
            &open.addr.port().to_string(),
            "--tls",
            "--cafile",
        ])
        .arg(file("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("Done: 0 failed checks"), "{stdout}");
}
