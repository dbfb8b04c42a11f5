//! The read side of one client socket: frames in, with a deadline for a
//! frame that starts but never completes. Starting a connection also starts
//! its write side ([`super::replies`]).
//!
//! A connection has two threads: the **reader** (the caller of
//! [`Connection::read_frame`], see [`super::reader`]) and the **writer**
//! started here for replies that cannot be written at once. Both share one
//! socket through an `Arc<TcpStream>` (`&TcpStream` implements `Read` and
//! `Write`), so a connection costs one file descriptor.
//!
//! Reading uses a short socket timeout (a "tick") so that a frame which
//! starts but never completes is noticed: once its first bytes have waited
//! longer than the read timeout, the connection is cut off. An idle
//! connection — no partial frame, no reply owed — is closed after the idle
//! timeout, so abandoned connections cannot hold `--max-connections` slots
//! for ever. A frame's bytes beyond the small idle buffer are charged to
//! the server-wide budget of frames still arriving ([`FrameMemory`]).

use std::io;
use std::net::Shutdown;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::replies::{InlineReplies, ReplySink, SocketWriter};
use crate::frame::{FrameBuffer, FrameError, FrameMemory};
use crate::transport::Transport;

/// Read buffer an idle connection keeps (it grows for large frames, then
/// shrinks back), so 1,000 idle connections cost little memory.
const IDLE_READ_BUFFER: usize = 8 * 1024;

/// Limits that shape how a connection reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    /// Largest frame payload.
    pub(crate) max_frame: usize,
    /// Replies the connection may owe before the reader waits.
    pub(crate) max_inflight: usize,
    /// How long a started frame may take to complete.
    pub(crate) read_timeout: Duration,
    /// How long a connection may owe nothing and send nothing (`None`: for ever).
    pub(crate) idle_timeout: Option<Duration>,
}

/// The reading side of a client socket, plus the writer thread it started.
pub(crate) struct Connection {
    stream: Arc<Transport>,
    out: Arc<SocketWriter>,
    buffer: FrameBuffer,
    sink: ReplySink,
    writer: JoinHandle<()>,
    read_timeout: Duration,
    /// When the first bytes of the frame now arriving were seen.
    frame_started: Option<Instant>,
    /// When the connection was accepted: a TLS handshake must end within
    /// the read timeout of it.
    opened: Instant,
    idle_timeout: Option<Duration>,
    /// The last time bytes arrived or a reply was owed: the idle clock.
    last_activity: Instant,
}

impl Connection {
    /// Starts the writer thread for `stream` and returns the reading side.
    ///
    /// # Errors
    /// If the socket cannot be configured or the writer thread cannot start.
    pub(crate) fn start(
        stream: Arc<Transport>,
        limits: ReadLimits,
        frame_memory: Arc<FrameMemory>,
    ) -> io::Result<Connection> {
        // Wake up regularly while waiting for bytes, to notice stalled frames.
        let tick = (limits.read_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        stream.set_read_timeout(Some(tick))?;
        let (sink, out, writer) = ReplySink::start(Arc::clone(&stream), limits.max_inflight)?;
        Ok(Connection {
            stream,
            out,
            buffer: FrameBuffer::with_budget(IDLE_READ_BUFFER, limits.max_frame, frame_memory),
            sink,
            writer,
            read_timeout: limits.read_timeout,
            frame_started: None,
            opened: Instant::now(),
            idle_timeout: limits.idle_timeout,
            last_activity: Instant::now(),
        })
    }

    /// A buffer for the replies the reader produces itself; pass it to
    /// every [`Connection::read_frame`], which writes it out before blocking.
    pub(crate) fn inline_replies(&self) -> InlineReplies {
        InlineReplies::new(Arc::clone(&self.out), Arc::clone(self.sink.flow()))
    }

    /// Reads the next frame. `Ok(None)` is a clean close between frames.
    /// Before waiting for bytes from the network, the inline replies are
    /// written, so a client always gets its answers before we sleep.
    ///
    /// # Errors
    /// See [`FrameError`]; only after [`FrameError::Empty`] may reading go on
    /// (the empty frame has then been skipped).
    pub(crate) fn read_frame(&mut self, inline: &mut InlineReplies) -> Result<Option<&[u8]>, FrameError> {
        self.buffer.shrink_if_idle();
        if inline.is_full() || !self.buffer.has_frame().unwrap_or(true) {
            inline.flush()?;
        }
        loop {
            match self.buffer.has_frame() {
                Ok(true) => break,
                Ok(false) => {}
                // `next_frame` skips the empty frame's header and reports it.
                Err(FrameError::Empty) => return self.buffer.next_frame(),
                Err(e) => return Err(e),
            }
            let pending = self.buffer.pending();
            if self.opened.elapsed() >= self.read_timeout && self.stream.is_handshaking() {
                return Err(FrameError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the TLS handshake did not finish within the read timeout ({:?})",
                        self.read_timeout
                    ),
                )));
            }
            if pending > 0 {
                let started = *self.frame_started.get_or_insert_with(Instant::now);
                if started.elapsed() >= self.read_timeout {
                    return Err(FrameError::Stalled { received: pending, limit: self.read_timeout });
                }
            }
            match self.buffer.read_from(&mut crate::transport::TransportIo(&self.stream)) {
                Ok(0) if pending == 0 => return Ok(None),
                Ok(0) => {
                    let expected = self.buffer.expected_len();
                    return Err(FrameError::Truncated { received: pending, expected });
                }
                Ok(_) => self.last_activity = Instant::now(),
                // A tick without bytes: the only moment idleness is checked,
                // so a busy connection pays nothing for it.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    if pending == 0 {
                        self.check_idle()?;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(FrameError::from_io(e)),
            }
        }
        let frame = self.buffer.next_frame()?;
        // The next frame (if any) starts arriving now.
        self.frame_started = None;
        Ok(frame)
    }

    /// Ends an idle connection: no partial frame, no reply owed, and no
    /// bytes for the idle timeout. A connection waiting for its replies is
    /// not idle: its client may rightly send nothing while a long job runs.
    fn check_idle(&mut self) -> Result<(), FrameError> {
        let Some(limit) = self.idle_timeout else { return Ok(()) };
        if self.sink.flow().outstanding() > 0 {
            self.last_activity = Instant::now();
        } else if self.last_activity.elapsed() >= limit {
            return Err(FrameError::Idle { limit });
        }
        Ok(())
    }

    /// This connection's reply path.
    pub(crate) fn sink(&self) -> &ReplySink {
        &self.sink
    }

    /// Ends the connection: drops the reader's own sink and waits for the
    /// writer to send whatever is still queued. The writer finishes once every
    /// other sink (held by jobs in the registry) is gone too, so callers must
    /// cancel this connection's jobs first.
    pub(crate) fn finish(self) {
        let Connection { stream, sink, writer, .. } = self;
        drop(sink);
        let _ = writer.join();
        let _ = stream.shutdown(Shutdown::Both);
    }
}
