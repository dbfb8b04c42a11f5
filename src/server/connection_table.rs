//! The table of open connections, so the server can close them all at
//! shutdown, and count them per client address (`--max-connections-per-ip`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::server::jobs::registry::ConnId;
use crate::server::replies::FlowControl;
use crate::transport::Transport;

/// Open connections by id. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct ConnectionTable {
    inner: Arc<(Mutex<Table>, Condvar)>,
}

#[derive(Default)]
struct Table {
    next_id: ConnId,
    open: HashMap<ConnId, Entry>,
    /// Open connections per client address; an address leaves the map with
    /// its last connection, so the map is never larger than `open`.
    per_address: HashMap<IpAddr, usize>,
}

struct Entry {
    stream: Arc<Transport>,
    flow: Option<Arc<FlowControl>>,
    peer: Option<IpAddr>,
}

impl ConnectionTable {
    /// Adds a connection from `peer` and returns its new id.
    pub(crate) fn add(&self, stream: Arc<Transport>, peer: Option<IpAddr>) -> ConnId {
        let mut table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.next_id += 1;
        let id = table.next_id;
        table.open.insert(id, Entry { stream, flow: None, peer });
        if let Some(peer) = peer {
            *table.per_address.entry(peer).or_default() += 1;
        }
        id
    }

    /// Connections open now from `peer`.
    pub(crate) fn open_from(&self, peer: IpAddr) -> usize {
        let table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.per_address.get(&peer).copied().unwrap_or(0)
    }

    /// Records the connection's flow control, so shutdown can wake a reader
    /// that waits for a reply slot.
    pub(crate) fn set_flow(&self, id: ConnId, flow: Arc<FlowControl>) {
        let mut table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = table.open.get_mut(&id) {
            entry.flow = Some(flow);
        }
    }

    /// Removes a connection that has finished.
    pub(crate) fn remove(&self, id: ConnId) {
        let (lock, emptied) = &*self.inner;
        let mut table = lock.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(peer) = table.open.remove(&id).and_then(|entry| entry.peer) {
            if let std::collections::hash_map::Entry::Occupied(mut count) = table.per_address.entry(peer) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        if table.open.is_empty() {
            emptied.notify_all();
        }
    }

    /// Number of open connections.
    pub(crate) fn len(&self) -> usize {
        self.inner.0.lock().unwrap_or_else(PoisonError::into_inner).open.len()
    }

    /// Stops reading from every socket: readers see end-of-stream and wind
    /// down, while writers still deliver the replies already owed.
    pub(crate) fn close_reads(&self) {
        let table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in table.open.values() {
            let _ = entry.stream.shutdown(Shutdown::Read);
        }
    }

    /// Shuts every socket down (a blocked `read` or `write` returns at once)
    /// and wakes readers waiting for a reply slot. Each connection's own
    /// thread then cleans up and removes itself.
    pub(crate) fn close_all(&self) {
        let table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in table.open.values() {
            let _ = entry.stream.shutdown(Shutdown::Both);
            if let Some(flow) = &entry.flow {
                flow.close();
            }
        }
    }

    /// Waits until every connection has removed itself, or `timeout` passes.
    /// Returns whether all are gone.
    pub(crate) fn wait_until_empty(&self, timeout: Duration) -> bool {
        let (lock, emptied) = &*self.inner;
        let deadline = Instant::now() + timeout;
        let mut table = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while !table.open.is_empty() {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            table = emptied.wait_timeout(table, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }
}
