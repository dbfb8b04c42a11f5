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

#[test]
#[cfg(not(feature = "tract"))]
fn the_tract_engine_asked_of_a_build_without_it_names_the_feature() {
    let out = tc_server(&["--port", "0", "--engine", "tract"]);
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", said(&out));
    assert!(said(&out).contains("--features tract"), "names the feature: {}", said(&out));
}
