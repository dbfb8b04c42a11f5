//! TLS on the job port: requests over TLS in both modes, mutual TLS
//! accepted and refused, plain text on a TLS port closed and counted, a
//! stalled handshake cut off, and bad certificate files refused at start.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::TlsFiles;
use common::TestServer;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};

/// A framed-JSON client over TLS, trusting the test CA.
struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
}

impl TlsClient {
    fn connect(addr: SocketAddr, files: &TlsFiles, with_certificate: bool) -> std::io::Result<TlsClient> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&files.ca).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = if with_certificate {
            let chain = vec![CertificateDer::from_pem_file(&files.client_cert).unwrap()];
            let key = PrivateKeyDer::from_pem_file(&files.client_key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        let session =
            rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let socket = TcpStream::connect(addr)?;
        socket.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut stream = rustls::StreamOwned::new(session, socket);
        // Finish the handshake now, so a refusal shows here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient { stream })
    }

    fn request(&mut self, request: Value) -> std::io::Result<Value> {
        let payload = serde_json::to_vec(&request).unwrap();
        self.stream.write_all(&(payload.len() as u32).to_be_bytes())?;
        self.stream.write_all(&payload)?;
        self.stream.flush()?;
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header)?;
        let mut body = vec![0u8; u32::from_be_bytes(header) as usize];
        self.stream.read_exact(&mut body)?;
        Ok(serde_json::from_slice(&body).unwrap())
    }
}

fn tls_server(mode: &str, files: &TlsFiles, extra: &[&str]) -> TestServer {
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let mut args = vec!["--tls-cert", cert, "--tls-key", key];
    args.extend_from_slice(extra);
    TestServer::start(mode, 2, &args)
}

fn sample_image() -> String {
    use base64::Engine;
    let bytes =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("models/samples/fire-1.png")).unwrap();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Waits (boundedly) for the peer to close: true if it did.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // an alert, then the close
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

#[test]
fn ping_compute_and_predict_over_tls_in_both_modes() {
    let files = TlsFiles::generate();
    for mode in common::MODES {
        let server = tls_server(mode, &files, &[]);
        let mut client = TlsClient::connect(server.addr, &files, false).unwrap();
        assert_eq!(client.request(json!({"id": 1, "cmd": "ping"})).unwrap()["pong"], true);
        let reply = client.request(json!({"id": 2, "cmd": "compute", "n": 1000})).unwrap();
        assert!(reply["result"].is_u64(), "{mode}: {reply}");
        let reply = client
            .request(json!({"id": 3, "cmd": "predict", "image_b64": sample_image(), "filename": "f.png"}))
            .unwrap();
        assert_eq!(reply["result"]["fire_detected"], true, "{mode}: {reply}");
        // Many requests back to back: the writer thread and inline replies share the session.
        for id in 4..200 {
            let reply = client.request(json!({"id": id, "cmd": "compute", "n": 100})).unwrap();
            assert_eq!(reply["id"], id, "{mode}: {reply}");
        }
    }
}

#[test]
fn mutual_tls_accepts_a_certified_client_and_refuses_one_without() {
    let files = TlsFiles::generate();
    let server = tls_server("threads", &files, &["--tls-client-ca", files.ca.to_str().unwrap()]);
    let mut certified = TlsClient::connect(server.addr, &files, true).unwrap();
    assert_eq!(certified.request(json!({"id": 1, "cmd": "ping"})).unwrap()["pong"], true);
    // Without a certificate the handshake (or the first read after it, in
    // TLS 1.3, where the server checks the client's last flight) fails.
    let refused = TlsClient::connect(server.addr, &files, false)
        .and_then(|mut client| client.request(json!({"id": 2, "cmd": "ping"})));
    assert!(refused.is_err(), "a client without a certificate is refused: {refused:?}");
    let stats = certified.request(json!({"id": 3, "cmd": "stats"})).unwrap();
    assert!(stats["result"]["connections"]["tls_failed"].as_u64().unwrap() >= 1, "{stats}");
}

#[test]
fn plain_text_on_a_tls_port_and_a_stalled_handshake_are_closed_and_counted() {
    let files = TlsFiles::generate();
    let server = tls_server("threads", &files, &["--read-timeout", "1s"]);
    // A plain-text request: closed promptly, never answered, never hung.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    let payload = br#"{"id":1,"cmd":"ping"}"#;
    plain.write_all(&(payload.len() as u32).to_be_bytes()).unwrap();
    plain.write_all(payload).unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(5)), "plain text on a TLS port is closed");
    // A client that connects and never starts its handshake: cut off after
    // the read timeout.
    let mut silent = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(10)), "a stalled handshake is cut off");
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the read timeout");
    let mut client = TlsClient::connect(server.addr, &files, false).unwrap();
    let stats = client.request(json!({"id": 1, "cmd": "stats"})).unwrap();
    assert!(stats["result"]["connections"]["tls_failed"].as_u64().unwrap() >= 2, "{stats}");
}

