//! The write side of a client socket: every path a reply takes to the
//! client, and the flow control that bounds how many replies a connection
//! may owe.
//!
//! Every write to a socket goes through one [`SocketWriter`], which writes
//! whole batches of frames under a lock — so two replies can never
//! interleave their bytes (the original Python server wrote from several
//! threads and could). Three writers use it:
//! - the **reader** ([`super::connection`]) collects the replies it produces
//!   itself (ping, stats, errors) in [`InlineReplies`] while more requests
//!   are already buffered, and writes them in one system call just before it
//!   would block: a pipelining client gets a whole batch per write, and no
//!   other thread is woken;
//! - whoever finishes a **job** (a worker thread, or the thread driving a
//!   worker process) writes its reply through the [`ReplySink`] with a
//!   *non-blocking* send when the socket has room — no thread hop. When the
//!   socket is full or another batch is being written, the frame goes
//!   through a channel to the connection's **writer** thread, which may
//!   block on a slow client. So a slow client never stalls a worker, and a
//!   fast one costs no extra wake-up per reply. (A partial non-blocking send
//!   parks the unsent tail; every later batch is written after it, so frames
//!   never interleave.)
//!
//! The channel to the writer is unbounded so that a worker handing over a
//! reply never blocks on a slow client. Memory is bounded instead by
//! [`FlowControl`]: the reader takes a slot before handling each request and
//! the writer gives it back once the reply is on the wire, so at most
//! `max_inflight` replies per connection exist at any time. When a client
//! stops reading its replies, its reader stops reading its requests, and TCP
//! pushes back on the client — no other connection is affected.

use std::io;
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::{self, JoinHandle};

use crossbeam_channel::{Receiver, Sender};

use crate::transport::Transport;

/// How many queued replies the writer gathers into one `write` system call.
const MAX_REPLIES_PER_FLUSH: usize = 256;
/// Inline replies are written once this many bytes have piled up, even if
/// more requests are buffered.
const INLINE_FLUSH_BYTES: usize = 64 * 1024;
/// Stack size of writer threads: they only move bytes.
const WRITER_STACK: usize = 128 * 1024;

/// Counts the replies a connection owes, and makes the reader wait when it
/// owes too many.
#[derive(Debug)]
pub(crate) struct FlowControl {
    state: Mutex<FlowState>,
    changed: Condvar,
    max_outstanding: usize,
}

#[derive(Debug)]
struct FlowState {
    outstanding: usize,
    closed: bool,
}

impl FlowControl {
    pub(crate) fn new(max_outstanding: usize) -> Self {
        FlowControl {
            state: Mutex::new(FlowState { outstanding: 0, closed: false }),
            changed: Condvar::new(),
            max_outstanding: max_outstanding.max(1),
        }
    }

    /// Takes a slot for one more reply, waiting while `max_outstanding`
    /// replies are already owed. Returns `false` if the connection was closed
    /// meanwhile (the reader should stop).
    pub(crate) fn acquire(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while state.outstanding >= self.max_outstanding && !state.closed {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        if state.closed {
            return false;
        }
        state.outstanding += 1;
        true
    }

    /// Gives back `count` slots (replies written, or a slot not used).
    pub(crate) fn release(&self, count: usize) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.outstanding = state.outstanding.saturating_sub(count);
        self.changed.notify_all();
    }

    /// Marks the connection closed and wakes a reader waiting for a slot.
    pub(crate) fn close(&self) {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).closed = true;
        self.changed.notify_all();
    }

    /// Replies owed right now.
    pub(crate) fn outstanding(&self) -> usize {
        self.state.lock().unwrap_or_else(PoisonError::into_inner).outstanding
    }
}

/// The way to send a reply to one connection. Cheap to clone; a clone travels
/// with every job in the registry.
#[derive(Debug, Clone)]
pub(crate) struct ReplySink {
    frames: Sender<Vec<u8>>,
    flow: Arc<FlowControl>,
    /// The socket, for writing directly (absent in unit tests).
    out: Option<Arc<SocketWriter>>,
}

