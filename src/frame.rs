//! **Shared wire layer** — framing: turning a byte stream into messages and
//! back.
//!
//! Every message in both directions is a *frame*: a 4-byte unsigned
//! big-endian length, then that many bytes of UTF-8 JSON. This module knows
//! nothing about JSON or sockets; it reads from any [`Read`] and writes into a
//! `Vec<u8>`, so it can be tested with byte slices and odd readers (one byte at
//! a time, several frames glued together).
//!
//! The one rule that keeps a server safe here: **the announced length is
//! checked against the limit before anything is allocated**. A peer that
//! announces 4 GiB gets an error, not a 4 GiB buffer.

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use byteorder::{BigEndian, ByteOrder};

/// Size of the length prefix in bytes.
pub(crate) const HEADER_LEN: usize = 4;

/// Default largest payload a server accepts (16 MiB, flag `--max-frame`).
pub(crate) const DEFAULT_MAX_FRAME: usize = 16 * 1024 * 1024;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The header announced a zero-length payload. The frame boundary is still
    /// known (4 bytes were consumed), so the stream remains usable.
    #[error("the frame announced a length of 0; a frame must carry a JSON payload")]
    Empty,

    /// The header announced more than the limit. Nothing was allocated and the
    /// payload was not read, so the next frame boundary is unknown: the only
    /// safe thing left is to close the stream.
    #[error("the frame announced {announced} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Length from the header.
        announced: u64,
        /// The configured limit.
        limit: usize,
    },

    /// The stream ended inside a frame (after part of a header or a payload).
    #[error("the connection closed in the middle of a frame ({received} of {expected} bytes)")]
    Truncated {
        /// Bytes of the header or payload that did arrive.
        received: usize,
        /// Bytes that were expected.
        expected: usize,
    },

    /// A frame started arriving but did not complete within the read timeout
    /// (a client that sent half a frame and stalled).
    #[error(
        "the frame did not complete within {limit:?} ({received} bytes received); closing the connection"
    )]
    Stalled {
        /// Bytes of the frame that did arrive.
        received: usize,
        /// The read timeout.
        limit: std::time::Duration,
    },

    /// The frame arriving needs more memory than is left of the budget for
    /// frames still arriving (`--max-frame-memory`), which other
    /// connections hold now. The frame boundary is lost: close the stream.
    #[error(
        "the server's memory for frames still arriving ({limit} bytes, --max-frame-memory) is taken by \
         other connections ({received} bytes of this frame had arrived); closing the connection: send it again later"
    )]
    OverBudget {
        /// Bytes of the frame that did arrive.
        received: usize,
        /// The budget.
        limit: usize,
    },

    /// Nothing arrived for the idle timeout while no reply was owed: the
    /// connection is closed so it cannot hold a connection slot for ever.
    #[error(
        "the connection sent nothing and was owed nothing for {limit:?} (the server's --idle-timeout); \
         closing it: connect again to send more"
    )]
    Idle {
        /// The idle timeout.
        limit: std::time::Duration,
    },

    /// Any other I/O error from the underlying reader (including timeouts).
    #[error("i/o error while reading a frame: {0}")]
    Io(#[from] io::Error),
}

impl FrameError {
    /// A read error as a frame error: [`FrameError::OverBudget`] when that is
    /// what [`FrameBuffer::read_from`] carried, else [`FrameError::Io`].
    pub(crate) fn from_io(error: io::Error) -> FrameError {
        if error.kind() == io::ErrorKind::OutOfMemory {
            if let Some(&FrameError::OverBudget { received, limit }) =
                error.get_ref().and_then(|inner| inner.downcast_ref::<FrameError>())
            {
                return FrameError::OverBudget { received, limit };
            }
        }
        FrameError::Io(error)
    }
}

/// Appends one frame (length prefix + payload) to `out`.
///
/// # Panics
/// Panics if `payload` is longer than `u32::MAX` bytes, which no caller in
/// this crate can produce (frames are limited far below that).
pub(crate) fn encode_into(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("frame payload over 4 GiB");
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
}

/// Returns a new buffer holding one frame around `payload`.
pub(crate) fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
    encode_into(payload, &mut out);
    out
}

