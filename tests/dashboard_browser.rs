//! The dashboard in a real headless browser: Debian's chromium, driven over
//! WebDriver by its chromedriver, against a real `tc-server` under load.
//! Everything asserted is read from the rendered page (its DOM): the worker
//! rows, a throughput figure that changes, and a killed worker that shows up
//! as an event while its replacement takes its row.
//!
//! The WebDriver protocol is JSON over HTTP; the few calls needed here are
//! written out with std's TCP (a client crate would pull in an async stack
//! for five requests).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{send_signal, worker_pids, TestServer};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Driver {
        // A free port for chromedriver (it takes a number, not port 0).
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let driver = Driver { child, addr: SocketAddr::from(([127, 0, 0, 1], port)) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while driver.call("GET", "/status", None).ok().and_then(|s| s["value"]["ready"].as_bool())
            != Some(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        driver
    }

    /// One WebDriver call: `method path` with a JSON body, the JSON answer.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let mut socket = TcpStream::connect(self.addr).map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        socket.write_all(request.as_bytes()).map_err(|e| e.to_string())?;
        let mut reader = BufReader::new(socket);
        let mut line = String::new();
        let mut length = None;
        loop {
            line.clear();
            reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = value.trim().parse::<usize>().ok();
            }
        }
        let mut answer = Vec::new();
        match length {
            Some(n) => {
                answer.resize(n, 0);
                reader.read_exact(&mut answer).map_err(|e| e.to_string())?;
            }
            None => {
                reader.read_to_end(&mut answer).map_err(|e| e.to_string())?;
            }
        }
        serde_json::from_slice(&answer).map_err(|e| format!("{e}: {}", String::from_utf8_lossy(&answer)))
    }
}

/// A browser session, closed on drop.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl<'a> Browser<'a> {
    fn open(driver: &'a Driver) -> Browser<'a> {
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1400,1100"],
            },
        }}});
        let answer = driver.call("POST", "/session", Some(&capabilities)).expect("a session");
        let session = answer["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {answer}"));
        Browser { driver, session: session.to_string() }
    }

    fn go(&self, url: &str) {
        self.driver
            .call("POST", &format!("/session/{}/url", self.session), Some(&json!({"url": url})))
            .unwrap();
    }

    /// Runs `script` in the page and returns what it returns.
    fn run(&self, script: &str) -> Value {
        let body = json!({"script": script, "args": []});
        let answer = self
            .driver
            .call("POST", &format!("/session/{}/execute/sync", self.session), Some(&body))
            .unwrap();
        answer["value"].clone()
    }

    /// Waits (at most 30 s) until `script` returns something `done` accepts.
    fn wait_for(&self, what: &str, script: &str, mut done: impl FnMut(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let value = self.run(script);
            if done(&value) {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; last: {value}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self.driver.call("DELETE", &format!("/session/{}", self.session), None);
    }
}

/// Whether chromium and its driver are here; if not, says the test was
/// SKIPPED (and under `CI=true` fails it).
fn browser_available(test: &str) -> bool {
    let here = std::path::Path::new(CHROMIUM).exists() && std::path::Path::new(CHROMEDRIVER).exists();
    if !here {
        common::skipped(
            test,
            "chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)",
        );
    }
    here
}

#[test]
fn the_dashboard_shows_the_workers_live_and_a_killed_worker_and_its_replacement() {
    if !browser_available("the_dashboard_shows_the_workers_live_and_a_killed_worker_and_its_replacement") {
        return;
    }
    let server = TestServer::start("processes", 2, &["--metrics-addr", "127.0.0.1:0"]);
    let url = format!("http://{}/", server.metrics_addr.unwrap());
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&url);
    // The header and one row per worker, with its pid.
    let rows = browser.wait_for(
        "two worker rows",
        "return [...document.querySelectorAll('#worker-table tr[data-worker]')].map(r => r.innerText)",
        |rows| rows.as_array().is_some_and(|r| r.len() == 2),
    );
    assert_eq!(browser.run("return document.getElementById('mode').textContent"), "processes");
    let pids = worker_pids(&server.stats());
    for pid in &pids {
        assert!(rows.to_string().contains(&pid.to_string()), "pid {pid} in {rows}");
    }
    // Load: the throughput figure changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, mut client) = (std::sync::Arc::clone(&stop), server.connect());
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                client.send(&json!({"id": i, "cmd": "compute", "n": 20_000}));
                client.send(&json!({"id": i + 1, "cmd": "compute", "n": 20_000}));
                client.recv();
                client.recv();
                i += 2;
            }
        })
    };
    let read_ok = "return document.getElementById('ok-per-s').textContent";
    let mut figures = std::collections::BTreeSet::new();
    browser.wait_for("the throughput figure to change", read_ok, |value| {
        figures.insert(value.to_string());
        figures.len() >= 3
    });
    // Kill a worker under load: the page lists the event, with its pid,
    // and the row shows the replacement's pid.
    let killed = pids[0];
    send_signal(killed, libc::SIGKILL);
    let event = browser.wait_for(
        "the replacement event",
        "return [...document.querySelectorAll('#events-log li[data-kind=worker_replaced]')].map(e => e.innerText)",
        |events| events.as_array().is_some_and(|e| !e.is_empty()),
    );
    assert!(event.to_string().contains(&format!("pid {killed} →")), "{event}");
    let rows = browser.wait_for(
        "the replacement's row",
        "return [...document.querySelectorAll('#worker-table tr[data-worker]')].map(r => r.innerText)",
        |rows| {
            !rows.to_string().contains(&killed.to_string()) && rows.as_array().is_some_and(|r| r.len() == 2)
        },
    );
    let new_pids = worker_pids(&server.stats());
    assert!(new_pids.iter().all(|pid| rows.to_string().contains(&pid.to_string())), "{new_pids:?} in {rows}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
}

