//! One blocking framed connection to a ThreadCenter server, and the
//! one-shot `call` used by `tc-client call`.

use std::io::{BufReader, Write};
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
}

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
                    return Ok(ServerConnection { target, transport, reader, payload: Vec::new() });
                }
                Err(e) => last_error = Some(e),
            }
        }
        let mut e = last_error.unwrap_or_else(|| std::io::Error::other("the name resolved to no address"));
        if e.kind() == std::io::ErrorKind::ConnectionRefused {
            // The most common first-run mistake: no server is running.
            e = std::io::Error::new(
                e.kind(),
                format!(
                    "{e}; is tc-server running there? Start one with `tc-server --port {port}` \
                     in another terminal, or add --embedded to measure a farm started for the run"
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
        TransportIo(&self.transport)
            .write_all(&frame::encode(payload))
            .map_err(|e| Error::io(format!("sending to {}", self.target), e))
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
    /// the connection or sent a malformed frame.
    pub(crate) fn receive(&mut self) -> Result<&[u8]> {
        match frame::read_frame(&mut self.reader, DEFAULT_MAX_FRAME, &mut self.payload) {
            Ok(true) => Ok(&self.payload),
            Ok(false) => {
                Err(Error::Protocol(format!("{} closed the connection before replying", self.target)))
            }
            Err(frame::FrameError::Io(e)) => {
                Err(Error::io(format!("waiting for a reply from {}", self.target), e))
            }
            Err(e) => Err(Error::Protocol(format!("bad reply from {}: {e}", self.target))),
        }
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
