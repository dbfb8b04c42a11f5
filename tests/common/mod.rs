//! Helpers shared by the integration tests: start the real `tc-server` binary
//! on port 0, talk to it over loopback with a framing of our own (so the
//! tests do not use the library to check itself), and stop it.
//!
//! Every socket has a read timeout and every wait has a deadline, so a broken
//! server makes a test fail, never hang.

#![allow(dead_code)] // each test file uses a different part of this module

pub mod nats;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use byteorder::{BigEndian, ReadBytesExt, WriteBytesExt};
use serde_json::{json, Value};

/// How long any single reply may take before a test fails.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// Both pool modes, for tests that must hold in each.
pub const MODES: [&str; 2] = ["threads", "processes"];

/// A `tc-server` process listening on a free loopback port.
pub struct TestServer {
    child: Child,
    /// Its stderr (the log), shown only if the test fails.
    _log: Option<ChildLog>,
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when started with `--metrics-addr`.
    pub metrics_addr: Option<SocketAddr>,
}

impl TestServer {
    /// Starts `tc-server --port 0 --mode MODE --workers N EXTRA...` and waits
    /// for its `listening on` line.
    pub fn start(mode: &str, workers: usize, extra: &[&str]) -> TestServer {
        let workers = workers.to_string();
        let mut args = vec!["--port", "0", "--mode", mode, "--workers", &workers, "--log-level", "warn"];
        args.extend_from_slice(extra);
        Self::start_with(&args, &[])
    }

    /// Starts `tc-server` with exactly these arguments and environment. Its
    /// log goes to a file that is printed only if the test fails, so a
    /// passing `cargo test` stays quiet.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> TestServer {
        let log = ChildLog::new();
        let mut server = Self::start_logging_to(args, env, log.stdio());
        server._log = Some(log);
        server
    }

    /// Like [`TestServer::start_with`], with the server's stderr (its log)
    /// sent to `stderr`, e.g. a file the test reads afterwards.
    pub fn start_logging_to(args: &[&str], env: &[(&str, &str)], stderr: Stdio) -> TestServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tc-server"))
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("tc-server starts");
        let stdout = child.stdout.take().unwrap();
        // `listening on ADDR`, then `metrics on http://ADDR/metrics` and
        // `dashboard on http://ADDR/` when asked for: read them all before
        // letting go of the pipe.
        let lines = if args.contains(&"--metrics-addr") { 3 } else { 1 };
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut text = String::new();
            for _ in 0..lines {
                let _ = stdout.read_line(&mut text);
            }
            let _ = tx.send(text);
        });
        let text = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(text) => text,
            Err(_) => {
                let _ = child.kill();
                panic!("tc-server did not print its address within 30 s");
            }
        };
        let mut lines = text.lines();
        let line = lines.next().unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("unexpected first line from tc-server: {line:?}"))
            .parse()
            .expect("a socket address");
        let metrics_addr = lines.next().map(|line| {
            line.trim()
                .strip_prefix("metrics on http://")
                .or_else(|| line.trim().strip_prefix("metrics on https://"))
                .and_then(|rest| rest.strip_suffix("/metrics"))
                .unwrap_or_else(|| panic!("unexpected second line from tc-server: {line:?}"))
                .parse()
                .expect("a socket address")
        });
        TestServer { child, _log: None, addr, metrics_addr }
    }

    /// `GET path` on the metrics address: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        http_get(self.metrics_addr.expect("started with --metrics-addr"), path)
    }

    /// `/metrics`, parsed into `name{labels}` → value.
    pub fn scrape(&self) -> std::collections::BTreeMap<String, f64> {
        let (status, body) = self.http_get("/metrics");
        assert_eq!(status, 200, "{body}");
        parse_exposition(&body)
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new connection to the server.
    pub fn connect(&self) -> TestClient {
        TestClient::connect(self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(&self, request: Value) -> Value {
        self.connect().request(request)
    }

    /// The `result` of a `stats` request.
    pub fn stats(&self) -> Value {
        let reply = self.request(json!({"id": "stats", "cmd": "stats"}));
        reply["result"].clone()
    }

    /// Polls `stats` until `condition` holds (at most 30 s; panics otherwise).
    pub fn wait_for_stats(&self, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = self.stats();
            if condition(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last stats: {stats}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and waits (at most 30 s) for the server to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        send_signal(self.child.id(), libc::SIGTERM);
        self.wait_exit()
    }

    /// Waits (at most 30 s) for the server to exit by itself.
    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_for_exit(&mut self.child, Duration::from_secs(30), "tc-server did not exit after SIGTERM")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Where a test's child process writes its stderr: a temporary file, printed
/// when the test fails (on drop during a panic) and otherwise thrown away.
pub struct ChildLog {
    file: tempfile::NamedTempFile,
}

impl ChildLog {
    pub fn new() -> ChildLog {
        ChildLog { file: tempfile::NamedTempFile::new().expect("a temporary log file") }
    }

    /// A handle for `Command::stderr`.
    pub fn stdio(&self) -> Stdio {
        Stdio::from(self.file.as_file().try_clone().expect("the log file can be shared"))
    }
}

impl Drop for ChildLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = std::fs::read_to_string(self.file.path()).unwrap_or_default();
            eprintln!("--- the child's log ---\n{text}--- end of log ---");
        }
    }
}

/// Sends a signal to a process.
pub fn send_signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}

