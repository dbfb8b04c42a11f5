//! **Shared** — what this machine holds, and the checks that keep every count
//! a user can type within it.
//!
//! A count that is too large does not fail politely. Thousands of worker
//! processes fill memory until the kernel's out-of-memory killer picks a
//! victim; a thread that cannot map its stack makes Rust's runtime abort the
//! whole process (`fatal runtime error`), losing every job in flight; a
//! bounded queue of 10¹² slots is allocated up front and aborts at start.
//! So every such count — `--workers`, `--max-connections`, `--concurrency`,
//! `--queue-capacity`, `--cache-entries`, … and their environment forms,
//! which go through the same checks — is compared at start with what the
//! machine holds, and a count that does not fit is refused with a sentence
//! naming the flag, the limit that decides, and what to do.
//!
//! The limits are read once ([`Machine::read`]); the costs are constants
//! below, each with the reason for its value. The rules take the limits as
//! an argument, so the unit tests check them against made-up machines.

use std::fmt;

/// Threads per job connection on the server: its reader and its writer.
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

/// Memory one worker process takes: a debug build with the shipped model
/// loaded measures ~54 MB resident, a release build ~20 MB; counted at the
/// larger figure so that a farm that passes the check also fits.
pub(crate) const WORKER_PROCESS_MEMORY: u64 = 64 << 20;
/// Threads and processes one worker process costs: its own thread, plus the
/// thread that drives it in the server (or host).
const THREADS_PER_WORKER_PROCESS: u64 = 2;
/// Memory one worker thread takes: its stack (reserved, mostly untouched)
/// and its own model session for predictions.
pub(crate) const WORKER_THREAD_MEMORY: u64 = 8 << 20;
/// The share of the machine's available memory that one count may claim:
/// the rest stays for everything else the process and the machine do.
const MEMORY_SHARE_NUMERATOR: u64 = 3;
const MEMORY_SHARE_DENOMINATOR: u64 = 4;

/// The machine's limits that bound the counts a user can type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Machine {
    /// CPU cores this process may run on.
    pub(crate) cores: usize,
    /// Memory available for new work, in bytes: `MemAvailable`, or the
    /// memory cgroup's limit when that is lower.
    pub(crate) memory: u64,
    /// `RLIMIT_NOFILE` (the hard limit: the server raises its soft limit to it).
    pub(crate) open_files: u64,
    /// `vm.max_map_count`, minus the mappings the process already has.
    pub(crate) free_maps: u64,
    /// The smaller of `kernel.threads-max`, `kernel.pid_max` and
    /// `RLIMIT_NPROC` (threads and processes are both tasks to the kernel).
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

/// How a pool runs its workers, as far as their cost goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WorkerKind {
    /// One process per worker (`--mode processes`).
    Process,
    /// One thread per worker (`--mode threads`).
    Thread,
}

impl From<crate::protocol::Mode> for WorkerKind {
    fn from(mode: crate::protocol::Mode) -> Self {
        match mode {
            crate::protocol::Mode::Processes => WorkerKind::Process,
            crate::protocol::Mode::Threads => WorkerKind::Thread,
        }
    }
}

/// The size of the model file each worker will load (0 when there is none
/// or it cannot be read: loading it then fails with its own message).
pub(crate) fn model_file_bytes(model: Option<&std::path::Path>) -> u64 {
    model.and_then(|path| std::fs::metadata(path).ok()).map_or(0, |meta| meta.len())
}

