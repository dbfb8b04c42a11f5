//! `/events`: a Server-Sent Events stream to every dashboard, bounded in
//! subscribers and in memory.
//!
//! One producer (the server's frame builder, see `server::watch`) publishes
//! each message once into a [`tokio::sync::broadcast`] channel; every
//! subscriber reads the same `Arc`'d text. The channel keeps the last
//! [`BACKLOG`] messages: a browser that reads slower than frames come falls
//! behind, and when it is more than that behind it *skips* the messages it
//! missed (and is told how many) instead of making the server keep them. So
//! memory is the backlog, shared, however many and however slow the
//! browsers are; a browser that stops reading altogether is closed by the
//! endpoint (see `STREAM_STALL` in the endpoint).
//!
//! SSE rather than WebSocket: the stream goes one way, every browser's
//! `EventSource` reconnects by itself after a restart, and it is plain
//! HTTP/1.1 text that `curl -N` shows.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::broadcast;

/// Messages kept for subscribers that are behind (at 5 frames a second of
/// three messages each, about 4 s).
pub(crate) const BACKLOG: usize = 64;

/// One SSE message, ready for the wire.
#[derive(Debug)]
pub(crate) struct StreamMessage {
    /// `event: NAME\ndata: JSON\n\n`.
    pub(crate) text: Bytes,
    /// For a message of job bars: the newest bar's sequence number. A new
    /// subscriber, which got every bar up to some number in its first
    /// message, skips live ones it already has.
    pub(crate) bars_upto: Option<u64>,
}

impl StreamMessage {
    /// An SSE message named `event` whose data is `json` (one line).
    pub(crate) fn new(event: &str, json: &str, bars_upto: Option<u64>) -> StreamMessage {
        StreamMessage { text: Bytes::from(format!("event: {event}\ndata: {json}\n\n")), bars_upto }
    }
}

/// What a new subscriber gets first: the picture so far.
#[derive(Debug, Default)]
pub(crate) struct Greeting {
    pub(crate) messages: Vec<StreamMessage>,
    /// Every job bar up to this number is in `messages`.
    pub(crate) bars_upto: u64,
}

/// Builds a new subscriber's greeting (the server's side of the stream).
pub(crate) trait Greeter: Send + Sync {
    fn greeting(&self) -> Greeting;
}

/// The stream's hub: the producer publishes, each `/events` subscribes.
#[derive(Debug)]
pub(crate) struct EventHub {
    sender: broadcast::Sender<Arc<StreamMessage>>,
    subscribers: AtomicUsize,
    max_subscribers: usize,
    /// Messages skipped by subscribers that fell behind, all together.
    skipped: AtomicU64,
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TooManySubscribers(pub(crate) usize);

/// A live subscription; it counts until dropped.
#[derive(Debug)]
pub(crate) struct Subscription {
    hub: Arc<EventHub>,
    pub(crate) receiver: broadcast::Receiver<Arc<StreamMessage>>,
}

impl EventHub {
    pub(crate) fn new(max_subscribers: usize) -> Arc<EventHub> {
        let (sender, _) = broadcast::channel(BACKLOG);
        Arc::new(EventHub {
            sender,
            subscribers: AtomicUsize::new(0),
            max_subscribers,
            skipped: AtomicU64::new(0),
        })
    }

    /// Whether anyone is watching (the producer builds nothing otherwise).
    pub(crate) fn has_subscribers(&self) -> bool {
        self.sender.receiver_count() > 0
    }

    /// Live subscribers.
    pub(crate) fn subscribers(&self) -> usize {
        self.subscribers.load(Ordering::Relaxed)
    }

    /// Messages skipped by slow subscribers since start.
    pub(crate) fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Sends `message` to every subscriber (none: it is dropped).
    pub(crate) fn publish(&self, message: StreamMessage) {
        let _ = self.sender.send(Arc::new(message));
    }

    /// A new subscriber, unless there are `max_subscribers` already.
    ///
    /// # Errors
    /// [`TooManySubscribers`] with the limit.
    pub(crate) fn subscribe(self: &Arc<Self>) -> Result<Subscription, TooManySubscribers> {
        // Relaxed: a count compared with a limit; a race lets at most the
        // racing subscribers past by one each, which the limit tolerates.
        let before = self.subscribers.fetch_add(1, Ordering::Relaxed);
        if before >= self.max_subscribers {
            self.subscribers.fetch_sub(1, Ordering::Relaxed);
            return Err(TooManySubscribers(self.max_subscribers));
        }
        Ok(Subscription { hub: Arc::clone(self), receiver: self.sender.subscribe() })
    }
}

impl Subscription {
    /// The next message, `None` when the hub is gone. A subscriber that fell
    /// more than [`BACKLOG`] behind gets a comment saying how many messages
    /// it missed, then goes on from the oldest kept.
    pub(crate) async fn next(&mut self) -> Option<Arc<StreamMessage>> {
        match self.receiver.recv().await {
            Ok(message) => Some(message),
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                self.hub.skipped.fetch_add(missed, Ordering::Relaxed);
                Some(Arc::new(StreamMessage {
                    text: Bytes::from(format!(": {missed} messages skipped (this browser fell behind)\n\n")),
                    bars_upto: None,
                }))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscribers_are_capped_and_a_dropped_one_frees_its_place() {
        let hub = EventHub::new(2);
        let (a, _b) = (hub.subscribe().unwrap(), hub.subscribe().unwrap());
        assert_eq!(hub.subscribe().unwrap_err(), TooManySubscribers(2));
        drop(a);
        assert!(hub.subscribe().is_ok());
    }

    #[test]
    fn a_slow_subscriber_skips_what_it_missed_instead_of_holding_it() {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let hub = EventHub::new(4);
        let mut slow = hub.subscribe().unwrap();
        for i in 0..(BACKLOG + 10) {
            hub.publish(StreamMessage::new("state", &format!("{{\"n\":{i}}}"), None));
        }
        let first = runtime.block_on(slow.next()).unwrap();
        assert_eq!(
            std::str::from_utf8(&first.text).unwrap(),
            ": 10 messages skipped (this browser fell behind)\n\n"
        );
        let next = runtime.block_on(slow.next()).unwrap();
        assert!(std::str::from_utf8(&next.text).unwrap().contains("\"n\":10"));
        assert_eq!(hub.skipped(), 10);
    }
}