/// Whether a process exists and is not a zombie.
pub fn process_is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => {
            stat.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')).unwrap_or(false)
        }
        Err(_) => false,
    }
}

/// Waits (at most `limit`) for `child` to exit. Past it, the child is
/// killed and the test fails with `what` ("tc-server did not exit ...").
pub fn wait_for_exit(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} (waited {limit:?})");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (at most 10 s) until none of `pids` is running: worker processes
/// that outlive their server fail the test.
pub fn wait_until_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| process_is_running(pid)) {
        assert!(Instant::now() < deadline, "worker processes still running: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Worker pids listed by `stats`.
pub fn worker_pids(stats: &Value) -> Vec<u32> {
    stats["worker_list"]
        .as_array()
        .expect("worker_list")
        .iter()
        .map(|w| w["pid"].as_u64().expect("a pid in process mode") as u32)
        .collect()
}

/// A raw framed connection.
pub struct TestClient {
    stream: TcpStream,
}

impl TestClient {
    pub fn connect(addr: SocketAddr) -> TestClient {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10)).expect("connect");
        stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(REPLY_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        TestClient { stream }
    }

    /// Waits up to `timeout` for each reply instead of [`REPLY_TIMEOUT`]
    /// (a guard against a hang, not a measure of speed: for tests whose
    /// replies may legitimately wait out a broker's recovery).
    pub fn with_reply_timeout(self, timeout: Duration) -> TestClient {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        self
    }

    /// Writes raw bytes (a frame, half a frame, garbage...).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// Writes raw bytes from another thread, ignoring write errors: for
    /// inputs the server may refuse (and close on) before it has read them all.
    pub fn send_raw_in_background(&self, bytes: Vec<u8>) -> std::thread::JoinHandle<()> {
        let mut stream = self.stream.try_clone().expect("clone socket");
        std::thread::spawn(move || {
            let _ = stream.write_all(&bytes);
        })
    }

    /// Writes one frame around `payload`.
    pub fn send_payload(&mut self, payload: &[u8]) {
        let mut frame = Vec::with_capacity(payload.len() + 4);
        frame.write_u32::<BigEndian>(payload.len() as u32).unwrap();
        frame.extend_from_slice(payload);
        self.send_raw(&frame);
    }

    /// Writes one JSON request.
    pub fn send(&mut self, request: &Value) {
        self.send_payload(request.to_string().as_bytes());
    }

    /// Reads one reply; panics on timeout or close.
    pub fn recv(&mut self) -> Value {
        self.try_recv().expect("a reply before the connection closed")
    }

    /// Reads one reply; `None` if the server closed the connection.
    pub fn try_recv(&mut self) -> Option<Value> {
        self.try_recv_raw().map(|payload| serde_json::from_str(&payload).expect("replies are JSON"))
    }

    /// Waits briefly (300 ms) for an unsolicited frame, such as a refusal
    /// sent on connect; `None` if none came (or the connection closed).
    pub fn try_recv_timeout_free(&mut self) -> Option<Value> {
        self.stream.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let mut header = [0u8; 4];
        let got = self.stream.peek(&mut header).unwrap_or_default();
        self.stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
        if got == 0 {
            return None;
        }
        self.try_recv()
    }

    /// Reads one reply's payload as text, exactly as the server wrote it;
    /// `None` if the server closed the connection.
    pub fn try_recv_raw(&mut self) -> Option<String> {
        let len = match self.stream.read_u32::<BigEndian>() {
            Ok(len) => len as usize,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof || e.kind() == ErrorKind::ConnectionReset => {
                return None
            }
            Err(e) => panic!("reading a reply: {e}"),
        };
        let mut payload = vec![0; len];
        self.stream.read_exact(&mut payload).expect("reply body");
        Some(String::from_utf8(payload).expect("replies are UTF-8"))
    }

    /// Sends a request and waits for its reply.
    pub fn request(&mut self, request: Value) -> Value {
        self.send(&request);
        self.recv()
    }

    /// A second handle on the same socket, so one thread can write while
    /// another reads.
    pub fn try_clone_for_writing(&self) -> TestClient {
        TestClient { stream: self.stream.try_clone().expect("clone socket") }
    }

    /// Closes both directions.
    pub fn close(self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}

/// The error code of a reply, if it is an error.
pub fn error_code(reply: &Value) -> Option<&str> {
    reply["error"]["code"].as_str()
}

/// The original ThreadCenter job, written out again here so that the tests
/// check the server against an independent copy, not against itself.
pub fn reference_compute(n: u64) -> u64 {
    let (mut acc, mut a, mut b) = (0u64, 0u64, 1u64);
    for _ in 0..n.max(1) {
        (a, b) = (b, (a + b) % 10_000_019);
        acc = (acc + 31 * a + 17 * b) % 1_000_000_007;
    }
    acc
}

/// Runs `tc-client` with `args` (at most 120 s; killed and failed after that)
/// and returns its output.
pub fn run_client(args: &[&str]) -> std::process::Output {
    run_client_with_stdin(args, None)
}

/// Like [`run_client`], feeding `stdin` to the process.
pub fn run_client_with_stdin(args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tc-client"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tc-client starts");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    // Read both pipes on threads so a chatty child cannot block on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_thread = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status =
        wait_for_exit(&mut child, Duration::from_secs(120), &format!("tc-client {args:?} did not finish"));
    std::process::Output { status, stdout: out_thread.join().unwrap(), stderr: err_thread.join().unwrap() }
}

/// Parses a CSV report into rows of (column → cell).
pub fn read_csv(path: &std::path::Path) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_path(path).expect("a readable CSV");
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| headers.iter().map(String::from).zip(r.unwrap().iter().map(String::from)).collect())
        .collect()
}

