//! Whether the farm can take a job at all, asked before each one is queued:
//! a job that no worker and no worker host could run is refused at once
//! (`BUSY`, with the reason) rather than left to wait in the queue.
//! Everything else about admission — the queue's room, the rate limit,
//! `--auth-token`, a drain — is decided where its state lives (the
//! [`super::jobs`] queue, the reader's gates).

use super::Farm;
use crate::protocol::ReplyError;

impl Farm {
    /// Why no job can run now, if that is so: no local worker is up and
    /// replacements are held back, and no worker host is connected either
    /// (or this is a pure gateway and no host is connected).
    pub(crate) fn nobody_can_run(&self) -> Option<ReplyError> {
        let hosts_alive = self.remote.as_ref().map_or(0, |remote| remote.hosts.alive());
        // A new gateway holds jobs until it has heard from the hosts.
        if hosts_alive > 0 || self.remote.as_ref().is_some_and(|remote| remote.in_start_grace()) {
            return None;
        }
        if self.board.configured() == 0 {
            return self.remote.as_ref().map(|remote| crate::server::gateway_status::no_host_error(remote));
        }
        self.board.none_can_run().then(crate::server::jobs::no_worker_error)
    }
}