#[test]
fn with_the_gil_the_page_shows_each_workers_share_of_the_lock() {
    if !browser_available("with_the_gil_the_page_shows_each_workers_share_of_the_lock") {
        return;
    }
    let args = ["--metrics-addr", "127.0.0.1:0", "--gil", "--switch-interval", "5ms"];
    let server = TestServer::start("threads", 2, &args);
    let url = format!("http://{}/", server.metrics_addr.unwrap());
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&url);
    browser.wait_for(
        "two worker rows",
        "return document.querySelectorAll('#worker-table tr[data-worker]').length",
        |rows| rows == 2,
    );
    // Two clients keep both threads computing, so they take turns.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loads: Vec<_> = (0..2)
        .map(|_| {
            let (stop, mut client) = (std::sync::Arc::clone(&stop), server.connect());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    client.send(&json!({"id": i, "cmd": "compute", "n": 5_000_000}));
                    client.recv();
                    i += 1;
                }
            })
        })
        .collect();
    // "GIL held in the last second: worker 0 48% · worker 1 51%": both
    // named, both holding it a while, together never more than the whole
    // second (a few points of rounding and of frames' timing allowed).
    let share = browser.wait_for(
        "both workers' share of the GIL",
        "return document.getElementById('gil-share').textContent",
        |text| {
            let text = text.as_str().unwrap_or("");
            let shares: Vec<u64> = text
                .split('·')
                .filter_map(|part| part.trim().trim_end_matches('%').rsplit(' ').next()?.parse().ok())
                .collect();
            shares.len() == 2 && shares.iter().all(|&s| s >= 5)
        },
    );
    let text = share.as_str().unwrap().to_string();
    let total: u64 = text
        .split('·')
        .filter_map(|p| p.trim().trim_end_matches('%').rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(total <= 110, "the two shares add up to more than one lock's worth: {text}");
    let legend = browser.run("return document.getElementById('legend').innerText");
    assert!(legend.to_string().contains("holding the GIL"), "{legend}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for load in loads {
        load.join().unwrap();
    }
}

