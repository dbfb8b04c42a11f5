//! A build without the optional features (what the README's main command
//! builds): asking for a part that was left out is a usage error (exit 2)
//! that names the feature to build it with, never a missing command or a
//! flag that does nothing.
//!
//! These run only in that build; `.ci/run` runs them with
//! `cargo test --test features` beside the README's `cargo test --all-features`.

#![cfg(not(all(feature = "nats", feature = "tract")))]

use std::process::{Command, Output, Stdio};

fn tc_server(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tc-server"))
        .args(args)
        .env_remove("THREADCENTER_ENGINE")
        .stdin(Stdio::null())
        .output()
        .expect("tc-server runs")
}

fn said(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
#[cfg(not(feature = "nats"))]
fn a_gateway_asked_of_a_build_without_nats_names_the_feature() {
    // Nothing listens on port 1: the refusal must come before any connect.
    let out = tc_server(&["--port", "0", "--workers", "0", "--nats", "nats://127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", said(&out));
    assert!(said(&out).contains("--features nats"), "names the feature: {}", said(&out));
    assert!(!said(&out).contains("cannot connect"), "refused before connecting: {}", said(&out));
}

/// The README's main command on a fresh machine: no onnxruntime to be
/// found (no `python3` on `PATH`, no `ORT_DYLIB_PATH`) and no tract built
/// in. The farm must start and run compute jobs all the same — a server
/// whose workers were told to use an engine that is not there would stop
/// before its first job.
#[test]
#[cfg(not(feature = "tract"))]
fn the_main_command_runs_without_onnxruntime_or_tract() {
    let empty_path = std::env::temp_dir().join(format!("tc-no-python-{}", std::process::id()));
    std::fs::create_dir_all(&empty_path).expect("an empty PATH directory");
    let out = Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(["--embedded", "--duration", "1", "--warmup", "0", "--workers", "2", "--size", "1000"])
        .env("PATH", &empty_path)
        .env_remove("ORT_DYLIB_PATH")
        .env_remove("THREADCENTER_ONNXRUNTIME")
        .env_remove("THREADCENTER_ENGINE")
        .stdin(Stdio::null())
        .output()
        .expect("tc-client runs");
    let _ = std::fs::remove_dir_all(&empty_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the benchmark ran: {}\n{stdout}", said(&out));
    assert!(!said(&out).contains("handshake failed"), "every worker started: {}", said(&out));
    assert!(stdout.contains("p50") || stdout.contains("Latency"), "a latency report: {stdout}");
}

#[test]
#[cfg(not(feature = "tract"))]
fn the_tract_engine_asked_of_a_build_without_it_names_the_feature() {
    let out = tc_server(&["--port", "0", "--engine", "tract"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", said(&out));
    assert!(said(&out).contains("--features tract"), "names the feature: {}", said(&out));
}
