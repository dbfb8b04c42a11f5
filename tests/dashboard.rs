//! The live dashboard's stream (`/events`) against a real server: every job
//! of a known workload appears once as a bar, a killed worker appears as an
//! event, and the stream is bounded (a cap on subscribers; a browser that
//! stops reading skips messages instead of making the server keep them).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{send_signal, worker_pids, TestServer};

/// The server's backlog of stream messages (`server::http::stream::BACKLOG`).
const BACKLOG: usize = 64;
/// More than a stalled connection of [`small_buffer_connection`] holds:
/// its receive buffer (4 KiB asked, the kernel doubles it), the server's
/// send buffer and the message its writer has in hand — measured at about
/// 130 KB read back after the stall before the skip notice, here.
const STALLED_BUFFERS_AT_MOST: usize = 512 * 1024;

/// A loopback connection whose receive buffer is set small before it
/// connects (so the window it offers is small from the first byte).
fn small_buffer_connection(addr: SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else { panic!("the dashboard listens on IPv4 loopback: {addr}") };
    // SAFETY: plain socket calls on a descriptor this function owns until
    // it hands it to the TcpStream; every result is checked.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let size: libc::c_int = 4096;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::addr_of!(size).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
        let peer = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let connected = libc::connect(
            fd,
            std::ptr::addr_of!(peer).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
        TcpStream::from_raw_fd(fd)
    }
}
use serde_json::{json, Value};

/// One `/events` stream, read on a thread of its own into a list of
/// `(event, data)`; comments come as `(":", text)`.
struct Stream {
    seen: Arc<Mutex<Vec<(String, Value)>>>,
    /// The same socket, to close the stream when dropped.
    socket: TcpStream,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}

