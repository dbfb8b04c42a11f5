//! `tc-client --live` under a real pseudo-terminal (tmux): its panes are
//! drawn (an embedded farm's workers, an open loop's coordinated-omission
//! gap, the first message of each error code, a sweep's runs), and the
//! terminal is given back — on `q`, on Ctrl-C, when the server disappears
//! mid-run and when a sweep ends — with every report written; without a
//! terminal it is never drawn.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{run_client, skipped, TestServer};

/// A tmux server of its own (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// `None` (and SKIPPED, a failure under CI=true) without tmux.
    fn start(test: &str, command: &str) -> Option<Tmux> {
        let installed = Command::new("tmux").arg("-V").output().is_ok_and(|out| out.status.success());
        if !installed {
            skipped(test, "tmux is not installed (apt-get install -y tmux)");
            return None;
        }
        let socket = format!("tc-live-{}-{test}", std::process::id());
        let status = Command::new("tmux")
            .args(["-L", &socket, "new-session", "-d", "-s", "live", "-x", "120", "-y", "40", command])
            .status()
            .unwrap();
        assert!(status.success(), "tmux starts");
        Some(Tmux { socket })
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(["-L", &self.socket]).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "live"])
    }

    /// Waits (at most 60 s) until the screen shows every one of `words`.
    fn wait_for(&self, words: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if words.iter().all(|w| screen.contains(w)) {
                return screen;
            }
            assert!(Instant::now() < deadline, "waited for {words:?}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn alternate_screen(&self) -> bool {
        self.tmux(&["display", "-p", "-t", "live", "#{alternate_on}"]).trim() == "1"
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).status();
    }
}

/// The shell command tmux runs: the client, then its exit code, then a
/// pause so the screen can be read.
fn under_tmux(args: &str) -> String {
    format!("{} {args}; echo EXIT=$?; sleep 60", env!("CARGO_BIN_EXE_tc-client"))
}

const PANES: [&str; 5] =
    ["Ok replies/s", "Latency from schedule", "Latency histogram", "errors by code", "The server"];

#[test]
fn q_and_ctrl_c_stop_the_run_write_every_report_and_give_the_terminal_back() {
    for (name, key) in [("q", "q"), ("ctrl-c", "C-c")] {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("run.json");
        let test = format!("live-{name}");
        let args = format!("--embedded --mode threads --workers 1 --live -d 60s --json {}", json.display());
        let Some(tmux) = Tmux::start(&test, &under_tmux(&args)) else { return };
        tmux.wait_for(&PANES);
        // The embedded farm's workers, from its stats, once it has started.
        tmux.wait_for(&["workers: ", "queue: "]);
        assert!(tmux.alternate_screen(), "drawn on the alternate screen");
        tmux.tmux(&["send-keys", "-t", "live", key]);
        let screen = tmux.wait_for(&["EXIT=130", "Done:"]);
        assert!(!tmux.alternate_screen(), "{name}: the terminal is given back:\n{screen}");
        assert!(screen.contains("INTERRUPTED after"), "{screen}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["interrupted"], true, "{name}");
    }
}

#[test]
fn a_server_that_disappears_ends_the_view_and_the_terminal_comes_back() {
    let mut server = TestServer::start("threads", 1, &[]);
    let args = format!("--port {} --live -d 60s", server.addr.port());
    let Some(tmux) = Tmux::start("live-server-gone", &under_tmux(&args)) else { return };
    // Against a running server the view shows its workers, from stats.
    tmux.wait_for(&["workers: ", "queue: "]);
    server.terminate();
    let screen = tmux.wait_for(&["EXIT=", "Done:"]);
    assert!(!tmux.alternate_screen(), "the terminal is given back:\n{screen}");
    assert!(!screen.contains("EXIT=0"), "a vanished server fails the run:\n{screen}");
}

#[test]
fn an_open_loop_shows_the_gap_from_send_and_each_error_codes_first_message() {
    // One worker and a queue of one, offered more than it can do: some
    // requests are refused BUSY (with a message), and the schedule runs
    // ahead of the sends.
    let server = TestServer::start("threads", 1, &["--queue-capacity", "1"]);
    let args = format!("--port {} --live -d 60s --rate 400 --size 300000 -c 4", server.addr.port());
    let Some(tmux) = Tmux::start("live-open-loop", &under_tmux(&args)) else { return };
    let screen =
        tmux.wait_for(&["from send", "gap", "BUSY: ", "first: the job queue is full", "target 400/s"]);
    // The p50 row's last cell: the gap, a figure once a second is complete.
    let p50 = screen.lines().find(|line| line.contains("p50")).unwrap_or_default();
    let gap = p50.split_whitespace().nth(4).unwrap_or_default();
    assert!(gap.starts_with('+') && gap[1..].parse::<f64>().is_ok(), "a gap in ms:\n{screen}");
    tmux.tmux(&["send-keys", "-t", "live", "q"]);
    let screen = tmux.wait_for(&["EXIT=", "Done:"]);
    assert!(!tmux.alternate_screen(), "the terminal is given back:\n{screen}");
}

#[test]
fn a_sweep_shows_each_run_then_prints_its_lines_on_the_terminal_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("sweep.csv");
    let args = format!(
        "sweep --live --modes threads,processes --workers 1 -c 2 --sizes 1000 -d 1s --warmup 0.2s --csv {}",
        csv.display()
    );
    let Some(tmux) = Tmux::start("live-sweep", &under_tmux(&args)) else { return };
    tmux.wait_for(&["tc-client sweep [1/2] threads", "Sweep: the runs so far"]);
    tmux.wait_for(&["tc-client sweep [2/2] processes", "[1/2] threads, 1 worker"]);
    let screen = tmux.wait_for(&["EXIT=0", "sweep: 2 runs appended"]);
    assert!(!tmux.alternate_screen(), "the terminal is given back:\n{screen}");
    assert!(screen.contains("[2/2] processes, 1 worker"), "each run's line is printed after:\n{screen}");
    let rows = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(rows.lines().count(), 3, "a header and two runs:\n{rows}");
}

#[test]
fn without_a_terminal_the_view_is_never_drawn() {
    let out = run_client(&["--embedded", "--mode", "threads", "--workers", "1", "--live", "-d", "1s"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(!stdout.contains("\x1b[?1049h"), "no alternate screen on a pipe");
    assert!(stdout.contains("Done:"), "the summary as ever: {stdout}");
}
