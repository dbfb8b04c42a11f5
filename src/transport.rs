//! One connection's bytes: plain TCP, or TLS over it (rustls), behind one
//! type that a reader thread and a writer thread share through an `Arc` —
//! on the server (a client's connection) and in the client (the load
//! generator's sender and receiver).
//!
//! Plain TCP needs no lock: `&TcpStream` reads and writes from two threads
//! at once. TLS keeps one `rustls::Connection` (the session's keys
//! and buffers) that both sides must update, so it sits behind a mutex held
//! only while records are decrypted or encrypted and while they are written
//! — never while the reader waits for the network: the reader first takes
//! raw bytes off the socket with no lock, then decrypts them under it.
//!
//! ```text
//!  socket ──raw bytes (no lock)──▶ reader ──lock: read_tls, process, take plaintext──▶ frames
//!  frames ──lock: encrypt into records, write them──▶ socket            (writer, inline replies)
//! ```
//!
//! On the server the handshake happens inside these reads: the client's
//! hello arrives as raw bytes, and the server's answer is written while the
//! lock is held. Bytes that are not TLS (a plain-text client on a TLS port)
//! fail `process_new_packets` at once, and the connection is closed. A
//! client finishes its handshake at connect ([`Transport::handshake`]),
//! before the two threads start.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rustls::Connection;

/// Raw bytes read off a TLS socket at a time.
const TLS_READ_CHUNK: usize = 16 * 1024;

/// A connection's transport.
#[derive(Debug)]
pub(crate) enum Transport {
    Plain(TcpStream),
    /// The session is boxed: it is large (~1 KB), the plain variant is a
    /// file descriptor.
    Tls {
        socket: TcpStream,
        session: Box<Mutex<Connection>>,
    },
}

/// Why a TLS connection failed before or during its handshake.
#[derive(Debug)]
pub(crate) struct TlsRefused(pub(crate) rustls::Error);

impl std::fmt::Display for TlsRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS: {}", self.0)
    }
}

impl std::error::Error for TlsRefused {}

impl Transport {
    fn socket(&self) -> &TcpStream {
        match self {
            Transport::Plain(socket) | Transport::Tls { socket, .. } => socket,
        }
    }