/// A minimal HTTP/1.1 GET, written out by hand so the tests check the
/// server's HTTP with nothing of the server's own: `Connection: close`, then
/// read to the end. Returns the status code and the body.
pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("metrics port open");
    stream.set_read_timeout(Some(REPLY_TIMEOUT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a whole HTTP response");
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP head and body");
    let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status code");
    (status, body.to_string())
}

/// Prometheus text exposition → `name{labels}` → value, skipping comments.
/// Label order is kept as the server wrote it.
pub fn parse_exposition(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            (series.to_string(), value.parse().unwrap_or_else(|_| panic!("a number in {line:?}")))
        })
        .collect()
}

/// The `libonnxruntime.so` of the pip wheel, when `python3 -m pip install
/// onnxruntime` has put one here (`.ci/run` does); `None` with a note
/// otherwise.
pub fn pip_onnxruntime() -> Option<std::path::PathBuf> {
    let found = std::process::Command::new("python3")
        .args([
            "-c",
            "import glob, os, onnxruntime; \
             print(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*'))[0])",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if found.is_none() {
        eprintln!("note: onnxruntime (pip) is not installed: the onnxruntime engine is not exercised");
    }
    found
}

/// Says loudly that `test` did not run, and why; under `CI=true` a skip is
/// a failure (CI installs what every test needs).
/// Whether tract, the pure-Rust ONNX engine, is built in (the `tract`
/// feature: `cargo test --all-features`, what the README and CI run). If
/// not, `test` is [`skipped`] — a failure under `CI=true`.
pub fn tract_built_in(test: &str) -> bool {
    if !cfg!(feature = "tract") {
        skipped(test, "tract is not built in (run the tests with cargo test --all-features)");
    }
    cfg!(feature = "tract")
}

pub fn skipped(test: &str, why: &str) {
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{test} cannot run under CI: {why}");
    eprintln!("SKIPPED: {test}: {why}; this test did not run");
}

/// Whether `program` runs here (`program --version` succeeds). If it does
/// not, `test` is [`skipped`] naming what to install — a failure under
/// `CI=true`.
pub fn tool_available(test: &str, program: &str, install: &str) -> bool {
    let runs = std::process::Command::new(program)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !runs {
        skipped(test, &format!("{program} is not installed ({install})"));
    }
    runs
}