/// Opens `/events` on `addr` and reads its first bytes: a live stream,
/// held as long as the returned socket lives.
fn hold_a_stream(addr: SocketAddr) -> TcpStream {
    let mut socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(socket, "GET /events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").unwrap();
    let mut first = [0u8; 12];
    socket.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200", "the held stream was taken");
    socket
}

#[test]
fn a_page_refused_or_left_by_its_farm_says_why_and_comes_back_by_itself() {
    if !browser_available("a_page_refused_or_left_by_its_farm_says_why_and_comes_back_by_itself") {
        return;
    }
    let mut server =
        TestServer::start("threads", 1, &["--metrics-addr", "127.0.0.1:0", "--metrics-max-streams", "1"]);
    let addr = server.metrics_addr.unwrap();
    // The one stream allowed is taken: the page must say so, not stay blank.
    let held = hold_a_stream(addr);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&format!("http://{addr}/"));
    let read_banner = "const b = document.getElementById('banner'); return b.hidden ? '' : b.textContent";
    let refused = browser.wait_for("the refusal's banner", read_banner, |text| {
        text.as_str().is_some_and(|t| t.contains("HTTP 503"))
    });
    assert!(refused.to_string().contains("--metrics-max-streams"), "names the limit: {refused}");
    assert_eq!(browser.run("return document.getElementById('link').textContent"), "refused");
    // Never connected: no figure pretends to be a measured 0.
    assert_eq!(browser.run("return document.getElementById('ok-per-s').textContent"), "–");
    // Room again: the page connects by itself and the banner goes.
    drop(held);
    browser.wait_for("the page to go live", "return document.getElementById('link').textContent", |t| {
        t == "live"
    });
    assert_eq!(browser.run(read_banner), "", "the banner is gone once live");
    browser
        .wait_for("a worker row", "return document.querySelectorAll('#worker-table tr').length", |n| n == 1);
    // The farm stops: the page says it, and keeps the last picture.
    server.terminate();
    let gone = browser.wait_for("the farm-stopped banner", read_banner, |text| {
        text.as_str().is_some_and(|t| t.contains("not answering"))
    });
    assert!(gone.to_string().contains("last one it sent"), "{gone}");
    // The stop's last frame reached the page before the endpoint closed.
    let drain = "return [...document.querySelectorAll('#events-log li[data-kind=drain]')].length";
    assert_eq!(browser.run(drain), 1, "the drain is on the event log");
    assert_eq!(
        browser.run("return document.querySelectorAll('#worker-table tr').length"),
        1,
        "the last picture is kept"
    );
}

#[test]
fn refusals_frame_after_frame_count_up_on_one_line_of_the_event_log() {
    if !browser_available("refusals_frame_after_frame_count_up_on_one_line_of_the_event_log") {
        return;
    }
    let server =
        TestServer::start("threads", 1, &["--metrics-addr", "127.0.0.1:0", "--max-connections", "1"]);
    let driver = Driver::start();
    let browser = Browser::open(&driver);
    browser.go(&format!("http://{}/", server.metrics_addr.unwrap()));
    browser.wait_for("the page to go live", "return document.getElementById('link').textContent", |t| {
        t == "live"
    });
    // One connection takes the only place; three rounds of three more are
    // refused BUSY, each round in a later frame than the one before.
    let mut holder = server.connect();
    assert_eq!(holder.request(json!({"id": 1, "cmd": "ping"}))["pong"], true);
    for _ in 0..3 {
        for _ in 0..3 {
            let mut refused = server.connect();
            assert_eq!(common::error_code(&refused.try_recv().expect("a BUSY frame")), Some("BUSY"));
        }
        std::thread::sleep(Duration::from_millis(600));
    }
    let lines = browser.wait_for(
        "nine refusals on the event log",
        "return [...document.querySelectorAll('#events-log li[data-kind=busy]')].map(e => e.innerText)",
        |lines| lines.to_string().contains("9 requests refused BUSY"),
    );
    assert_eq!(lines.as_array().unwrap().len(), 1, "one line, counting up: {lines}");
}