impl Machine {
    /// Reads the limits from `/proc`, `/sys/fs/cgroup` and `getrlimit`; a
    /// limit that cannot be read counts as unlimited (it then decides nothing).
    pub(crate) fn read() -> Machine {
        use nix::sys::resource::{getrlimit, Resource};
        let proc_number =
            |path: &str| -> Option<u64> { std::fs::read_to_string(path).ok()?.trim().parse().ok() };
        let open_files = getrlimit(Resource::RLIMIT_NOFILE).map_or(u64::MAX, |(_, hard)| hard);
        let used_maps =
            std::fs::read_to_string("/proc/self/maps").map_or(0, |maps| maps.lines().count() as u64);
        let free_maps =
            proc_number("/proc/sys/vm/max_map_count").map_or(u64::MAX, |max| max.saturating_sub(used_maps));
        let threads_max = proc_number("/proc/sys/kernel/threads-max").unwrap_or(u64::MAX);
        let pid_max = proc_number("/proc/sys/kernel/pid_max").unwrap_or(u64::MAX);
        let nproc = getrlimit(Resource::RLIMIT_NPROC).map_or(u64::MAX, |(soft, _)| soft);
        // cgroup v2 says "max" for no limit, v1 a huge number: both fail or
        // exceed MemAvailable, so they decide nothing.
        let cgroup_memory = proc_number("/sys/fs/cgroup/memory.max")
            .or_else(|| proc_number("/sys/fs/cgroup/memory/memory.limit_in_bytes"))
            .unwrap_or(u64::MAX);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory: available_memory().unwrap_or(u64::MAX).min(cgroup_memory),
            open_files,
            free_maps,
            threads: threads_max.min(pid_max).min(nproc),
        }
    }

    /// The job connections these limits hold, with room kept for the rest.
    pub(crate) fn connections(&self) -> Capacity {
        let by_files = self.open_files.saturating_sub(RESERVED_FILES) / FILES_PER_CONNECTION;
        let by_maps =
            self.free_maps.saturating_sub(RESERVED_MAPS) / (MAPS_PER_THREAD * THREADS_PER_CONNECTION);
        let by_threads = self.threads.saturating_sub(RESERVED_THREADS) / THREADS_PER_CONNECTION;
        let (connections, decided_by) = tightest([
            (by_files, "the open-files limit (ulimit -n)"),
            (by_maps, "vm.max_map_count (sysctl vm.max_map_count)"),
            (by_threads, "the thread limits (kernel.threads-max, kernel.pid_max, ulimit -u)"),
        ]);
        Capacity { connections: usize::try_from(connections).unwrap_or(usize::MAX), decided_by }
    }

    /// The memory one count may claim: three quarters of what is available.
    pub(crate) fn memory_share(&self) -> u64 {
        self.memory / MEMORY_SHARE_DENOMINATOR * MEMORY_SHARE_NUMERATOR
    }

    /// The most workers of this kind the machine holds when each loads a
    /// model of `model_bytes`, and which limit decides.
    pub(crate) fn workers(&self, kind: WorkerKind, model_bytes: u64) -> (u64, &'static str) {
        let (base, threads_each, maps_each) = match kind {
            WorkerKind::Process => (WORKER_PROCESS_MEMORY, THREADS_PER_WORKER_PROCESS, MAPS_PER_THREAD),
            WorkerKind::Thread => (WORKER_THREAD_MEMORY, 1, MAPS_PER_THREAD),
        };
        let memory_each = worker_memory(base, model_bytes);
        tightest([
            (self.memory_share() / memory_each, "memory"),
            (self.threads.saturating_sub(RESERVED_THREADS) / threads_each, "the thread and process limits"),
            (self.free_maps.saturating_sub(RESERVED_MAPS) / maps_each, "vm.max_map_count"),
        ])
    }

    /// Checks a worker count (`flag` names where it came from).
    ///
    /// # Errors
    /// A sentence naming the flag, the most this machine holds, the limit
    /// that decides it and why.
    pub(crate) fn check_workers(
        &self,
        flag: &str,
        workers: usize,
        kind: WorkerKind,
        model_bytes: u64,
    ) -> Result<(), String> {
        let (most, decided_by) = self.workers(kind, model_bytes);
        if workers as u64 <= most {
            return Ok(());
        }
        let (what, base, other) = match kind {
            WorkerKind::Process => ("worker process", WORKER_PROCESS_MEMORY, "2 threads"),
            WorkerKind::Thread => ("worker thread", WORKER_THREAD_MEMORY, "4 memory maps"),
        };
        let memory = bytes(worker_memory(base, model_bytes));
        let cost = format!("about {memory} of memory (its own copy of the model included) and {other}");
        Err(format!(
            "{flag} {workers} is more than this machine can hold: at most {most} (limited by {decided_by}: \
             {} available, each {what} takes {cost}); this machine has {} cores, so more workers than \
             a few per core add no speed. Lower {flag}",
            bytes(self.memory),
            self.cores,
        ))
    }

    /// Checks that `count` items of `each` bytes fit in this machine's
    /// memory share (queues, caches, buffers that may fill up).
    ///
    /// # Errors
    /// A sentence naming the flag, the most that fits and why.
    pub(crate) fn check_memory(&self, flag: &str, count: u64, each: u64, what: &str) -> Result<(), String> {
        let most = self.memory_share() / each.max(1);
        if count <= most {
            return Ok(());
        }
        Err(format!(
            "{flag} {count} is more than this machine can hold: at most {most} ({what}, at least {} each, \
             may take three quarters of the {} of memory available). Lower {flag}",
            bytes(each),
            bytes(self.memory),
        ))
    }

    /// Checks a count of threads one process starts (`threads_each` per unit).
    ///
    /// # Errors
    /// A sentence naming the flag, the most that fits and the limit.
    pub(crate) fn check_threads(&self, flag: &str, count: u64, threads_each: u64) -> Result<(), String> {
        let by_threads = self.threads.saturating_sub(RESERVED_THREADS) / threads_each.max(1);
        let by_maps = self.free_maps.saturating_sub(RESERVED_MAPS) / (threads_each.max(1) * MAPS_PER_THREAD);
        let by_files = self.open_files.saturating_sub(RESERVED_FILES);
        let (most, decided_by) = tightest([
            (by_threads, "the thread limits (kernel.threads-max, ulimit -u)"),
            (by_maps, "vm.max_map_count"),
            (by_files, "the open-files limit (ulimit -n)"),
        ]);
        if count <= most {
            return Ok(());
        }
        Err(format!(
            "{flag} {count} is more than this machine can hold: at most {most} (limited by {decided_by}; \
             each takes {threads_each} thread(s) and a socket). Lower {flag}"
        ))
    }
}