impl ReplySink {
    /// Delivers a finished reply frame, never blocking the caller: written
    /// at once when the socket has room and nothing is queued before it,
    /// otherwise handed to the connection's writer thread. If the connection
    /// is already gone the frame is dropped: there is nobody left to read it.
    pub(crate) fn send(&self, frame: Vec<u8>) {
        if let (Some(out), true) = (&self.out, self.frames.is_empty()) {
            match out.try_write(&frame) {
                Attempt::Written => {
                    self.flow.release(1);
                    return;
                }
                Attempt::Parked => {
                    // Wake the writer so the parked tail goes out; the empty
                    // frame stands for the reply, and releases its slot.
                    let _ = self.frames.send(Vec::new());
                    return;
                }
                Attempt::Failed => {
                    self.flow.close();
                    let _ = out.stream.shutdown(Shutdown::Both);
                    return;
                }
                Attempt::Declined => {}
            }
        }
        let _ = self.frames.send(frame);
    }

    /// The connection's flow control (to take a slot per request).
    pub(crate) fn flow(&self) -> &Arc<FlowControl> {
        &self.flow
    }

    /// Starts the writer thread of `stream`, and returns the sink every job
    /// of the connection replies through, the socket writer (for the
    /// reader's inline replies), and the writer thread.
    ///
    /// # Errors
    /// If the writer thread cannot start.
    pub(crate) fn start(
        stream: Arc<Transport>,
        max_outstanding: usize,
    ) -> io::Result<(ReplySink, Arc<SocketWriter>, JoinHandle<()>)> {
        let (mut sink, replies) = ReplySink::detached(max_outstanding);
        let flow = Arc::clone(&sink.flow);
        let out = Arc::new(SocketWriter::new(stream));
        sink.out = Some(Arc::clone(&out));
        let writer_out = Arc::clone(&out);
        let writer = thread::Builder::new()
            .name("writer".into())
            .stack_size(WRITER_STACK)
            .spawn(move || write_replies(&writer_out, replies, flow))?;
        Ok((sink, out, writer))
    }

    /// A sink with no socket behind it, for unit tests of code that replies.
    pub(crate) fn detached(max_outstanding: usize) -> (ReplySink, Receiver<Vec<u8>>) {
        let (frames, rx) = crossbeam_channel::unbounded();
        let flow = Arc::new(FlowControl::new(max_outstanding));
        (ReplySink { frames, flow, out: None }, rx)
    }
}

/// The one way to write to a connection's socket: whole batches of frames,
/// one batch at a time, under one lock.
#[derive(Debug)]
pub(crate) struct SocketWriter {
    stream: Arc<Transport>,
    /// Held while writing. Inside: the tail of a frame a non-blocking send
    /// could not finish, which must go out before anything else.
    unsent: Mutex<Vec<u8>>,
}

/// What a non-blocking write attempt achieved.
enum Attempt {
    /// The whole frame is on its way.
    Written,
    /// Nothing was written; hand the frame to the writer thread.
    Declined,
    /// Part was written; the rest is parked for the writer thread.
    Parked,
    /// The socket is broken.
    Failed,
}

impl SocketWriter {
    /// The writer for `stream`.
    pub(crate) fn new(stream: Arc<Transport>) -> Self {
        SocketWriter { stream, unsent: Mutex::new(Vec::new()) }
    }

    /// Writes `frames` (one or more complete frames) before any other batch,
    /// blocking as long as the socket needs.
    ///
    /// # Errors
    /// The socket's write error; the connection should then be closed.
    pub(crate) fn write_frames(&self, frames: &[u8]) -> io::Result<()> {
        let mut unsent = self.unsent.lock().unwrap_or_else(PoisonError::into_inner);
        if !unsent.is_empty() {
            self.stream.write_all(&unsent)?;
            unsent.clear();
        }
        self.stream.write_all(frames)
    }

