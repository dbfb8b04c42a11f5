//! A real `nats-server` per test (JetStream on, loopback only, a random port
//! written to a ports file), and `tc-worker` hosts joined to it.
//!
//! When `nats-server` is not installed, `NatsServer::start` returns `None`
//! and the test says so loudly and passes — except under `CI=true`, where a
//! missing engine is a failure (`.ci/run` installs it).

#[cfg(feature = "nats")]
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server`, stopped (and its store removed) on drop.
pub struct NatsServer {
    child: Child,
    pub url: String,
    store: tempfile::TempDir,
    /// The flags it was started with, kept for restarts.
    extra: Vec<String>,
}

fn nats_binary() -> Option<PathBuf> {
    ["/usr/sbin/nats-server", "/usr/bin/nats-server", "/usr/local/bin/nats-server"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
}

impl NatsServer {
    /// Starts one, or `None` (with a loud note) when it is not installed.
    pub fn start() -> Option<NatsServer> {
        Self::start_with(&[])
    }

    /// As [`NatsServer::start`], with more `nats-server` flags (`--user`,
    /// `--tls`, ...).
    pub fn start_with(extra: &[&str]) -> Option<NatsServer> {
        let Some(binary) = nats_binary() else {
            super::skipped(
                std::thread::current().name().unwrap_or("this NATS test"),
                "nats-server is not installed (apt-get install -y nats-server)",
            );
            return None;
        };
        let store = tempfile::tempdir().expect("a temporary directory");
        let child = spawn(&binary, store.path(), "-1", extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        let url = loop {
            let ports = std::fs::read_dir(store.path())
                .ok()
                .and_then(|entries| {
                    entries.flatten().find(|e| e.file_name().to_string_lossy().ends_with(".ports"))
                })
                .and_then(|entry| std::fs::read_to_string(entry.path()).ok())
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|ports| ports["nats"][0].as_str().map(str::to_string));
            if let Some(url) = ports {
                break url;
            }
            assert!(Instant::now() < deadline, "nats-server did not write its ports file");
            std::thread::sleep(Duration::from_millis(20));
        };
        Some(NatsServer { child, url, store, extra: extra.iter().map(|s| s.to_string()).collect() })
    }

    /// Kills the server and starts it again on the same port with the same
    /// store: what an operator's restart looks like to the farm.
    pub fn restart(&mut self) {
        self.restart_after(libc::SIGKILL, Duration::ZERO);
    }

    /// Stops the server with `signal` (SIGTERM: a graceful stop; SIGKILL: a
    /// crash), waits for it to exit, leaves the farm without a broker for
    /// `outage`, and starts it again on the same port with the same store.
    pub fn restart_after(&mut self, signal: i32, outage: Duration) {
        self.stop_with(signal);
        std::thread::sleep(outage);
        let port = self.url.rsplit(':').next().unwrap().to_string();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        self.child = spawn(&nats_binary().unwrap(), self.store.path(), &port, &extra);
        let deadline = Instant::now() + Duration::from_secs(10);
        let address = format!("127.0.0.1:{port}");
        while std::net::TcpStream::connect(&address).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not come back on {address}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl NatsServer {
    /// Stops the server with `signal` and waits (at most 30 s) for it to exit.
    pub fn stop_with(&mut self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many messages a JetStream stream holds now (its `STREAM.INFO`).
    pub fn stream_messages(&self, stream: &str) -> u64 {
        let mut nats = RawNats::connect(&self.url, None);
        let info = nats.request(&format!("$JS.API.STREAM.INFO.{stream}"), b"");
        let info: serde_json::Value = serde_json::from_slice(&info).expect("STREAM.INFO is JSON");
        info["state"]["messages"].as_u64().unwrap_or_else(|| panic!("no stream {stream}: {info}"))
    }
}

/// A message as a raw NATS client sees it.
#[derive(Debug, Clone)]
pub struct RawMessage {
    pub subject: String,
    /// The header block as sent (`NATS/1.0\r\nName: value\r\n...\r\n\r\n`), empty if none.
    pub headers: Vec<u8>,
    pub payload: Vec<u8>,
}

/// A NATS client speaking the text protocol itself — no client library, so
/// a test sends exactly the bytes a stranger (or a forger) would, and sees
/// the server's own `-ERR` lines (a permissions violation, say).
pub struct RawNats {
    writer: std::net::TcpStream,
    reader: std::io::BufReader<std::net::TcpStream>,
    next_sid: u32,
    /// `-ERR` lines seen so far.
    pub errors: Vec<String>,
}

impl RawNats {
    /// Connects (with `user`/`password` when given); reads every wait with a 5 s cap.
    pub fn connect(url: &str, user: Option<(&str, &str)>) -> RawNats {
        use std::io::{BufRead, Write};
        let address = url.trim_start_matches("nats://");
        let stream = std::net::TcpStream::connect(address).expect("connect to nats-server");
        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = std::io::BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).expect("INFO line");
        assert!(line.starts_with("INFO"), "{line}");
        let auth = user.map_or(String::new(), |(u, p)| format!(",\"user\":\"{u}\",\"pass\":\"{p}\""));
        write!(writer, "CONNECT {{\"verbose\":false,\"headers\":true{auth}}}\r\n").unwrap();
        let mut nats = RawNats { writer, reader, next_sid: 1, errors: Vec::new() };
        nats.until_pong();
        nats
    }

    /// Publishes, with a header block (may be empty) and an optional reply subject.
    pub fn publish(&mut self, subject: &str, reply: Option<&str>, headers: &[u8], payload: &[u8]) {
        use std::io::Write;
        let reply = reply.map_or(String::new(), |r| format!(" {r}"));
        if headers.is_empty() {
            write!(self.writer, "PUB {subject}{reply} {}\r\n", payload.len()).unwrap();
        } else {
            write!(
                self.writer,
                "HPUB {subject}{reply} {} {}\r\n",
                headers.len(),
                headers.len() + payload.len()
            )
            .unwrap();
            self.writer.write_all(headers).unwrap();
        }
        self.writer.write_all(payload).unwrap();
        self.writer.write_all(b"\r\n").unwrap();
    }

    /// Subscribes; messages come from [`RawNats::next_message`].
    pub fn subscribe(&mut self, subject: &str) {
        use std::io::Write;
        write!(self.writer, "SUB {subject} {}\r\n", self.next_sid).unwrap();
        self.next_sid += 1;
    }

    /// Sends PING and reads up to the PONG: everything sent before has been
    /// processed by the server (and any `-ERR` for it is in `errors`).
    pub fn until_pong(&mut self) -> Vec<RawMessage> {
        use std::io::Write;
        self.writer.write_all(b"PING\r\n").unwrap();
        let mut messages = Vec::new();
        while let Some(message) = self.read_one(true) {
            messages.push(message);
        }
        messages
    }

    /// The next message, waiting at most 5 s.
    pub fn next_message(&mut self) -> Option<RawMessage> {
        self.read_one(false)
    }

    /// A request and its first reply's payload.
    pub fn request(&mut self, subject: &str, payload: &[u8]) -> Vec<u8> {
        let inbox = format!("_INBOX.raw{}", self.next_sid);
        self.subscribe(&inbox);
        self.publish(subject, Some(&inbox), b"", payload);
        loop {
            let message =
                self.next_message().unwrap_or_else(|| panic!("no reply to {subject}: {:?}", self.errors));
            if message.subject == inbox {
                return message.payload;
            }
        }
    }

    /// [`RawNats::request`] with a header block.
    pub fn request_with_headers(&mut self, subject: &str, headers: &[u8], payload: &[u8]) -> Vec<u8> {
        let inbox = format!("_INBOX.raw{}", self.next_sid);
        self.subscribe(&inbox);
        self.publish(subject, Some(&inbox), headers, payload);
        loop {
            let message =
                self.next_message().unwrap_or_else(|| panic!("no reply to {subject}: {:?}", self.errors));
            if message.subject == inbox {
                return message.payload;
            }
        }
    }

    /// Reads lines until a message (returned) or, with `to_pong`, a PONG (None).
    fn read_one(&mut self, to_pong: bool) -> Option<RawMessage> {
        use std::io::{BufRead, Read, Write};
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).unwrap_or(0) == 0 {
                return None;
            }
            let text = line.trim_end();
            if text == "PING" {
                self.writer.write_all(b"PONG\r\n").unwrap();
            } else if text == "PONG" {
                if to_pong {
                    return None;
                }
            } else if let Some(error) = text.strip_prefix("-ERR ") {
                self.errors.push(error.to_string());
            } else if let Some(rest) = text.strip_prefix("MSG ").or_else(|| text.strip_prefix("HMSG ")) {
                let parts: Vec<&str> = rest.split_whitespace().collect();
                let with_headers = text.starts_with("HMSG");
                let total: usize = parts.last().unwrap().parse().unwrap();
                let header_len: usize =
                    if with_headers { parts[parts.len() - 2].parse().unwrap() } else { 0 };
                let mut body = vec![0; total + 2];
                self.reader.read_exact(&mut body).unwrap();
                body.truncate(total);
                let payload = body.split_off(header_len);
                return Some(RawMessage { subject: parts[0].to_string(), headers: body, payload });
            }
        }
    }
}

/// `nats-server` with JetStream, on loopback only, at `port` (-1: any).
fn spawn(binary: &std::path::Path, store: &std::path::Path, port: &str, extra: &[&str]) -> Child {
    let dir = store.to_str().unwrap();
    Command::new(binary)
        .args(["-js", "-sd", dir, "-a", "127.0.0.1", "-p", port, "--ports_file_dir", dir])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nats-server starts")
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `tc-worker` host, killed on drop. tc-worker is built only with the
/// `nats` feature (the test command has it: cargo test --all-features).
#[cfg(feature = "nats")]
pub struct WorkerHost {
    pub child: Child,
    /// Its log, shown only if the test fails.
    _log: super::ChildLog,
}

#[cfg(feature = "nats")]
impl WorkerHost {
    /// Starts `tc-worker --nats URL --name NAME --mode MODE --workers N EXTRA...`.
    pub fn start(url: &str, name: &str, mode: &str, workers: usize, extra: &[&str]) -> WorkerHost {
        let log = super::ChildLog::new();
        let child =
            command(url, name, mode, workers, extra).stdout(Stdio::null()).stderr(log.stdio()).spawn();
        WorkerHost { child: child.expect("tc-worker starts"), _log: log }
    }

    /// Starts a host with `--metrics-addr 127.0.0.1:0` and returns it with
    /// the address it printed.
    pub fn start_with_metrics(url: &str, name: &str, mode: &str, workers: usize) -> (WorkerHost, SocketAddr) {
        Self::start_with_metrics_and(url, name, mode, workers, &[])
    }

    /// As [`WorkerHost::start_with_metrics`], with more flags (e.g. HTTPS).
    pub fn start_with_metrics_and(
        url: &str,
        name: &str,
        mode: &str,
        workers: usize,
        extra: &[&str],
    ) -> (WorkerHost, SocketAddr) {
        use std::io::BufRead;
        let log = super::ChildLog::new();
        let mut command = command(url, name, mode, workers, extra);
        command.args(["--metrics-addr", "127.0.0.1:0"]).stdout(Stdio::piped()).stderr(log.stdio());
        let mut child = command.spawn().expect("tc-worker starts");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("a line on stdout");
        let addr = line
            .trim()
            .strip_prefix("metrics on http://")
            .or_else(|| line.trim().strip_prefix("metrics on https://"))
            .and_then(|rest| rest.strip_suffix("/metrics"))
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .expect("an address");
        (WorkerHost { child, _log: log }, addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `tc-worker --nats URL --name NAME --mode MODE --workers N EXTRA...`,
/// quiet. Tests run jobs of several seconds (n up to 10^9, the same limit
/// their gateways take), longer than a host's default `--max-n`, so that
/// limit is raised unless the test sets its own.
#[cfg(feature = "nats")]
fn command(url: &str, name: &str, mode: &str, workers: usize, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tc-worker"));
    command
        .args(["--nats", url, "--name", name, "--mode", mode, "--workers", &workers.to_string()])
        .args(["--log-level", "warn"])
        .args(extra)
        .stdin(Stdio::null());
    if !extra.contains(&"--max-n") {
        command.args(["--max-n", "1000000000"]);
    }
    command
}

#[cfg(feature = "nats")]
impl Drop for WorkerHost {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends one request over NATS's text protocol (no client library: the test
/// checks what any NATS tool would see) and collects up to `expect` replies,
/// waiting at most 5 s for them.
pub fn request_all(url: &str, subject: &str, expect: usize) -> Vec<serde_json::Value> {
    use std::io::{BufRead, BufReader, Read, Write};
    let address = url.trim_start_matches("nats://");
    let stream = std::net::TcpStream::connect(address).expect("connect to nats-server");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).expect("INFO line");
    assert!(line.starts_with("INFO"), "{line}");
    write!(
        writer,
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.test 1\r\nPUB {subject} _INBOX.test 0\r\n\r\n"
    )
    .unwrap();
    let mut replies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while replies.len() < expect && Instant::now() < deadline {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        if line.starts_with("PING") {
            writer.write_all(b"PONG\r\n").unwrap();
            continue;
        }
        let Some(header) = line.strip_prefix("MSG ") else { continue };
        let size: usize = header.split_whitespace().last().unwrap().parse().unwrap();
        let mut payload = vec![0; size + 2];
        reader.read_exact(&mut payload).unwrap();
        replies.push(serde_json::from_slice(&payload[..size]).expect("a JSON reply"));
    }
    replies
}

/// A test CA, a server certificate for localhost and 127.0.0.1, and a
/// client certificate, as PEM files in a temporary directory (removed on drop).
pub struct TlsFiles {
    pub dir: tempfile::TempDir,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl TlsFiles {
    pub fn generate() -> TlsFiles {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "ThreadCenter test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().unwrap()));
        let cert = params.signed_by(&key, &ca).unwrap();
        let client_key = rcgen::KeyPair::generate().unwrap();
        let client_cert = rcgen::CertificateParams::new(vec!["test-client".to_string()])
            .unwrap()
            .signed_by(&client_key, &ca)
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let (ca, cert, key) = (
            write("ca.pem", ca.pem()),
            write("server.pem", cert.pem()),
            write("server.key", key.serialize_pem()),
        );
        let (client_cert, client_key) =
            (write("client.pem", client_cert.pem()), write("client.key", client_key.serialize_pem()));
        TlsFiles { dir, ca, cert, key, client_cert, client_key }
    }
}

/// A gateway with no local worker, on `nats`.
pub fn start_gateway(nats: &NatsServer, extra: &[&str]) -> super::TestServer {
    let mut args = vec!["--port", "0", "--workers", "0", "--nats", &nats.url, "--log-level", "warn"];
    args.extend_from_slice(extra);
    super::TestServer::start_with(&args, &[])
}

/// Waits until the gateway has heard from `count` live hosts.
pub fn wait_for_hosts(gateway: &super::TestServer, count: usize) -> serde_json::Value {
    gateway.wait_for_stats(&format!("{count} live hosts"), |stats| {
        stats["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.iter().filter(|h| h["alive"] == true).count() == count)
    })
}
