//! One blocking framed connection to a ThreadCenter server, and the
//! one-shot `call` used by `tc-client call`.
//!
//! A ThreadCenter server speaks only when asked, and answers every request
//! with a frame (a 4-byte length, then JSON). So the first reply on a
//! connection tells whether the other end is one: text where the length
//! should be (NATS's `INFO {...}` greeting, `HTTP/1.1 400`, redis's `-ERR`)
//! is another kind of server, and so is silence after a request any
//! ThreadCenter server answers at once (`ping`, `stats`...). Either way the
//! error says "this does not look like a ThreadCenter server" and what was
//! seen, instead of waiting out the whole timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use super::tls::ClientTls;
use crate::error::{Error, Result};
use crate::frame::{self, DEFAULT_MAX_FRAME};
use crate::transport::{Transport, TransportIo};

/// `Read` over a connection's shared transport, owned (for a `BufReader`).
struct SharedReader(Arc<Transport>);

impl std::io::Read for SharedReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

/// One blocking connection to a server: write request frames, read reply
/// frames. Every read and write is bounded by the timeout given at connect.
pub(crate) struct ServerConnection {
    target: String,
    transport: Arc<Transport>,
    reader: BufReader<SharedReader>,
    payload: Vec<u8>,
    /// Every read's deadline (the timeout given at connect).
    timeout: Duration,
    /// Whether a reply has come on this connection yet.
    replied: bool,
    /// The request awaiting the first reply, when it is one the server
    /// answers without a worker (see [`answers_at_once`]), e.g. `ping`.
    awaiting_quick_reply: Option<String>,
}

/// How long the first reply on a connection may take when the request is
/// one any ThreadCenter server answers at once (`ping`, `stats`, `health`,
/// `auth`, `model`, `models`): silence past this means the other end is not
/// a ThreadCenter server. Generous, so a loaded machine is not mistaken for
/// one.
const FIRST_REPLY_DEADLINE: Duration = Duration::from_secs(5);

