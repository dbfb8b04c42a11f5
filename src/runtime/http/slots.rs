//! The endpoint's connection slots: at most `max_connections` at once, and
//! room for a new one made by closing the oldest connection that has not
//! sent a request yet.
//!
//! An idle connection costs a task and a socket here, not a thread, but it
//! still takes one of the bounded slots. If a full endpoint simply refused
//! newcomers, a client holding the slots with connections that never speak
//! would keep out the liveness probe that decides whether the server is
//! killed. So a newcomer takes the slot of the oldest connection still
//! *waiting for its request* (it had its chance); connections that did ask
//! — a scrape being written, a dashboard stream — are never pushed out, and
//! when every slot holds one of those the newcomer gets `503`.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The slots of one endpoint.
#[derive(Debug)]
pub(super) struct Slots {
    max: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    /// Every open connection, with the way to close it.
    open: HashMap<u64, oneshot::Sender<()>>,
    /// The open connections that have not sent a request, oldest first
    /// (ids grow with time).
    waiting: BTreeSet<u64>,
}

/// A connection's hold on a slot; the slot is freed when this is dropped.
#[derive(Debug)]
pub(super) struct Ticket {
    id: u64,
    slots: Arc<Slots>,
}

/// Fires when a newcomer took a connection's slot.
pub(super) type Evicted = oneshot::Receiver<()>;

impl Slots {
    pub(super) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots { max: max.max(1), inner: Mutex::default() })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a new connection, closing the oldest silent one when
    /// full; `None` when every slot holds a connection that asked.
    pub(super) fn admit(self: &Arc<Self>) -> Option<(Ticket, Evicted)> {
        let mut inner = self.lock();
        if inner.open.len() >= self.max {
            let oldest = inner.waiting.pop_first()?;
            if let Some(close) = inner.open.remove(&oldest) {
                // The connection may have ended on its own meanwhile.
                let _ = close.send(());
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let (close, evicted) = oneshot::channel();
        inner.open.insert(id, close);
        inner.waiting.insert(id);
        Some((Ticket { id, slots: Arc::clone(self) }, evicted))
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Ticket {
    /// The connection sent its request: from now on it keeps its slot.
    pub(super) fn asked(&self) {
        self.slots.lock().waiting.remove(&self.id);
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut inner = self.slots.lock();
        inner.open.remove(&self.id);
        inner.waiting.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_takes_the_slot_of_the_oldest_silent_connection() {
        let slots = Slots::new(2);
        let (first, mut first_evicted) = slots.admit().unwrap();
        let (second, mut second_evicted) = slots.admit().unwrap();
        let third = slots.admit().expect("room made");
        assert_eq!(first_evicted.try_recv(), Ok(()), "the oldest silent one goes");
        assert!(second_evicted.try_recv().is_err());
        drop(first);
        assert_eq!(slots.open(), 2);
        drop((second, third));
        assert_eq!(slots.open(), 0);
    }

    #[test]
    fn connections_that_asked_keep_their_slots_and_a_newcomer_is_refused() {
        let slots = Slots::new(2);
        let ((a, mut a_evicted), (b, mut b_evicted)) = (slots.admit().unwrap(), slots.admit().unwrap());
        a.asked();
        b.asked();
        assert!(slots.admit().is_none());
        assert!(a_evicted.try_recv().is_err() && b_evicted.try_recv().is_err());
        drop(a);
        assert!(slots.admit().is_some(), "a freed slot is taken");
    }
}
