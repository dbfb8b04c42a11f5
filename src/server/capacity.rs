//! How many job connections this machine can hold, from the limits that a
//! connection spends: each costs two threads (its reader and its writer) and
//! one file descriptor, and each thread costs memory mappings (its stack,
//! the stack's guard page, the signal stack and its guard).
//!
//! Running out of any of these does not fail politely: when a thread cannot
//! map its signal stack, Rust's runtime aborts the whole process, and every
//! job in flight is lost. So `--max-connections` is checked against this
//! capacity at start-up (too high is refused with a sentence naming the
//! limit and how to raise it), and its default is the smaller of 4,096 and
//! the capacity.

use std::fmt;

/// Threads per job connection: the reader and the writer.
const THREADS_PER_CONNECTION: u64 = 2;
/// Memory mappings per thread: stack, guard page, signal stack, its guard.
const MAPS_PER_THREAD: u64 = 4;
/// File descriptors per job connection (one socket, shared by both threads).
const FILES_PER_CONNECTION: u64 = 1;
/// Kept aside for everything else: listeners, worker processes' channels,
/// the metrics endpoint, model files, NATS, libraries' own mappings.
const RESERVED_FILES: u64 = 512;
const RESERVED_MAPS: u64 = 2_048;
const RESERVED_THREADS: u64 = 256;

/// The machine's limits that bound connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SystemLimits {
    /// `RLIMIT_NOFILE` (the hard limit: the server raises its soft limit to it).
    pub(crate) open_files: u64,
    /// `vm.max_map_count`, minus the mappings the process already has.
    pub(crate) free_maps: u64,
    /// The smaller of `kernel.threads-max` and `RLIMIT_NPROC`.
    pub(crate) threads: u64,
}

/// The most connections these limits allow, and which limit decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub(crate) connections: usize,
    pub(crate) decided_by: &'static str,
}

impl fmt::Display for Capacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} connections (limited by {})", self.connections, self.decided_by)
    }
}

impl SystemLimits {
    /// Reads the limits from `/proc` and `getrlimit`; a limit that cannot be
    /// read counts as unlimited (it then decides nothing).
    pub(crate) fn read() -> SystemLimits {
        use nix::sys::resource::{getrlimit, Resource};
        let proc_number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let open_files = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(_, hard)| hard);
        let used_maps =
            std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count() as u64);
        let free_maps =
            proc_number("/proc/sys/vm/max_map_count").map_or(u64::MAX, |max| max.saturating_sub(used_maps));
        let threads_max = proc_number("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
        let nproc = getrlimit(Resource::RLIMIT_NPROC).map_or(u64::MAX, |(soft, _)| soft);
        SystemLimits { open_files, free_maps, threads: threads_max.min(nproc) }
    }

    /// The connections these limits hold, with room kept for the rest.
    pub(crate) fn capacity(&self) -> Capacity {
        let by_files = self.open_files.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
        let by_maps =
            self.free_maps.saturating_sub(RESERVED_MAPS) / (MAPS_PER_THREAD * THREADS_PER_CONNECTION);
        let by_threads = self.threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
        let (connections, decided_by) = [
            (by_files, "the open-files limit (ulimit -n)"),
            (by_maps, "vm.max_map_count (sysctl vm.max_map_count)"),
            (by_threads, "the thread limits (kernel.threads-max, ulimit -u)"),
        ]
        .into_iter()
        .min_by_key(|(n, _)| *n)
        .expect("three limits");
        Capacity { connections: usize::try_from(connections).unwrap_or(usize::MAX), decided_by }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tightest_limit_decides_with_room_kept_for_the_rest() {
        // The machine of the issue: 65,530 maps allow ~7,900 connections.
        let limits = SystemLimits { open_files: 20_000, free_maps: 65_530 - 900, threads: 96_365 };
        let capacity = limits.capacity();
        assert_eq!(capacity.connections, (65_530 - 900 - 2_048) / 8);
        assert!(capacity.decided_by.contains("max_map_count"));
        let few_files = SystemLimits { open_files: 1_024, ..limits };
        assert_eq!(few_files.capacity().connections, 512);
        assert!(few_files.capacity().decided_by.contains("open-files"));
        let none_left = SystemLimits { open_files: 100, ..limits };
        assert_eq!(none_left.capacity().connections, 0);
    }
}
