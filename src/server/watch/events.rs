//! The dashboard's events, found by comparing two readings of the `stats`
//! report: the workers and the request path do nothing extra for them.
//! Each is `{"t_us", "kind", "text"}` plus what names its subject (a
//! worker, a host, a count).

use serde_json::{json, Value};

/// What changed between two readings, as events: workers replaced, down or
/// held back; counters that grew (retries, timeouts, crashes, BUSY,
/// redeliveries); a drain; worker hosts joining, lost or back.
pub(super) fn changes(before: &Value, after: &Value, t_us: u64) -> Vec<Value> {
    let mut events = Events { t_us, list: Vec::new() };
    worker_changes(before, after, &mut events);
    counter_changes(before, after, &mut events);
    if after["draining"] == true && before["draining"] != true {
        events.push("drain", "drain started: no new requests, finishing those in flight".into(), json!({}));
    }
    host_changes(before, after, &mut events);
    events.list
}

/// The events of one frame, all stamped with its time.
struct Events {
    t_us: u64,
    list: Vec<Value>,
}

impl Events {
    fn push(&mut self, kind: &str, text: String, extra: Value) {
        let mut value = json!({"t_us": self.t_us, "kind": kind, "text": text});
        if let (Some(map), Value::Object(extra)) = (value.as_object_mut(), extra) {
            map.extend(extra);
        }
        self.list.push(value);
    }
}

/// A worker replaced (more restarts), down, or held back by the restart
/// budget. At a stop every worker goes down on purpose: not an event.
fn worker_changes(before: &Value, after: &Value, events: &mut Events) {
    let empty = Vec::new();
    let workers_before = before["worker_list"].as_array().unwrap_or(&empty);
    let stopping = after["draining"] == true;
    for worker in after["worker_list"].as_array().unwrap_or(&empty) {
        let id = worker["id"].as_u64().unwrap_or(0);
        let Some(old) = workers_before.iter().find(|w| w["id"] == worker["id"]) else { continue };
        let restarts = worker["restarts"].as_u64().unwrap_or(0);
        if restarts > old["restarts"].as_u64().unwrap_or(0) {
            let pids = match (old["pid"].as_u64(), worker["pid"].as_u64()) {
                (Some(a), Some(b)) if a != b => format!(" (pid {a} → {b})"),
                _ => String::new(),
            };
            events.push(
                "worker_replaced",
                format!("worker {id} replaced{pids}, restart {restarts}"),
                json!({"worker": id}),
            );
        }
        if worker["state"] == old["state"] || stopping {
            continue;
        }
        match worker["state"].as_str() {
            Some("down") => events.push("worker_down", format!("worker {id} down"), json!({"worker": id})),
            Some("throttled") => events.push(
                "worker_throttled",
                format!("worker {id} held back: too many restarts (--max-restarts in --restart-window)"),
                json!({"worker": id}),
            ),
            _ => {}
        }
    }
}

/// A counted event, by how much its counter grew since the last frame.
fn counter_changes(before: &Value, after: &Value, events: &mut Events) {
    let grew = |path: &[&str]| -> u64 {
        let get = |report: &Value| path.iter().fold(report, |value, key| &value[key]).as_u64().unwrap_or(0);
        get(after).saturating_sub(get(before))
    };
    for (path, kind, (one, many), what) in [
        (&["jobs", "retried"][..], "job_retried", ("job", "jobs"), "retried on another worker after a crash"),
        (&["errors", "TIMEOUT"][..], "job_timed_out", ("job", "jobs"), "answered TIMEOUT (--job-timeout)"),
        (&["errors", "WORKER_CRASHED"][..], "worker_crashed", ("job", "jobs"), "answered WORKER_CRASHED"),
        (
            &["errors", "BUSY"][..],
            "busy",
            ("request", "requests"),
            "refused BUSY: the queue or the connections were full",
        ),
        (
            &["remote", "redelivered"][..],
            "redelivered",
            ("job", "jobs"),
            "redelivered by NATS to another host",
        ),
    ] {
        let n = grew(path);
        if n > 0 {
            let noun = if n == 1 { one } else { many };
            events.push(kind, format!("{n} {noun} {what}"), json!({"count": n}));
        }
    }
}

/// A worker host joined, lost (no heartbeat) or back (gateways only).
fn host_changes(before: &Value, after: &Value, events: &mut Events) {
    let empty = Vec::new();
    let hosts_before = before["hosts"].as_array().unwrap_or(&empty);
    for host in after["hosts"].as_array().unwrap_or(&empty) {
        let name = host["name"].as_str().unwrap_or_default();
        match hosts_before.iter().find(|h| h["name"] == host["name"]) {
            None => events.push("host_joined", format!("worker host {name} joined"), json!({"host": name})),
            Some(old) if old["alive"] == true && host["alive"] != true => events.push(
                "host_lost",
                format!("worker host {name} lost (no heartbeat)"),
                json!({"host": name}),
            ),
            Some(old) if old["alive"] != true && host["alive"] == true => {
                events.push("host_back", format!("worker host {name} back"), json!({"host": name}))
            }
            Some(_) => {}
        }
    }
}