impl Stream {
    fn open(addr: SocketAddr) -> Stream {
        // HTTP/1.0: the body then ends with the connection, not in chunks.
        let mut socket = TcpStream::connect(addr).unwrap();
        socket.write_all(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        let handle = socket.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(socket);
            let mut status = String::new();
            reader.read_line(&mut status).unwrap();
            if !status.contains(" 200 ") {
                return; // a refusal: the test reads it another way
            }
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap_or(0) > 2 {
                line.clear(); // the response headers
            }
            let mut event = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let text = line.trim_end();
                if let Some(name) = text.strip_prefix("event: ") {
                    event = name.to_string();
                } else if let Some(data) = text.strip_prefix("data: ") {
                    let value =
                        serde_json::from_str(data).unwrap_or_else(|e| panic!("{event}: not JSON ({e})"));
                    sink.lock().unwrap().push((event.clone(), value));
                } else if let Some(comment) = text.strip_prefix(':') {
                    sink.lock().unwrap().push((":".into(), json!(comment.trim())));
                }
            }
        });
        Stream { seen, socket: handle }
    }

    /// Waits (at most 30 s) until `condition` holds for what was seen.
    fn wait_for(&self, what: &str, condition: impl Fn(&[(String, Value)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if condition(&self.seen.lock().unwrap()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The client ids of every bar seen, in order (summed jobs excluded).
    fn bar_ids(&self) -> Vec<String> {
        bar_ids(&self.seen.lock().unwrap())
    }
}

fn bar_ids(seen: &[(String, Value)]) -> Vec<String> {
    seen.iter()
        .filter(|(event, _)| event == "bars")
        .flat_map(|(_, data)| data["bars"].as_array().cloned().unwrap_or_default())
        .map(|bar| bar["id"].as_str().unwrap().to_string())
        .collect()
}

fn dashboard_server(extra: &[&str]) -> TestServer {
    let mut args = vec!["--metrics-addr", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    TestServer::start("processes", 2, &args)
}

#[test]
fn every_job_is_one_bar_and_a_killed_worker_is_an_event() {
    let server = dashboard_server(&[]);
    let addr = server.metrics_addr.unwrap();
    let stream = Stream::open(addr);
    stream.wait_for("the greeting", |seen| seen.iter().any(|(event, _)| event == "hello"));
    // A known workload: 40 jobs with ids of our own, pipelined.
    let mut client = server.connect();
    let ids: Vec<String> = (0..40).map(|i| format!("job-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client.send(&json!({"id": id, "cmd": "compute", "n": 1000 + i}));
    }
    for _ in &ids {
        assert!(client.recv()["result"].is_u64());
    }
    let quoted: Vec<String> = ids.iter().map(|id| format!("\"{id}\"")).collect();
    stream.wait_for("a bar for every job", |seen| {
        let bars = bar_ids(seen);
        quoted.iter().all(|id| bars.contains(id))
    });
    let bars = stream.bar_ids();
    for id in &quoted {
        assert_eq!(bars.iter().filter(|bar| *bar == id).count(), 1, "{id} once: {bars:?}");
    }
    // A killed worker: an event says it was replaced, with its old pid.
    let pid = worker_pids(&server.stats())[0];
    send_signal(pid, libc::SIGKILL);
    stream.wait_for("the replacement event", |seen| {
        seen.iter().any(|(event, data)| {
            event == "events"
                && data.as_array().unwrap().iter().any(|e| {
                    e["kind"] == "worker_replaced"
                        && e["text"].as_str().unwrap().contains(&format!("pid {pid} →"))
                })
        })
    });
    // A page opened now is greeted with the bars so far, each once, and the event.
    let late = Stream::open(addr);
    late.wait_for("the late greeting", |seen| seen.iter().any(|(event, _)| event == "events"));
    let bars = late.bar_ids();
    for id in &quoted {
        assert_eq!(bars.iter().filter(|bar| *bar == id).count(), 1, "late page: {id} once: {bars:?}");
    }
    // The header facts and a state with the workers.
    let seen = late.seen.lock().unwrap();
    let hello = &seen.iter().find(|(event, _)| event == "hello").unwrap().1;
    assert_eq!((hello["mode"].as_str(), hello["workers"].as_u64()), (Some("processes"), Some(2)), "{hello}");
    // ... and the line charts' points so far, so its charts start full.
    let points = hello["points"].as_array().unwrap();
    assert!(points.len() >= 2 && points.iter().any(|p| p["ok"].as_f64() > Some(0.0)), "{}", hello["points"]);
    let state = &seen.iter().find(|(event, _)| event == "state").unwrap().1;
    assert_eq!(state["report"]["worker_list"].as_array().unwrap().len(), 2, "{state}");
}

#[test]
fn with_the_gil_the_stream_shows_the_lock_changing_hands_never_two_at_once() {
    // Two threads under the GIL, each with long computes: the `gil`
    // messages give each turn; turns of different workers never overlap.
    let args = ["--metrics-addr", "127.0.0.1:0", "--gil", "--switch-interval", "2ms"];
    let server = TestServer::start("threads", 2, &args);
    let stream = Stream::open(server.metrics_addr.unwrap());
    stream.wait_for("the greeting", |seen| seen.iter().any(|(event, _)| event == "hello"));
    let mut clients: Vec<_> = (0..2).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        for j in 0..3 {
            client.send(&json!({"id": format!("{i}-{j}"), "cmd": "compute", "n": 20_000_000 + j}));
        }
    }
    let turns = |seen: &[(String, Value)]| -> Vec<(u64, u64, u64)> {
        seen.iter()
            .filter(|(event, _)| event == "gil")
            .flat_map(|(_, data)| data["turns"].as_array().cloned().unwrap_or_default())
            .map(|t| {
                (
                    t["worker"].as_u64().unwrap(),
                    t["start_us"].as_u64().unwrap(),
                    t["end_us"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    stream.wait_for("turns of both workers, many times over", |seen| {
        let turns = turns(seen);
        turns.len() >= 20 && (0..2).all(|w| turns.iter().filter(|t| t.0 == w).count() >= 5)
    });
    for client in &mut clients {
        for _ in 0..3 {
            assert!(client.recv()["result"].is_u64());
        }
    }
    let mut turns = turns(&stream.seen.lock().unwrap());
    turns.sort_by_key(|t| t.1);
    turns.dedup();
    for pair in turns.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        assert!(a.1 <= a.2, "a turn ends after it starts: {a:?}");
        if a.0 != b.0 {
            assert!(a.2 <= b.1, "two workers held the GIL at once: {a:?} and {b:?}");
        }
    }
}

#[test]
fn streams_past_the_cap_get_503_and_the_endpoint_still_answers() {
    let server = dashboard_server(&["--metrics-max-streams", "2"]);
    let addr = server.metrics_addr.unwrap();
    let (a, b) = (Stream::open(addr), Stream::open(addr));
    for stream in [&a, &b] {
        stream.wait_for("a greeting", |seen| seen.iter().any(|(event, _)| event == "hello"));
    }
    let mut third = TcpStream::connect(addr).unwrap();
    third.write_all(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.0 503") || answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("--metrics-max-streams"), "{answer}");
    assert_eq!(server.http_get("/healthz").0, 200);
}

#[test]
fn a_browser_that_stops_reading_skips_messages_instead_of_holding_them() {
    let server = dashboard_server(&[]);
    let addr = server.metrics_addr.unwrap();
    // A reader that reads its greeting, then nothing for a while — with a
    // receive buffer as small as the kernel allows, so what the stalled
    // connection can hold is bounded (the server's send buffer, which does
    // not grow towards a receiver that reads nothing, and this one), not
    // the tens of megabytes loopback autotuning may allow.
    let mut socket = small_buffer_connection(addr);
    socket.write_all(b"GET /events HTTP/1.0\r\n\r\n").unwrap();
    let mut first = [0u8; 1024];
    assert!(socket.read(&mut first).unwrap() > 0);
    // Load: thousands of short jobs make big bar messages, which fill the
    // stalled connection's buffers, and then more messages than the shared
    // backlog keeps go by (counted on a second stream that does read).
    let observer = Stream::open(addr);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|c| {
            let mut client = server.connect();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut round = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for i in 0..50 {
                        client.send(&json!({"id": format!("c{c}-{round}-{i}"), "cmd": "compute", "n": 1}));
                    }
                    for _ in 0..50 {
                        client.recv();
                    }
                    round += 1;
                }
            })
        })
        .collect();
    // Enough messages and enough bytes gone by that the stalled connection
    // is more than the backlog behind, whatever the messages' size (under
    // a loaded machine's slower jobs the bars are smaller, and more of them
    // fit in the same buffers).
    let messages = 3 * BACKLOG;
    observer.wait_for("many messages and bytes on the stream that reads", |seen| {
        let bytes: usize = seen.iter().map(|(_, data)| data.to_string().len()).sum();
        seen.len() > messages && bytes > STALLED_BUFFERS_AT_MOST
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }
    // Reading again, it is told what it missed.
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut text = Vec::new();
    let mut buffer = [0u8; 65536];
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until && !String::from_utf8_lossy(&text).contains("messages skipped") {
        match socket.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => text.extend_from_slice(&buffer[..n]),
        }
    }
    let said = String::from_utf8_lossy(&text);
    assert!(
        said.contains("messages skipped (this browser fell behind)"),
        "{} bytes read after the stall, no skip said; the last of them: {:?}",
        text.len(),
        &said[said.len().saturating_sub(300)..]
    );
    let reading = Stream::open(addr);
    reading.wait_for("a state", |seen| seen.iter().any(|(event, _)| event == "state"));
    let seen = reading.seen.lock().unwrap();
    let state = &seen.iter().find(|(event, _)| event == "state").unwrap().1;
    assert!(state["stream"]["skipped"].as_u64().unwrap() > 0, "{}", state["stream"]);
}