    fn session(session: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
        session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket().peer_addr()
    }

    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_read_timeout(timeout)
    }

    /// A TLS transport over `socket` with `session` (client or server).
    pub(crate) fn tls(socket: TcpStream, session: impl Into<Connection>) -> Transport {
        Transport::Tls { socket, session: Box::new(Mutex::new(session.into())) }
    }

    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket().set_write_timeout(timeout)
    }

    /// Completes a client's TLS handshake now (blocking, within the socket's
    /// timeouts); nothing for plain TCP.
    ///
    /// # Errors
    /// The socket's error, or `InvalidData` wrapping [`TlsRefused`] when the
    /// server's certificate or the handshake is refused.
    pub(crate) fn handshake(&self) -> io::Result<()> {
        let Transport::Tls { socket, session } = self else { return Ok(()) };
        let mut tls = Self::session(session);
        while tls.is_handshaking() {
            tls.complete_io(&mut &*socket).map_err(|e| match e.into_inner() {
                Some(inner) => match inner.downcast::<rustls::Error>() {
                    Ok(tls_error) => io::Error::new(io::ErrorKind::InvalidData, TlsRefused(*tls_error)),
                    Err(other) => io::Error::other(other),
                },
                None => io::Error::other("the TLS handshake failed"),
            })?;
        }
        Ok(())
    }

    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket().shutdown(how)
    }

    /// Whether the peer has closed the connection or it broke, seen without
    /// reading anything and without blocking: a peek at the socket (pending
    /// bytes of a pipelined request mean the peer is still there).
    pub(crate) fn peer_has_left(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        let mut byte = [0u8; 1];
        match recv(self.socket().as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(0) => true,
            Ok(_) => false,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// Whether anything is waiting on the socket — bytes or the end of the
    /// stream — seen without reading it and without blocking. On a
    /// request/reply connection with no request out, that means the server
    /// spoke unasked, which it does only to say why it is closing the
    /// connection (e.g. `IDLE_TIMEOUT`).
    pub(crate) fn has_pending_input(&self) -> bool {
        use nix::sys::socket::{recv, MsgFlags};
        let mut byte = [0u8; 1];
        match recv(self.socket().as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
            Ok(_) => true,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => false,
            Err(_) => true,
        }
    }

    /// The socket, for a non-blocking send that bypasses the writer thread:
    /// plain TCP only (TLS records must go through the session).
    pub(crate) fn plain_fd(&self) -> Option<RawFd> {
        match self {
            Transport::Plain(socket) => Some(socket.as_raw_fd()),
            Transport::Tls { .. } => None,
        }
    }

    /// Whether a TLS handshake is still under way.
    pub(crate) fn is_handshaking(&self) -> bool {
        match self {
            Transport::Plain(_) => false,
            Transport::Tls { session, .. } => Self::session(session).is_handshaking(),
        }
    }

    /// Reads plaintext: `Ok(0)` at the end of the stream; the socket's
    /// timeout error (`WouldBlock`) when no plaintext arrived within it.
    ///
    /// # Errors
    /// The socket's error, or `InvalidData` wrapping [`TlsRefused`] for
    /// bytes that are not acceptable TLS (including a refused client
    /// certificate).
    pub(crate) fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        let (socket, session) = match self {
            Transport::Plain(socket) => return (&*socket).read(buf),
            Transport::Tls { socket, session } => (socket, session),
        };
        // Plaintext already decrypted comes first.
        if let Some(n) = Self::take_plaintext(&mut Self::session(session), buf)? {
            return Ok(n);
        }
        let mut raw = [0u8; TLS_READ_CHUNK];
        // Records that carry no data (handshake messages, session tickets,
        // half a record) are processed and the socket read again, until
        // plaintext, the end, or the socket's own timeout.
        loop {
            let got = (&*socket).read(&mut raw)?;
            let mut tls = Self::session(session);
            if got == 0 {
                return Ok(0);
            }
            let mut offered = &raw[..got];
            while !offered.is_empty() {
                tls.read_tls(&mut offered)?;
                let processed = tls.process_new_packets();
                // Whatever the session has to say goes out now: the handshake's
                // answer, or the alert that explains a refusal.
                Self::flush(&mut tls, socket)?;
                processed.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, TlsRefused(e)))?;
            }
            if let Some(n) = Self::take_plaintext(&mut tls, buf)? {
                return Ok(n);
            }
        }
    }

    /// Plaintext the session holds: `Some(n)`, `Some(0)` after the peer's
    /// close_notify, or `None` when there is none yet.
    fn take_plaintext(tls: &mut Connection, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match tls.reader().read(buf) {
            Ok(n) => Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the session's pending records to the socket.
    fn flush(tls: &mut Connection, mut socket: &TcpStream) -> io::Result<()> {
        while tls.wants_write() {
            tls.write_tls(&mut socket)?;
        }
        Ok(())
    }

    /// Writes all of `bytes` (blocking as long as the socket needs).
    ///
    /// # Errors
    /// The socket's write error.
    pub(crate) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Transport::Plain(socket) => (&*socket).write_all(bytes),
            Transport::Tls { socket, session } => {
                let mut tls = Self::session(session);
                tls.writer().write_all(bytes)?;
                Self::flush(&mut tls, socket)
            }
        }
    }
}

/// `Read` and `Write` over a shared transport, for code written against the
/// std traits (frame buffers, `write_all`).
pub(crate) struct TransportIo<'a>(pub(crate) &'a Transport);

impl Read for TransportIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for TransportIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write_all(buf).map(|()| buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
