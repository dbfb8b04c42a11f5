//! **Shared by gateways and worker hosts** — what a heartbeat may say, and
//! how many jobs one message may carry.
//!
//! A gateway keeps a table of the hosts it hears from; anyone who can publish
//! on the heartbeat subject can add to it. So every field that reaches the
//! table is bounded here, and `tc-worker --name` is checked against the same
//! rule at start, so a real host is never one the gateway would refuse.

/// Longest host name, in bytes: enough for a host name and a process id.
pub(crate) const MAX_HOST_NAME: usize = 64;

/// Most workers one host may announce. Far above what one machine holds
/// (`tc-worker --workers` is also bounded by the machine's memory), but it
/// keeps a forged heartbeat from claiming unbounded capacity.
pub(crate) const MAX_HOST_SLOTS: usize = 1024;

/// Most jobs one stream message (a parcel) carries. A gateway packs at
/// most this many; a host refuses a message with more (so what one pull
/// brings is bounded: slots × this).
pub(crate) const MAX_PARCEL_JOBS: usize = 64;

/// Why `name` cannot be a host name, or `None` when it can: 1 to
/// [`MAX_HOST_NAME`] bytes of `A-Z a-z 0-9 . _ -`.
pub(crate) fn host_name_problem(name: &str) -> Option<String> {
    if name.is_empty() || name.len() > MAX_HOST_NAME {
        return Some(format!("a host name has 1 to {MAX_HOST_NAME} bytes, not {}", name.len()));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    name.chars()
        .find(|&c| !allowed(c))
        .map(|c| format!("a host name has only letters, digits, '.', '_' and '-', not {c:?}"))
}

/// Why a heartbeat with these fields is not believable, or `None`.
pub(crate) fn heartbeat_problem(name: &str, slots: usize, busy: usize, mode: &str) -> Option<String> {
    if let Some(problem) = host_name_problem(name) {
        return Some(problem);
    }
    if slots == 0 || slots > MAX_HOST_SLOTS {
        return Some(format!("a host has 1 to {MAX_HOST_SLOTS} slots, not {slots}"));
    }
    // A host pulls one message per free slot (a message holds up to
    // MAX_PARCEL_JOBS jobs), but one may be pulled while the one before it
    // is still leaving the table: allow twice that.
    let most = 2 * slots * MAX_PARCEL_JOBS;
    if busy > most {
        return Some(format!("a host with {slots} slots holds at most {most} jobs, not {busy}"));
    }
    if mode != "threads" && mode != "processes" {
        return Some("a host's mode is threads or processes".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_short_and_plain() {
        assert_eq!(host_name_problem("lab-pc.07_a"), None);
        assert!(host_name_problem("").is_some());
        assert!(host_name_problem(&"a".repeat(MAX_HOST_NAME)).is_none());
        assert!(host_name_problem(&"a".repeat(MAX_HOST_NAME + 1)).is_some());
        assert!(host_name_problem("a b").is_some());
        assert!(host_name_problem("a/b").is_some());
        assert!(host_name_problem("é").is_some());
    }

    #[test]
    fn heartbeat_fields_are_bounded() {
        assert_eq!(heartbeat_problem("h", 4, 4, "threads"), None);
        assert_eq!(heartbeat_problem("h", 4, 0, "processes"), None);
        assert!(heartbeat_problem("h", 0, 0, "threads").is_some());
        assert!(heartbeat_problem("h", MAX_HOST_SLOTS + 1, 0, "threads").is_some());
        assert_eq!(
            heartbeat_problem("h", 4, 2 * 4 * MAX_PARCEL_JOBS, "threads"),
            None,
            "parcels of short jobs"
        );
        assert!(heartbeat_problem("h", 4, 2 * 4 * MAX_PARCEL_JOBS + 1, "threads").is_some());
        assert!(heartbeat_problem("h", 4, 0, "fibers").is_some());
    }
}
