//! The table of open connections, so the server can close them all at shutdown.

use std::collections::HashMap;
use std::net::Shutdown;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::server::jobs::registry::ConnId;
use crate::server::replies::FlowControl;
use crate::transport::Transport;

/// Open connections by id. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Connections {
    inner: Arc<(Mutex<Table>, Condvar)>,
}

#[derive(Default)]
struct Table {
    next_id: ConnId,
    open: HashMap<ConnId, Entry>,
}

struct Entry {
    stream: Arc<Transport>,
    flow: Option<Arc<FlowControl>>,
}

impl Connections {
    /// Adds a connection and returns its new id.
    pub(crate) fn add(&self, stream: Arc<Transport>) -> ConnId {
        let mut table = self.inner.0.lock().unwrap_or_else(PoisonError::into_inner);
        table.next_id += 1;
        let id = table.next_id;
        table.open.insert(id, Entry { stream, flow: None });
        id
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
        table.open.remove(&id);
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