    /// Tries to write one frame without ever blocking: only if no one else is
    /// writing, nothing is parked, and the socket takes at least some of it.
    fn try_write(&self, frame: &[u8]) -> Attempt {
        use nix::sys::socket::{send, MsgFlags};
        // TLS records are written by the session, in order: the writer thread's job.
        let Some(fd) = self.stream.plain_fd() else { return Attempt::Declined };
        let Ok(mut unsent) = self.unsent.try_lock() else { return Attempt::Declined };
        if !unsent.is_empty() {
            return Attempt::Declined;
        }
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        let mut written = 0;
        while written < frame.len() {
            match send(fd, &frame[written..], flags) {
                Ok(n) => written += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(nix::errno::Errno::EAGAIN) if written == 0 => return Attempt::Declined,
                Err(nix::errno::Errno::EAGAIN) => {
                    unsent.extend_from_slice(&frame[written..]);
                    return Attempt::Parked;
                }
                Err(_) => return Attempt::Failed,
            }
        }
        Attempt::Written
    }
}

/// Replies the reader produced itself, waiting to be written in one batch.
#[derive(Debug)]
pub(crate) struct InlineReplies {
    frames: Vec<u8>,
    count: usize,
    out: Arc<SocketWriter>,
    flow: Arc<FlowControl>,
}

impl InlineReplies {
    /// An empty batch that writes through `out` and gives slots back to `flow`.
    pub(crate) fn new(out: Arc<SocketWriter>, flow: Arc<FlowControl>) -> Self {
        InlineReplies { frames: Vec::new(), count: 0, out, flow }
    }

    /// Queues a reply frame (its reply slot was taken by the reader).
    pub(crate) fn push(&mut self, frame: &[u8]) {
        self.frames.extend_from_slice(frame);
        self.count += 1;
    }

    /// Whether enough has piled up to write now.
    pub(crate) fn is_full(&self) -> bool {
        self.frames.len() >= INLINE_FLUSH_BYTES
    }

    /// Writes what is queued and gives the reply slots back.
    ///
    /// # Errors
    /// The socket's write error (the client has gone); the connection is
    /// then marked closed.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if self.count == 0 {
            return Ok(());
        }
        let written = self.out.write_frames(&self.frames);
        self.flow.release(self.count);
        self.frames.clear();
        self.count = 0;
        if self.frames.capacity() > INLINE_FLUSH_BYTES * 2 {
            self.frames = Vec::new();
        }
        if written.is_err() {
            self.flow.close();
        }
        written
    }
}

/// The writer thread: takes job reply frames off the channel and writes them,
/// batching whatever is already queued into one system call. It ends when
/// every sender is gone (the connection is finished) or the socket fails.
fn write_replies(out: &SocketWriter, replies: Receiver<Vec<u8>>, flow: Arc<FlowControl>) {
    let mut batch = Vec::with_capacity(4096);
    // `recv` blocks until a reply arrives or every sender is dropped.
    while let Ok(first) = replies.recv() {
        batch.clear();
        batch.extend_from_slice(&first);
        let mut count = 1;
        // Gather what else is ready now: many small replies, one syscall.
        while count < MAX_REPLIES_PER_FLUSH {
            match replies.try_recv() {
                Ok(next) => {
                    batch.extend_from_slice(&next);
                    count += 1;
                }
                Err(_) => break,
            }
        }
        let written = out.write_frames(&batch);
        flow.release(count);
        if let Err(e) = written {
            tracing::debug!(error = %e, "client socket failed; closing the connection");
            // Wake the reader (blocked in read or waiting for a slot) so the
            // whole connection winds down; later replies are dropped.
            flow.close();
            let _ = out.stream.shutdown(Shutdown::Both);
            return;
        }
        if batch.capacity() > 1 << 20 {
            batch = Vec::with_capacity(4096);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn flow_control_blocks_at_the_limit_and_resumes_on_release() {
        let flow = Arc::new(FlowControl::new(2));
        assert!(flow.acquire());
        assert!(flow.acquire());
        let waiter = {
            let flow = Arc::clone(&flow);
            thread::spawn(move || flow.acquire())
        };
        // The third acquire must wait; give it back a slot and it proceeds.
        thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished(), "a third slot must not be granted");
        flow.release(1);
        assert!(waiter.join().unwrap());
        assert_eq!(flow.outstanding(), 2);
    }

    #[test]
    fn closing_wakes_a_waiting_reader_with_false() {
        let flow = Arc::new(FlowControl::new(1));
        assert!(flow.acquire());
        let waiter = {
            let flow = Arc::clone(&flow);
            thread::spawn(move || flow.acquire())
        };
        flow.close();
        assert!(!waiter.join().unwrap());
    }
}