impl ServerConnection {
    /// Connects to `host:port`, over TLS when `tls` is given (the handshake
    /// is done before this returns).
    ///
    /// # Errors
    /// [`Error::Io`] naming the address when the connection or the TLS
    /// handshake fails.
    pub(crate) fn connect(host: &str, port: u16, timeout: Duration, tls: Option<&ClientTls>) -> Result<Self> {
        let target = format!("{host}:{port}");
        let context = |what: &str| format!("{what} {target}");
        let addrs = (host, port).to_socket_addrs().map_err(|e| Error::io(context("resolving"), e))?;
        let mut last_error = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true).map_err(|e| Error::io(context("configuring"), e))?;
                    stream
                        .set_read_timeout(Some(timeout))
                        .map_err(|e| Error::io(context("configuring"), e))?;
                    stream
                        .set_write_timeout(Some(timeout))
                        .map_err(|e| Error::io(context("configuring"), e))?;
                    let transport = Arc::new(match tls {
                        None => Transport::Plain(stream),
                        Some(tls) => tls.connect(stream, host)?,
                    });
                    let reader = BufReader::new(SharedReader(Arc::clone(&transport)));
                    return Ok(ServerConnection {
                        target,
                        transport,
                        reader,
                        payload: Vec::new(),
                        timeout,
                        replied: false,
                        awaiting_quick_reply: None,
                    });
                }
                Err(e) => last_error = Some(e),
            }
        }
        let mut e = last_error.unwrap_or_else(|| std::io::Error::other("the name resolved to no address"));
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            // The most common first-run mistake: no server is running. Only
            // the benchmark has --embedded; it adds that hint itself
            // ([`suggest_embedded`]).
            e = std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; is tc-server running there? Start one with `tc-server --port {port}` \
                     in another terminal"
                ),
            );
        }
        Err(Error::io(context("connecting to"), e))
    }

    /// Sends one request (a JSON payload) as a frame.
    ///
    /// # Errors
    /// [`Error::Io`] when the write fails or times out.
    pub(crate) fn send(&mut self, payload: &[u8]) -> Result<()> {
        self.awaiting_quick_reply = if self.replied { None } else { answers_at_once(payload) };
        TransportIo(&self.transport)
            .write_all(&frame::encode(payload))
            .map_err(|e| Error::io(format!("sending to {}", self.target), e))
    }

    /// Whether the server has spoken (or hung up) while no request was out:
    /// a server answers only when asked, so this is its goodbye (an
    /// `IDLE_TIMEOUT` frame, or a closed connection) and the connection is
    /// of no more use.
    pub(crate) fn closed_by_server(&self) -> bool {
        !self.reader.buffer().is_empty() || self.transport.has_pending_input()
    }

    /// Presents `token` to a server started with `--auth-token`.
    ///
    /// # Errors
    /// [`Error::Protocol`] when the server refuses it.
    pub(crate) fn authenticate(&mut self, token: &str) -> Result<()> {
        let request = serde_json::json!({"id": "tc-client-auth", "cmd": "auth", "token": token});
        self.send(request.to_string().as_bytes())?;
        let target = self.target.clone();
        let reply: serde_json::Value = serde_json::from_slice(self.receive()?)
            .map_err(|e| Error::Protocol(format!("{target}: the auth reply is not JSON: {e}")))?;
        if reply["result"]["ok"] == true {
            Ok(())
        } else {
            Err(Error::Protocol(format!("{target} refused the auth token: {}", reply["error"]["message"])))
        }
    }

    /// Gives up the framing and returns the transport (for the load
    /// generator, which reads and writes from two threads).
    pub(crate) fn into_stream(self) -> Arc<Transport> {
        self.transport
    }

    /// Waits for the next reply frame and returns its payload.
    ///
    /// # Errors
    /// [`Error::Io`] on a timeout; [`Error::Protocol`] when the server closed
    /// the connection or sent a malformed frame, or when the other end does
    /// not look like a ThreadCenter server (text where a frame should start,
    /// or silence after a request it answers at once).
    pub(crate) fn receive(&mut self) -> Result<&[u8]> {
        let first = !self.replied;
        let quick = self.awaiting_quick_reply.take();
        let deadline = match quick {
            Some(_) => self.timeout.min(FIRST_REPLY_DEADLINE),
            None => self.timeout,
        };
        if deadline != self.timeout {
            self.set_read_timeout(deadline)?;
        }
        let outcome = self.read_reply(first, quick.as_deref(), deadline);
        if deadline != self.timeout {
            self.set_read_timeout(self.timeout)?;
        }
        outcome?;
        self.replied = true;
        Ok(&self.payload)
    }

    fn set_read_timeout(&self, timeout: Duration) -> Result<()> {
        self.transport
            .set_read_timeout(Some(timeout))
            .map_err(|e| Error::io(format!("configuring the connection to {}", self.target), e))
    }

    /// Reads one reply frame into `self.payload`.
    fn read_reply(&mut self, first: bool, quick: Option<&str>, deadline: Duration) -> Result<()> {
        let not_threadcenter = |target: &str, seen: String| {
            Error::Protocol(format!("{target}: this does not look like a ThreadCenter server: {seen}"))
        };
        // Look at the first bytes before reading them as a frame header.
        match self.reader.fill_buf() {
            Ok(bytes) if looks_like_text(bytes) => {
                let seen = format!(
                    "it sent {:?}, text where a reply frame's 4-byte length should be",
                    first_line(bytes)
                );
                return Err(not_threadcenter(&self.target, seen));
            }
            Ok(_) => {}
            Err(e) if is_timeout(&e) && quick.is_some() => {
                let command = quick.unwrap_or_default();
                let seen = format!(
                    "no reply to {command} within {} s (a ThreadCenter server answers {command} at once)",
                    deadline.as_secs_f64()
                );
                return Err(not_threadcenter(&self.target, seen));
            }
            Err(e) if is_timeout(&e) => return Err(self.no_reply(first, deadline)),
            Err(e) => return Err(Error::io(format!("waiting for a reply from {}", self.target), e)),
        }
        match frame::read_frame(&mut self.reader, DEFAULT_MAX_FRAME, &mut self.payload) {
            Ok(true) => Ok(()),
            // A ThreadCenter server answers every request it read, even a
            // refusal (BUSY, UNAUTHORIZED) comes as a frame before it hangs
            // up; a foreign server that hangs up on a frame (many HTTP
            // servers, among them a --metrics-addr port) is told apart here.
            Ok(false) if first && quick.is_some() => {
                let command = quick.unwrap_or_default();
                let seen = format!(
                    "it closed the connection without answering {command}, which a ThreadCenter server \
                     answers at once (an HTTP port, such as a --metrics-addr one, does this)"
                );
                Err(not_threadcenter(&self.target, seen))
            }
            Ok(false) => {
                Err(Error::Protocol(format!("{} closed the connection before replying", self.target)))
            }
            Err(frame::FrameError::Io(e)) if is_timeout(&e) => Err(self.no_reply(first, deadline)),
            Err(frame::FrameError::Io(e)) => {
                Err(Error::io(format!("waiting for a reply from {}", self.target), e))
            }
            Err(e @ frame::FrameError::TooLarge { .. }) if first => {
                Err(not_threadcenter(&self.target, format!("its first reply is not a frame ({e})")))
            }
            Err(e) => Err(Error::Protocol(format!("bad reply from {}: {e}", self.target))),
        }
    }

    /// The error for a reply that did not come within the timeout.
    fn no_reply(&self, first: bool, waited: Duration) -> Error {
        let mut message = format!("no reply from {} within {} s", self.target, waited.as_secs_f64());
        if first {
            // A slow job and a server that is not ThreadCenter look the same
            // from here; `ping` tells them apart.
            let (host, port) = self.target.rsplit_once(':').unwrap_or_default();
            let host = if host == "127.0.0.1" { String::new() } else { format!("--host {host} ") };
            message.push_str(&format!(
                "; a ThreadCenter server answers ping at once (tc-client call {host}--port {port} ping): \
                 if that gets no reply either, this is not one"
            ));
        }
        Error::Protocol(message)
    }
}

