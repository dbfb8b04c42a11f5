//! The bridge between the std threads of ThreadCenter and async-nats.
//!
//! async-nats is async (tokio); everything else here is std threads. As the
//! NATS maintainers suggest for such programs, one small runtime runs on its
//! own thread — here a tokio runtime with a single worker thread — and the
//! std side reaches it two ways:
//! - [`Bridge::run`]: a std thread waits for one async operation (connect,
//!   publish and wait for the acknowledgement);
//! - [`Bridge::spawn`]: a long-lived task (a subscription, a fetch loop)
//!   that talks back to the std threads over channels.
//!
//! One runtime thread is enough: it only moves messages; jobs run on the
//! pool's own threads and processes.

use std::future::Future;

use tokio::runtime::{Builder, Runtime};

use crate::error::{Error, Result};

/// A tokio runtime on one worker thread of its own.
pub(crate) struct Bridge {
    runtime: Runtime,
}

impl Bridge {
    /// Starts the runtime thread, named `name` (it shows in logs).
    ///
    /// # Errors
    /// The thread cannot be started.
    pub(crate) fn start(name: &str) -> Result<Bridge> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .build()
            .map_err(|e| Error::io("starting the NATS bridge thread", e))?;
        Ok(Bridge { runtime })
    }

    /// Runs `operation` on the runtime and blocks the calling std thread until
    /// it is done. Never call it from inside a task of this runtime.
    pub(crate) fn run<F: Future>(&self, operation: F) -> F::Output {
        self.runtime.block_on(operation)
    }

    /// Starts a long-lived task on the runtime.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.spawn(task)
    }
}
