//! `tc-client`'s one-request commands against real servers — `predict`,
//! `call @FILE` and `call -`, flags before the subcommand, pretty `stats` on a
//! terminal — and against servers that are not ThreadCenter at all (stand-ins
//! for NATS, HTTP and redis listening where a farm was expected).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use common::{run_client, run_client_with_stdin, TestServer};
use serde_json::{json, Value};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The shipped sample images, in name order.
fn samples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    files
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn predict_prints_each_files_label_and_sends_several_as_one_batch() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let files = samples();

    let out = run_client(&["predict", "--port", &port, path_str(&files[0])]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let line = text(&out.stdout);
    assert!(line.starts_with(&format!("{}: fire (score 0.", files[0].display())), "{line}");

    let mut args = vec!["predict", "--port", &port];
    args.extend(files.iter().map(|f| path_str(f)));
    let out = run_client(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let lines: Vec<&str> = said.lines().collect();
    assert_eq!(lines.len(), files.len(), "one line per file: {said}");
    for (line, file) in lines.iter().zip(&files) {
        let fire = file.file_name().unwrap().to_str().unwrap().starts_with("fire");
        let label = if fire { ": fire (score " } else { ": no fire (score " };
        assert!(line.starts_with(&format!("{}{label}", file.display())), "{line}");
    }
    let stats = server.stats();
    assert_eq!(stats["requests"]["predict_batch"], 1, "the files went as one batch: {stats}");
    assert_eq!(stats["requests"]["predict"], 1, "the single file as one predict: {stats}");

    let out = run_client(&["predict", "--port", &port, "--json", path_str(&files[0]), path_str(&files[3])]);
    let reply: Value = serde_json::from_slice(&out.stdout).expect("--json prints the reply");
    assert_eq!(reply["result"]["results"].as_array().unwrap().len(), 2, "{reply}");

    // A file the model cannot read is named, in its place, and fails the run.
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not an image").unwrap();
    let out = run_client(&["predict", "--port", &port, path_str(&files[0]), path_str(&notes)]);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(said.contains(&format!("{}: error: ", notes.display())), "{said}");
    let out = run_client(&["predict", "--port", &port, "/nonexistent-tc-dir/x.png"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("/nonexistent-tc-dir/x.png: cannot read the image"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn call_reads_a_request_too_long_for_a_command_line_from_a_file_or_stdin() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let b64 = |path: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap());
    let images: Vec<Value> = samples()
        .iter()
        .map(|f| json!({"filename": f.file_name().unwrap().to_str(), "image_b64": b64(f)}))
        .collect();
    let request = json!({"cmd": "predict_batch", "images": images}).to_string();
    // Linux refuses any one argument over 128 KiB ("Argument list too long").
    assert!(request.len() > 128 * 1024, "the point of the test: {} bytes", request.len());

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    std::fs::write(&file, &request).unwrap();
    let out = run_client(&["call", "--port", &port, &format!("@{}", file.display())]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"]["results"].as_array().unwrap().len(), samples().len(), "{reply}");

    let out = run_client_with_stdin(&["call", "--port", &port, "-"], Some("compute 1000\n"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"], common::reference_compute(1000), "the shorthand works from stdin too");

    let out = run_client(&["call", "--port", &port, "@/nonexistent-tc-dir/request.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent-tc-dir/request.json: cannot read the request file"));
}

#[test]
fn refusing_an_absolute_model_path_says_what_the_models_dir_is() {
    let dir = tempfile::tempdir().unwrap();
    let models_dir = path_str(dir.path());
    let server = TestServer::start("threads", 1, &["--models-dir", models_dir]);
    let port = server.addr.port().to_string();
    let out = run_client(&["call", "--port", &port, r#"{"cmd":"load_model","model_path":"/etc/passwd"}"#]);
    assert_eq!(out.status.code(), Some(1));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("absolute paths are not accepted"), "{message}");
    assert!(message.contains("--models-dir, the one directory load_model may read from"), "{message}");
    assert!(message.contains(&format!("(here {models_dir};")), "names the directory: {message}");
}

#[test]
fn connection_flags_may_come_before_the_subcommand() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let out = run_client(&["--port", &port, "call", "compute", "1000"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"], common::reference_compute(1000));
}

#[test]
fn negative_and_malformed_values_get_a_sentence_naming_the_flag() {
    for (args, flag, says) in [
        (&["-d", "-1s"][..], "--duration", "must not be negative"),
        (&["--timeout", "-2"], "--timeout", "must not be negative"),
        (&["--warmup", "-1"], "--warmup", "must not be negative"),
        (&["call", "--timeout", "-1s", "ping"], "--timeout", "must not be negative"),
        (&["kernel", "-d", "-1"], "--duration", "must not be negative"),
        (&["--percentiles", "-5"], "--percentiles", "must be above 0"),
        (&["--mix", "-1"], "--mix", "not a command the benchmark can send"),
        (&["model", "--threads", "x"], "--threads", "not a whole number"),
        (&["model", "--batch", "-1"], "--batch", "must not be negative"),
        (&["model", "--batch", "300"], "--batch", "must be from 1 to 256"),
    ] {
        let out = run_client(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag) && stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("unexpected argument"), "{args:?}: {stderr}");
    }
    // What call cannot send is named as it is, not as an unknown command.
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    for (request, says) in [
        (&["compute", "-5"][..], "\"-5\" must not be negative"),
        (&["ping", "extra"], "ping takes no argument (got \"extra\")"),
        (&["[1,2]"], "that is JSON, but an array, not an object"),
    ] {
        let mut args = vec!["call", "--port", &port];
        args.extend_from_slice(request);
        let out = run_client(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{request:?}: {stderr}");
        assert!(stderr.contains(says), "{request:?}: {stderr}");
        assert!(!stderr.contains("unknown command") && !stderr.contains("'-- -5'"), "{request:?}: {stderr}");
    }
}

#[test]
fn call_indents_stats_on_a_terminal_and_keeps_one_line_in_a_pipe() {
    let server = TestServer::start("threads", 1, &[]);
    let port = server.addr.port().to_string();
    let out = run_client(&["call", "--port", &port, "stats"]);
    assert_eq!(
        text(&out.stdout).trim_end().lines().count(),
        1,
        "a pipe gets one line: {}",
        text(&out.stdout)
    );

    // A real pseudo-terminal, from util-linux's `script`.
    let client = env!("CARGO_BIN_EXE_tc-client");
    let pty = Command::new("script")
        .args(["-qec", &format!("{client} call --port {port} stats"), "/dev/null"])
        .stdin(Stdio::null())
        .output();
    let Ok(pty) = pty else {
        common::skipped(
            "call_indents_stats_on_a_terminal_and_keeps_one_line_in_a_pipe (its terminal half)",
            "`script` is not installed (apt-get install -y bsdutils)",
        );
        return;
    };
    assert!(pty.status.success(), "{}", text(&pty.stderr));
    let shown = text(&pty.stdout).replace("\r\n", "\n");
    assert!(shown.lines().count() > 20, "indented on a terminal: {shown}");
    assert!(shown.contains("\n  \"result\": {\n    \"instance\": "), "{shown}");
    let value: Value = serde_json::from_str(&shown).expect("still JSON");
    assert_eq!(value["result"]["mode"], "threads");
}

#[test]
fn tc_server_prints_its_address_before_the_settings_line() {
    // As on a terminal: the log (stderr) and stdout in one stream.
    let mut child = Command::new("sh")
        .args([
            "-c",
            &format!("exec {} --port 0 --mode threads --workers 1 2>&1", env!("CARGO_BIN_EXE_tc-server")),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut seen = String::new();
        let mut byte = [0u8; 1];
        while !seen.contains("server started") && stdout.read(&mut byte).unwrap_or(0) == 1 {
            seen.push(byte[0] as char);
        }
        seen
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !reader.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    let seen = reader.join().unwrap();
    let listening = seen.find("listening on 127.0.0.1:").unwrap_or_else(|| panic!("{seen}"));
    let settings = seen.find("server started").unwrap_or_else(|| panic!("{seen}"));
    assert!(listening < settings, "the address comes before the ~25 settings: {seen}");
}

#[test]
#[cfg(feature = "nats")]
fn tc_worker_help_says_where_its_threads_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_tc-worker")).arg("--help").output().unwrap();
    // clap wraps long lines: compare the words only.
    let help = text(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!help.contains("inside the server"), "{help}");
    assert!(help.contains("worker threads inside this tc-worker process"), "{help}");
}

#[test]
fn a_predict_batch_benchmark_reports_images_per_second() {
    let out = run_client(&[
        "--embedded",
        "--mode",
        "threads",
        "--workers",
        "1",
        "--cmd",
        "predict_batch",
        "--batch",
        "2",
        "-n",
        "2",
        "-c",
        "1",
    ]);
    let said = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{said}{}", text(&out.stderr));
    let throughput = said.lines().find(|l| l.trim_start().starts_with("Throughput")).expect(&said);
    assert!(throughput.contains(" ok replies/s = ") && throughput.ends_with(" images/s"), "{throughput}");
    assert!(said.contains("(embedded server: threads, 1 worker)"), "singular: {said}");
}

/// A stand-in for a server of another kind: a loopback listener whose every
/// connection gets `greeting` at once (as NATS sends `INFO`), `answer` once
/// the client has written something (as HTTP and redis reply), or nothing.
fn foreign_server(greeting: &'static [u8], answer: &'static [u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            std::thread::spawn(move || serve_foreign(&mut stream, greeting, answer));
        }
    });
    addr
}

fn serve_foreign(stream: &mut TcpStream, greeting: &[u8], answer: &[u8]) {
    let _ = stream.write_all(greeting);
    let mut request = [0u8; 256];
    if stream.read(&mut request).unwrap_or(0) > 0 {
        let _ = stream.write_all(answer);
    }
    // Hold the connection open (a silent server), until the client goes.
    while stream.read(&mut request).unwrap_or(0) > 0 {}
}

#[test]
fn a_server_that_is_not_threadcenter_is_named_as_such_with_what_it_sent() {
    let nats = foreign_server(b"INFO {\"server_id\":\"NDX\",\"version\":\"2.9.20\",\"proto\":1}\r\n", b"");
    let http = foreign_server(b"", b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
    let redis = foreign_server(b"", b"-ERR unknown command\r\n");
    for (addr, seen) in [
        (nats, "it sent \"INFO {"),
        (http, "it sent \"HTTP/1.1 400 Bad Request\""),
        (redis, "it sent \"-ERR unknown command\""),
    ] {
        let port = addr.port().to_string();
        for args in [&["call", "--port", &port, "ping"][..], &["--port", &port, "-n", "1", "-c", "1"]] {
            let out = run_client(args);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
            assert!(stderr.contains("this does not look like a ThreadCenter server"), "{args:?}: {stderr}");
            assert!(stderr.contains(seen), "{args:?} shows what was seen: {stderr}");
        }
    }
}

#[test]
fn a_silent_server_is_not_waited_for_the_whole_timeout() {
    let silent = foreign_server(b"", b"");
    let port = silent.port().to_string();
    // ping and the benchmark's first request (stats) are answered at once
    // by any ThreadCenter server, so a short deadline applies, not --timeout.
    for (args, command) in [
        (&["call", "--port", &port, "--timeout", "10m", "ping"][..], "ping"),
        (&["--port", &port, "-n", "1", "-c", "1"], "stats"),
    ] {
        let out = run_client(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("this does not look like a ThreadCenter server"), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("no reply to {command} within ")), "{args:?}: {stderr}");
    }
    // A compute may take long, so it waits its --timeout, then says how to tell.
    let out = run_client(&["call", "--port", &port, "--timeout", "1", "compute", "5"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("no reply from 127.0.0.1:{port} within 1 s")), "{stderr}");
    assert!(stderr.contains(&format!("tc-client call --port {port} ping")), "{stderr}");
}

#[test]
fn a_metrics_port_given_as_the_job_port_is_named_as_not_threadcenter() {
    // The mistake a newcomer makes: two ports printed at start, the wrong one
    // copied. The metrics endpoint waits for an HTTP request line (or, as
    // many HTTP servers, answers 400 or hangs up): each is named.
    let server = TestServer::start("threads", 1, &["--metrics-addr", "127.0.0.1:0"]);
    let port = server.metrics_addr.unwrap().port().to_string();
    let out = run_client(&["call", "--port", &port, "ping"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this does not look like a ThreadCenter server"), "{stderr}");
}

#[test]
fn a_server_that_hangs_up_on_a_frame_is_named_as_not_threadcenter() {
    // A ThreadCenter server answers every request it read before it closes,
    // even a refusal; a server that reads a ping and hangs up is another kind.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut request = [0u8; 256];
            let _ = stream.read(&mut request);
            // Dropped: the connection closes without a reply.
        }
    });
    let out = run_client(&["call", "--port", &port, "ping"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("this does not look like a ThreadCenter server"), "{stderr}");
    assert!(stderr.contains("it closed the connection without answering ping"), "{stderr}");
}