#[test]
fn bad_certificate_files_are_refused_at_start_naming_the_file() {
    let files = TlsFiles::generate();
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tc-server")).args(args).output().unwrap();
        assert!(!output.status.success(), "{args:?}");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let (cert, key) = (files.cert.to_str().unwrap(), files.key.to_str().unwrap());
    let stderr = run(&["--port", "0", "--tls-cert", "/nonexistent.pem", "--tls-key", key]);
    assert!(stderr.contains("--tls-cert /nonexistent.pem"), "{stderr}");
    let stderr = run(&["--port", "0", "--tls-cert", key, "--tls-key", key]);
    assert!(stderr.contains("holds no certificate"), "{stderr}");
    let stderr = run(&["--port", "0", "--tls-cert", cert, "--tls-key", cert]);
    assert!(stderr.contains("--tls-key") && stderr.contains("no usable PEM private key"), "{stderr}");
    let client_key = files.client_key.to_str().unwrap();
    let stderr = run(&["--port", "0", "--tls-cert", cert, "--tls-key", client_key]);
    assert!(stderr.contains("do not make a usable pair"), "{stderr}");
}

fn tc_client(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tc-client")).args(args).output().unwrap()
}

#[test]
fn tc_client_speaks_tls_for_call_the_load_generator_and_the_embedded_server() {
    let files = TlsFiles::generate();
    let server = tls_server("threads", &files, &["--tls-client-ca", files.ca.to_str().unwrap()]);
    let port = server.addr.port().to_string();
    let (ca, cert, key) =
        (files.ca.to_str().unwrap(), files.client_cert.to_str().unwrap(), files.client_key.to_str().unwrap());
    let mtls = [
        "--port",
        &port,
        "--tls",
        "--tls-ca",
        ca,
        "--tls-server-name",
        "localhost",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ];
    // call, with mutual TLS.
    let mut args = vec!["call"];
    args.extend_from_slice(&mtls);
    args.push(r#"{"cmd":"ping"}"#);
    let out = tc_client(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"pong\":true"));
    // The load generator: every request answered over TLS.
    let report = tempfile::NamedTempFile::new().unwrap();
    let mut args = mtls.to_vec();
    args.extend_from_slice(&[
        "-n",
        "100",
        "-c",
        "2",
        "--size",
        "100",
        "--json",
        report.path().to_str().unwrap(),
    ]);
    let out = tc_client(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(json["counts"]["ok"], 200, "100 per connection: {json}");
    // Without a client certificate the server refuses the client.
    let out = tc_client(&[
        "call",
        "--port",
        &port,
        "--tls",
        "--tls-ca",
        ca,
        "--tls-server-name",
        "localhost",
        r#"{"cmd":"ping"}"#,
    ]);
    assert!(!out.status.success());
    // Without the CA (system roots) the server's certificate is not trusted.
    let plain_server = tls_server("threads", &files, &[]);
    let plain_port = plain_server.addr.port().to_string();
    let out = tc_client(&["call", "--port", &plain_port, "--tls", r#"{"cmd":"ping"}"#]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TLS"), "{}", String::from_utf8_lossy(&out.stderr));
    // --tls-insecure accepts it, and says so loudly.
    let out = tc_client(&["call", "--port", &plain_port, "--tls", "--tls-insecure", r#"{"cmd":"ping"}"#]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING"));
    // --embedded --tls: a throwaway certificate for the run.
    let report = tempfile::NamedTempFile::new().unwrap();
    let out = tc_client(&[
        "--embedded",
        "--tls",
        "--mode",
        "threads",
        "--workers",
        "1",
        "-n",
        "50",
        "-c",
        "2",
        "--size",
        "100",
        "--json",
        report.path().to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap();
    assert_eq!(json["counts"]["ok"], 100, "50 per connection: {json}");
    assert_eq!(json["server"]["embedded"], true, "{json}");
}

#[test]
fn the_metrics_endpoint_speaks_https_with_the_job_ports_certificate() {
    let files = TlsFiles::generate();
    let server = tls_server(
        "threads",
        &files,
        &["--metrics-addr", "127.0.0.1:0", "--metrics-tls", "--metrics-token", "t0k"],
    );
    let addr = server.metrics_addr.expect("metrics address printed");
    let get = |path: &str, token: Option<&str>| -> String {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_file(&files.ca).unwrap()).unwrap();
        let config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        let session =
            rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
                .unwrap();
        let socket = TcpStream::connect(addr).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut stream = rustls::StreamOwned::new(session, socket);
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}\r\n").unwrap();
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response);
        response
    };
    assert!(get("/healthz", None).starts_with("HTTP/1.1 200"));
    assert!(get("/metrics", None).starts_with("HTTP/1.1 401"));
    let metrics = get("/metrics", Some("t0k"));
    assert!(metrics.starts_with("HTTP/1.1 200") && metrics.contains("connections_tls_failed"), "{metrics}");
    // Plain HTTP on the HTTPS port gets nothing useful, and the port stays up.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").unwrap();
    assert!(closed_within(&mut plain, Duration::from_secs(10)));
    assert!(get("/readyz", None).starts_with("HTTP/1.1 200"));
}