/// Builds a frame by letting `write_payload` serialize straight into the
/// output buffer, then patching the length in front. One allocation per
/// frame, no intermediate copy of the payload.
///
/// # Errors
/// Whatever `write_payload` returns.
pub(crate) fn encode_with<E>(
    write_payload: impl FnOnce(&mut Vec<u8>) -> Result<(), E>,
) -> Result<Vec<u8>, E> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(&[0; HEADER_LEN]);
    write_payload(&mut out)?;
    let len = u32::try_from(out.len() - HEADER_LEN).expect("frame payload over 4 GiB");
    BigEndian::write_u32(&mut out[..HEADER_LEN], len);
    Ok(out)
}

/// Checks a header against the limit and returns the payload length.
///
/// # Errors
/// [`FrameError::Empty`] for a zero length, [`FrameError::TooLarge`] for a
/// length over `max_payload`.
pub(crate) fn payload_len(header: [u8; HEADER_LEN], max_payload: usize) -> Result<usize, FrameError> {
    let announced = BigEndian::read_u32(&header) as u64;
    if announced == 0 {
        return Err(FrameError::Empty);
    }
    if announced > max_payload as u64 {
        return Err(FrameError::TooLarge { announced, limit: max_payload });
    }
    Ok(announced as usize)
}

/// Reads one frame's payload into `payload` (replacing its contents).
///
/// Returns `Ok(true)` when a frame was read and `Ok(false)` when the stream
/// ended cleanly *between* frames, the normal way for a peer to hang up.
///
/// # Errors
/// See [`FrameError`]. After [`FrameError::Empty`] the stream is positioned at
/// the next frame; after any other error it should be closed.
pub fn read_frame<R: Read>(
    reader: &mut R,
    max_payload: usize,
    payload: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut header)?;
    if got == 0 {
        return Ok(false);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated { received: got, expected: HEADER_LEN });
    }
    let len = payload_len(header, max_payload)?;
    // Only now, with the length known to be within the limit, is memory set aside.
    payload.clear();
    payload.resize(len, 0);
    let got = read_full(reader, payload)?;
    if got < len {
        return Err(FrameError::Truncated { received: got, expected: len });
    }
    Ok(true)
}

/// An incremental decoder for readers that may stop anywhere: bytes are
/// appended as they arrive ([`FrameBuffer::read_from`]) and whole frames are
/// taken out ([`FrameBuffer::next_frame`]). Unlike [`read_frame`], a read that
/// times out half-way through a frame loses nothing, so a thread can poll a
/// socket with a short timeout and do other work between reads.
#[derive(Debug)]
pub struct FrameBuffer {
    /// Storage; `buf[start..end]` holds bytes received but not yet taken.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    max_payload: usize,
    /// The budget the buffer's growth past `initial` is charged to, if any.
    budget: Option<Arc<FrameMemory>>,
    /// The size the buffer starts at and shrinks back to: never charged.
    initial: usize,
}

/// A budget of memory shared by many [`FrameBuffer`]s: the bytes that
/// frames still arriving may hold, all connections together.
///
/// Without it, each connection may hold one largest frame, so a few hundred
/// clients that each send most of a 16 MiB frame and stall would fill the
/// machine's memory. With it, a buffer that must grow takes the bytes from
/// the budget first; when the budget is spent, that one connection is
/// refused ([`FrameError::OverBudget`]) and everyone else goes on.
#[derive(Debug)]
pub(crate) struct FrameMemory {
    limit: usize,
    /// Bytes charged now. `Relaxed` is enough: the count is its own only
    /// datum (no other memory is published through it), and every change
    /// is one atomic read-modify-write, so charges never get lost.
    used: AtomicUsize,
    /// Growths refused since start.
    refused: AtomicU64,
}