/// The smallest of several counts, with the name of the limit behind it.
fn tightest(limits: [(u64, &'static str); 3]) -> (u64, &'static str) {
    limits.into_iter().min_by_key(|(count, _)| *count).expect("three limits")
}

/// A worker's memory: its base cost and its own copy of the model — the
/// file's weights, and as much again for the engine's optimised plan.
fn worker_memory(base: u64, model_bytes: u64) -> u64 {
    base.saturating_add(model_bytes.saturating_mul(2))
}

/// `MemAvailable` from `/proc/meminfo`, in bytes.
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as people read them: 64 MiB, 23.4 GiB.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value.fract() == 0.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine of the issues: 2 cores, ~23 GiB available.
    fn this_machine() -> Machine {
        Machine { cores: 2, memory: 23 << 30, open_files: 20_000, free_maps: 65_530 - 900, threads: 96_365 }
    }

    #[test]
    fn the_tightest_limit_decides_with_room_kept_for_the_rest() {
        // 65,530 maps allow ~7,900 connections.
        let limits = this_machine();
        let capacity = limits.connections();
        assert_eq!(capacity.connections, (65_530 - 900 - 2_048) / 8);
        assert!(capacity.decided_by.contains("max_map_count"));
        let few_files = Machine { open_files: 1_024, ..limits };
        assert_eq!(few_files.connections().connections, 512);
        assert!(few_files.connections().decided_by.contains("open-files"));
        let none_left = Machine { open_files: 100, ..limits };
        assert_eq!(none_left.connections().connections, 0);
    }

    #[test]
    fn a_hundred_thousand_workers_are_refused_naming_the_flag_and_the_limit() {
        let machine = this_machine();
        // Processes: memory decides (23 GiB × 3/4 / 64 MiB = 276).
        assert_eq!(machine.workers(WorkerKind::Process, 0), (276, "memory"));
        assert!(machine.check_workers("--workers", 276, WorkerKind::Process, 0).is_ok());
        // Each worker's copy of a 32 MiB model doubles its cost.
        assert_eq!(machine.workers(WorkerKind::Process, 32 << 20), (138, "memory"));
        let refused = machine.check_workers("--workers", 100_000, WorkerKind::Process, 0).unwrap_err();
        assert!(
            refused.starts_with("--workers 100000 is more than this machine can hold: at most 276"),
            "{refused}"
        );
        assert!(refused.contains("23 GiB available") && refused.contains("2 cores"), "{refused}");
        // Threads: 8 MiB each (23 GiB × 3/4 / 8 MiB = 2,208); with few memory
        // maps left, the maps decide.
        assert_eq!(machine.workers(WorkerKind::Thread, 0), (2_208, "memory"));
        let few_maps = Machine { free_maps: 6_048, ..machine };
        assert_eq!(few_maps.workers(WorkerKind::Thread, 0), (1_000, "vm.max_map_count"));
        assert!(machine.check_workers("THREADCENTER_WORKERS", 100_000, WorkerKind::Thread, 0).is_err());
    }

    #[test]
    fn memory_and_thread_counts_are_checked_against_their_share() {
        let machine = this_machine();
        assert!(machine.check_memory("--queue-capacity", 1024, 1024, "queued jobs").is_ok());
        let refused =
            machine.check_memory("--queue-capacity", u64::MAX / 2, 1024, "queued jobs").unwrap_err();
        assert!(refused.contains("--queue-capacity") && refused.contains("at most 18087936"), "{refused}");
        assert!(machine.check_threads("--concurrency", 4096, 2).is_ok());
        // 8,192 connections of 2 threads need 65,536 maps: more than there are.
        assert!(machine.check_threads("--concurrency", 8192, 2).unwrap_err().contains("vm.max_map_count"));
        let tight = Machine { threads: 1_000, ..machine };
        let refused = tight.check_threads("--concurrency", 8192, 2).unwrap_err();
        assert!(refused.contains("at most 372 (limited by the thread limits"), "{refused}");
    }

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
    }
}
