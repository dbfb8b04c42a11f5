//! The standard-library Python example client (scripts/example_client.py)
//! against the real server: the same framing and requests as the original
//! ThreadCenter's clients.

mod common;

use std::process::Command;

use common::TestServer;

fn python3_available() -> bool {
    Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success())
}

#[test]
fn the_python_example_client_works_against_both_modes() {
    if !python3_available() {
        eprintln!("python3 not found: skipping the Python example client test");
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
    if !python3_available() {
        eprintln!("python3 not found: skipping the IdentyFire client test");
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