impl FrameMemory {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        FrameMemory { limit, used: AtomicUsize::new(0), refused: AtomicU64::new(0) }
    }

    /// Takes `bytes` from the budget, or returns `false` (and counts a
    /// refusal) when fewer are left.
    fn take(&self, bytes: usize) -> bool {
        let taken = self.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            used.checked_add(bytes).filter(|&total| total <= self.limit)
        });
        if taken.is_err() {
            self.refused.fetch_add(1, Ordering::Relaxed);
        }
        taken.is_ok()
    }

    /// Gives `bytes` back.
    fn give_back(&self, bytes: usize) {
        self.used.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// The budget, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes held now by frames still arriving (beyond each buffer's idle size).
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// How many times a buffer could not grow because the budget was spent.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// Default initial space of a [`FrameBuffer`].
const READ_CHUNK: usize = 64 * 1024;

impl FrameBuffer {
    /// An empty buffer that refuses frames over `max_payload` bytes.
    pub(crate) fn new(max_payload: usize) -> Self {
        Self::with_capacity(READ_CHUNK, max_payload)
    }

    /// Like [`FrameBuffer::new`] with `initial` bytes of space. The buffer
    /// grows for large frames and shrinks back to `initial` once they are
    /// consumed, so an idle connection costs only `initial` bytes.
    pub fn with_capacity(initial: usize, max_payload: usize) -> Self {
        let initial = initial.max(HEADER_LEN);
        FrameBuffer { buf: vec![0; initial], start: 0, end: 0, max_payload, budget: None, initial }
    }

    /// Like [`FrameBuffer::with_capacity`], with every byte of growth past
    /// `initial` taken from `budget` first (and given back on shrinking).
    pub(crate) fn with_budget(initial: usize, max_payload: usize, budget: Arc<FrameMemory>) -> Self {
        let mut buffer = Self::with_capacity(initial, max_payload);
        buffer.budget = Some(budget);
        buffer
    }

    /// Whether a complete frame is buffered (so [`FrameBuffer::next_frame`]
    /// will return it without reading).
    ///
    /// # Errors
    /// [`FrameError::Empty`] or [`FrameError::TooLarge`] for a bad header.
    pub(crate) fn has_frame(&self) -> Result<bool, FrameError> {
        let available = &self.buf[self.start..self.end];
        if available.len() < HEADER_LEN {
            return Ok(false);
        }
        let header = [available[0], available[1], available[2], available[3]];
        let len = payload_len(header, self.max_payload)?;
        Ok(available.len() >= HEADER_LEN + len)
    }

    /// Reads once from `reader` into the buffer; returns the bytes read
    /// (0 at end of stream).
    ///
    /// # Errors
    /// Whatever the reader returns, including timeouts (`WouldBlock` or
    /// `TimedOut`), after which the buffer is unchanged and usable. With a
    /// budget ([`FrameBuffer::with_budget`]) that cannot give the room a
    /// frame needs: an error of kind `OutOfMemory` that carries
    /// [`FrameError::OverBudget`] (see [`FrameError::from_io`]).
    pub fn read_from<R: Read>(&mut self, reader: &mut R) -> io::Result<usize> {
        let low_water = (self.buf.len() / 4).max(HEADER_LEN);
        if self.buf.len() - self.end < low_water {
            // Little room left: move unread bytes to the front, and grow only
            // if a large frame really needs more space.
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buf.len() - self.end < low_water {
                self.grow()?;
            }
        }
        let got = reader.read(&mut self.buf[self.end..])?;
        self.end += got;
        Ok(got)
    }

    /// Doubles the buffer, but never past the frame now arriving (header
    /// included) once its header is in: memory follows what has arrived
    /// (at most twice it) and never exceeds what was announced.
    fn grow(&mut self) -> io::Result<()> {
        let doubled = self.buf.len() * 2;
        let arriving = self.expected_len();
        let wanted = if self.pending() >= HEADER_LEN && arriving > self.pending() {
            if arriving <= self.buf.len() {
                return Ok(()); // the rest of this frame fits in the room left
            }
            // Callers check the header against the limit first (`has_frame`),
            // so this is at most one largest frame.
            doubled.min(arriving)
        } else {
            doubled
        };
        let extra = wanted - self.buf.len();
        if let Some(budget) = &self.budget {
            if !budget.take(extra) {
                let refused = FrameError::OverBudget { received: self.pending(), limit: budget.limit() };
                return Err(io::Error::new(io::ErrorKind::OutOfMemory, refused));
            }
        }
        self.buf.resize(wanted, 0);
        Ok(())
    }

    /// Takes the next complete frame's payload, if one has fully arrived.
    ///
    /// # Errors
    /// [`FrameError::Empty`] for a zero length (its header is consumed, so
    /// the next frame can still be read) or [`FrameError::TooLarge`].
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, FrameError> {
        let available = &self.buf[self.start..self.end];
        if available.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = [available[0], available[1], available[2], available[3]];
        let len = match payload_len(header, self.max_payload) {
            Ok(len) => len,
            Err(FrameError::Empty) => {
                self.start += HEADER_LEN;
                return Err(FrameError::Empty);
            }
            Err(e) => return Err(e),
        };
        if available.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload_start = self.start + HEADER_LEN;
        self.start = payload_start + len;
        if self.start == self.end {
            // Everything consumed: start over at the front for free.
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(&self.buf[payload_start..payload_start + len]))
    }

    /// Gives memory back after a large frame: when nothing is pending and
    /// the buffer grew past `keep` bytes, it is reallocated at `keep`.
    pub(crate) fn shrink_if_idle(&mut self) {
        if self.start == self.end && self.buf.len() > self.initial {
            self.give_back_growth();
            self.buf = vec![0; self.initial];
            self.start = 0;
            self.end = 0;
        }
    }

    /// Returns what the buffer took from its budget beyond its idle size.
    fn give_back_growth(&self) {
        if let Some(budget) = &self.budget {
            budget.give_back(self.buf.len().saturating_sub(self.initial));
        }
    }

    /// Bytes received that do not yet form a whole frame.
    pub(crate) fn pending(&self) -> usize {
        self.end - self.start
    }

    /// Size (header included) of the frame now arriving, as far as known:
    /// the header's length once the header is in, else just the header.
    pub(crate) fn expected_len(&self) -> usize {
        let available = &self.buf[self.start..self.end];
        match available {
            [a, b, c, d, ..] => HEADER_LEN + u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => HEADER_LEN,
        }
    }
}

impl Drop for FrameBuffer {
    /// A connection that closes mid-frame gives its bytes back too.
    fn drop(&mut self) {
        self.give_back_growth();
    }
}

/// Like `read_exact`, but reports how many bytes arrived before end-of-stream
/// instead of failing, so callers can tell a clean close (0 bytes) from a
/// close mid-frame.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A reader that hands out one byte per call, like a very slow network.
    struct OneByteAtATime<'a>(&'a [u8]);

    impl Read for OneByteAtATime<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }

    #[test]
    fn encode_puts_a_big_endian_length_in_front() {
        assert_eq!(encode(b"{}"), vec![0, 0, 0, 2, b'{', b'}']);
        let built = encode_with::<()>(|out| {
            out.extend_from_slice(b"abc");
            Ok(())
        })
        .unwrap();
        assert_eq!(built, encode(b"abc"));
    }

    #[test]
    fn a_frame_split_into_single_bytes_is_reassembled() {
        let wire = encode(br#"{"id":1,"cmd":"ping"}"#);
        let mut reader = OneByteAtATime(&wire);
        let mut payload = Vec::new();
        assert!(read_frame(&mut reader, 1024, &mut payload).unwrap());
        assert_eq!(payload, br#"{"id":1,"cmd":"ping"}"#);
        assert!(!read_frame(&mut reader, 1024, &mut payload).unwrap());
    }

    #[test]
    fn glued_frames_come_out_one_by_one() {
        let mut wire = encode(b"first");
        encode_into(b"second", &mut wire);
        encode_into(b"3", &mut wire);
        let mut reader = Cursor::new(wire);
        let mut payload = Vec::new();
        let mut seen = Vec::new();
        while read_frame(&mut reader, 1024, &mut payload).unwrap() {
            seen.push(String::from_utf8(payload.clone()).unwrap());
        }
        assert_eq!(seen, ["first", "second", "3"]);
    }

    #[test]
    fn zero_length_is_an_error_but_the_stream_stays_aligned() {
        let mut wire = vec![0, 0, 0, 0];
        encode_into(b"next", &mut wire);
        let mut reader = Cursor::new(wire);
        let mut payload = Vec::new();
        assert!(matches!(read_frame(&mut reader, 1024, &mut payload), Err(FrameError::Empty)));
        assert!(read_frame(&mut reader, 1024, &mut payload).unwrap());
        assert_eq!(payload, b"next");
    }

    #[test]
    fn oversize_length_is_refused_without_allocating() {
        let mut reader = Cursor::new(vec![0xFF, 0xFF, 0xFF, 0xFF, b'x']);
        let mut payload = Vec::new();
        match read_frame(&mut reader, 16 * 1024 * 1024, &mut payload) {
            Err(FrameError::TooLarge { announced, limit }) => {
                assert_eq!(announced, 0xFFFF_FFFF);
                assert_eq!(limit, 16 * 1024 * 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(payload.capacity(), 0, "nothing may be allocated for a refused frame");
    }

    #[test]
    fn a_length_exactly_at_the_limit_is_accepted() {
        let mut reader = Cursor::new(encode(b"12345"));
        let mut payload = Vec::new();
        assert!(read_frame(&mut reader, 5, &mut payload).unwrap());
        let mut reader = Cursor::new(encode(b"123456"));
        assert!(matches!(
            read_frame(&mut reader, 5, &mut payload),
            Err(FrameError::TooLarge { announced: 6, .. })
        ));
    }

    #[test]
    fn truncated_header_and_truncated_body_are_told_apart_from_a_clean_close() {
        let mut payload = Vec::new();
        let mut empty = Cursor::new(Vec::new());
        assert!(!read_frame(&mut empty, 1024, &mut payload).unwrap());

        let mut half_header = Cursor::new(vec![0, 0]);
        assert!(matches!(
            read_frame(&mut half_header, 1024, &mut payload),
            Err(FrameError::Truncated { received: 2, expected: 4 })
        ));

        let mut half_body = Cursor::new(vec![0, 0, 0, 10, b'a', b'b', b'c']);
        assert!(matches!(
            read_frame(&mut half_body, 1024, &mut payload),
            Err(FrameError::Truncated { received: 3, expected: 10 })
        ));
    }

    #[test]
    fn frame_buffer_reassembles_frames_across_arbitrary_reads() {
        let mut wire = encode(b"alpha");
        encode_into(b"beta", &mut wire);
        encode_into(b"gamma", &mut wire);
        let mut reader = OneByteAtATime(&wire);
        let mut buffer = FrameBuffer::new(1024);
        let mut seen = Vec::new();
        while buffer.read_from(&mut reader).unwrap() > 0 {
            while let Some(payload) = buffer.next_frame().unwrap() {
                seen.push(String::from_utf8(payload.to_vec()).unwrap());
            }
        }
        assert_eq!(seen, ["alpha", "beta", "gamma"]);
        assert_eq!(buffer.pending(), 0);
    }

    #[test]
    fn frame_buffer_refuses_bad_headers() {
        let mut buffer = FrameBuffer::new(4);
        buffer.read_from(&mut Cursor::new(encode(b"12345"))).unwrap();
        assert!(matches!(buffer.next_frame(), Err(FrameError::TooLarge { announced: 5, .. })));
        let mut buffer = FrameBuffer::new(4);
        let mut wire = vec![0, 0, 0, 0];
        encode_into(b"ok", &mut wire);
        buffer.read_from(&mut Cursor::new(wire)).unwrap();
        assert!(matches!(buffer.next_frame(), Err(FrameError::Empty)));
        assert_eq!(buffer.next_frame().unwrap(), Some(&b"ok"[..]), "an empty frame is skipped");
    }

    proptest::proptest! {
        /// Any sequence of payloads survives encode → decode unchanged.
        #[test]
        fn round_trip(payloads in proptest::collection::vec(
            proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..20)) {
            let mut wire = Vec::new();
            for p in &payloads {
                encode_into(p, &mut wire);
            }
            let mut reader = Cursor::new(wire);
            let mut payload = Vec::new();
            let mut decoded = Vec::new();
            while read_frame(&mut reader, 1024, &mut payload).unwrap() {
                decoded.push(payload.clone());
            }
            proptest::prop_assert_eq!(decoded, payloads);
        }
    }
}