/// Whether `error` is a read deadline passing (`WouldBlock` on Linux).
fn is_timeout(error: &std::io::Error) -> bool {
    matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)
}

/// Whether the first bytes of a reply are text. A reply frame starts with
/// its length in 4 big-endian bytes, so its first byte is 0 for any frame
/// under 16 MiB; a printable first byte would announce 512 MiB or more.
fn looks_like_text(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|b| b.is_ascii_graphic())
}

/// The first line of what a foreign server sent, short enough for a message.
fn first_line(bytes: &[u8]) -> String {
    const SHOWN: usize = 60;
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_string(),
    }
}

/// The command of a request every ThreadCenter server answers without a
/// worker, at once (its reply, or an error reply, comes in milliseconds);
/// `None` for any other request.
fn answers_at_once(payload: &[u8]) -> Option<String> {
    /// The two fields that say what a request is, in either dialect.
    #[derive(serde::Deserialize)]
    struct Envelope {
        cmd: Option<String>,
        method: Option<String>,
    }
    let name = match serde_json::from_slice::<Envelope>(payload).ok()? {
        Envelope { cmd: Some(cmd), .. } => cmd,
        Envelope { method: Some(method), .. } => method,
        _ => return None,
    };
    const AT_ONCE: [&str; 9] = [
        "ping",
        "stats",
        "health",
        "auth",
        "model",
        "models",
        "health_check",
        "get_current_model",
        "get_models",
    ];
    AT_ONCE.contains(&name.as_str()).then_some(name)
}

/// Adds the benchmark's hint to a refused connection: `--embedded` starts a
/// farm for the run (only the benchmark has it, so only it says so).
pub(crate) fn suggest_embedded(error: Error) -> Error {
    match error {
        Error::Io { context, source } if source.kind() == std::io::ErrorKind::ConnectionRefused => {
            let source = std::io::Error::new(
                source.kind(),
                format!("{source}, or add --embedded to measure a farm started for the run"),
            );
            Error::Io { context, source }
        }
        other => other,
    }
}

/// Sends one request (a JSON object) and returns the reply's JSON text.
/// When the request has no `"id"`, one is added (`"id": 1`) so the reply can
/// be matched. With a token, the connection authenticates first.
///
/// # Errors
/// A request that is not a JSON object, or any connection error.
pub(crate) fn call(
    host: &str,
    port: u16,
    mut value: serde_json::Value,
    timeout: Duration,
    token: Option<&str>,
    tls: Option<&ClientTls>,
) -> Result<String> {
    let object = value
        .as_object_mut()
        .ok_or_else(|| Error::Usage("the request must be a JSON object, e.g. '{\"cmd\":\"ping\"}'".into()))?;
    object.entry("id").or_insert(serde_json::Value::from(1));
    let payload = serde_json::to_vec(&value).map_err(|e| Error::Usage(e.to_string()))?;

    let mut connection = ServerConnection::connect(host, port, timeout, tls)?;
    if let Some(token) = token {
        connection.authenticate(token)?;
    }
    connection.send(&payload)?;
    let reply = connection.receive()?;
    String::from_utf8(reply.to_vec()).map_err(|_| Error::Protocol("the reply is not valid UTF-8".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_told_from_a_frame_header() {
        assert!(looks_like_text(b"INFO {\"server_id\":\"N\"}\r\n"));
        assert!(looks_like_text(b"-ERR unknown command\r\n"));
        assert!(!looks_like_text(&frame::encode(br#"{"id":1,"result":8360}"#)));
        assert!(!looks_like_text(b""));
        assert_eq!(
            first_line(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"),
            "HTTP/1.1 400 Bad Request"
        );
        assert_eq!(first_line(&[b'x'; 100]), format!("{}...", "x".repeat(60)));
    }

    #[test]
    fn only_requests_without_a_worker_get_the_short_first_deadline() {
        assert_eq!(answers_at_once(br#"{"id":1,"cmd":"ping"}"#).as_deref(), Some("ping"));
        assert_eq!(answers_at_once(br#"{"method":"get_models","params":{}}"#).as_deref(), Some("get_models"));
        assert_eq!(answers_at_once(br#"{"id":1,"cmd":"compute","n":5}"#), None);
        assert_eq!(answers_at_once(br#"{"method":"predict_image"}"#), None);
        assert_eq!(answers_at_once(b"not json"), None);
    }
}
