//! `tc-client --live`: the run as a full-screen terminal view while it goes
//! (as oha's), drawn from the counters the connections keep anyway — the
//! measurement does not wait for it.
//!
//! Panes: progress and what is left; ok replies per second as a chart
//! whose window `+` and `-` change; p50/p90/p99 of the last second (the
//! last complete interval) beside the whole run's; the latency histogram of
//! the run so far; errors by code and timeouts; and, against a running
//! server, its workers busy or idle and its queue against its capacity,
//! from a `stats` request once a second on a connection of its own.
//!
//! `q` or Ctrl-C stops the run as a signal would (every report is still
//! written, marked interrupted); a second Ctrl-C exits at once. The
//! terminal is always given back: when the run ends, on an error, and on
//! a panic (ratatui's hook restores it first). When stdout is not a
//! terminal the view is never drawn: the progress line is shown instead.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Style, Stylize};
use ratatui::text::Line;
use ratatui::widgets::{Bar, BarChart, BarGroup, Block, Gauge, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use crate::client::bench::options::{BenchOptions, StopAfter, Target};
use crate::client::bench::ProgressCounters;

/// Redraws a second: smooth enough, and a small share of a core.
const FRAME: Duration = Duration::from_millis(62);
/// The throughput chart's windows, in seconds (`+` / `-`).
const WINDOWS: [usize; 5] = [10, 30, 60, 120, 300];
/// Latency histogram buckets' upper bounds, in ms.
const BUCKETS_MS: [f64; 12] = [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 500.0, 1000.0];

/// The running view; [`LiveView::finish`] gives the terminal back.
pub(crate) struct LiveView {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LiveView {
    /// Starts the view, or `None` when stdout is not a terminal (a pipe, a
    /// file, CI): then the caller shows the progress line.
    pub(crate) fn start(options: &BenchOptions, progress: Arc<ProgressCounters>) -> Option<LiveView> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let server = Arc::new(Mutex::new(ServerView::default()));
        if let Target::Remote { host, port } = &options.target {
            poll_server(host.clone(), *port, options, Arc::clone(&server), Arc::clone(&stop));
        }
        let plan = Plan::of(options);
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("live-view".into())
            .spawn(move || {
                if let Err(e) = show(&plan, &progress, &server, &thread_stop) {
                    ratatui::restore();
                    eprintln!("tc-client: the live view stopped ({e}); the run goes on");
                }
            })
            .ok()?;
        Some(LiveView { stop, thread: Some(thread) })
    }

    /// Stops drawing and restores the terminal (before the summary is
    /// printed on it): what dropping the view does, said where it matters.
    pub(crate) fn finish(self) {}
}

impl Drop for LiveView {
    /// Also on an early return or an error: the terminal is always given back.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the view knows of the run's plan.
struct Plan {
    /// Seconds the run lasts (warm-up included), or requests in all.
    length: Length,
    title: String,
}

enum Length {
    Seconds(f64),
    Requests(u64),
}

impl Plan {
    fn of(options: &BenchOptions) -> Plan {
        let length = match options.stop {
            StopAfter::Duration(d) => Length::Seconds((d + options.timed_warmup()).as_secs_f64()),
            StopAfter::Requests(n) => {
                Length::Requests((n + options.warmup_requests()) * options.concurrency as u64)
            }
        };
        let target = match &options.target {
            Target::Remote { host, port } => format!("{host}:{port}"),
            Target::Embedded { mode, workers, .. } => {
                format!("embedded {}, {workers} workers", mode.as_str())
            }
        };
        Plan {
            length,
            title: format!(" tc-client → {target}: {}, {} connections ", options.mix, options.concurrency),
        }
    }
}

/// The server's state, from its `stats`.
#[derive(Debug, Default, Clone)]
struct ServerView {
    busy: u64,
    idle: u64,
    other: u64,
    queued: u64,
    capacity: u64,
    answered: bool,
}

/// Asks the server for `stats` once a second, on a connection of its own,
/// until `stop`.
fn poll_server(
    host: String,
    port: u16,
    options: &BenchOptions,
    into: Arc<Mutex<ServerView>>,
    stop: Arc<AtomicBool>,
) {
    let token = options.auth_token.clone();
    let tls = options.tls.clone();
    let _ = std::thread::Builder::new().name("live-stats".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let request = serde_json::json!({"cmd": "stats"});
            if let Ok(reply) = crate::client::connection::call(
                &host,
                port,
                request,
                Duration::from_secs(1),
                token.as_deref(),
                tls.as_ref(),
            ) {
                if let Ok(value) = serde_json::from_str::<serde_json::Value>(&reply) {
                    let result = &value["result"];
                    let mut view = ServerView { answered: true, ..ServerView::default() };
                    for worker in result["worker_list"].as_array().into_iter().flatten() {
                        match worker["state"].as_str() {
                            Some("busy") => view.busy += 1,
                            Some("idle") => view.idle += 1,
                            _ => view.other += 1,
                        }
                    }
                    view.queued = result["jobs"]["queued"].as_u64().unwrap_or(0);
                    view.capacity = result["jobs"]["queue_capacity"].as_u64().unwrap_or(0);
                    *into.lock().unwrap_or_else(PoisonError::into_inner) = view;
                }
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
}

/// Draws until `stop`, reading keys between frames.
fn show(
    plan: &Plan,
    progress: &ProgressCounters,
    server: &Mutex<ServerView>,
    stop: &AtomicBool,
) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let started = Instant::now();
    let mut per_second: VecDeque<u64> = VecDeque::new();
    let (mut last_ok, mut last_tick) = (0u64, Instant::now());
    let mut window = 1; // WINDOWS[1]: 30 s
    while !stop.load(Ordering::SeqCst) {
        if last_tick.elapsed() >= Duration::from_secs(1) {
            let ok = progress.ok.load(Ordering::Relaxed);
            per_second.push_back(ok.saturating_sub(last_ok));
            if per_second.len() > WINDOWS[WINDOWS.len() - 1] {
                per_second.pop_front();
            }
            (last_ok, last_tick) = (ok, last_tick + Duration::from_secs(1));
        }
        let server = server.lock().unwrap_or_else(PoisonError::into_inner).clone();
        terminal.draw(|frame| draw(frame, plan, progress, &server, &per_second, WINDOWS[window], started))?;
        if event::poll(FRAME)? {
            if let Event::Key(key) = event::read()? {
                if key.kind != KeyEventKind::Press {
                    continue;
                }
                match key.code {
                    KeyCode::Char('q') => crate::client::interrupt::request_stop("q pressed"),
                    KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                        // Raw mode turns Ctrl-C into a key: act as the signal would.
                        if crate::client::interrupt::requested() {
                            ratatui::restore();
                            std::process::exit(i32::from(crate::client::interrupt::EXIT_CODE));
                        }
                        crate::client::interrupt::request_stop("Ctrl-C");
                    }
                    KeyCode::Char('+') => window = (window + 1).min(WINDOWS.len() - 1),
                    KeyCode::Char('-') => window = window.saturating_sub(1),
                    _ => {}
                }
            }
        }
    }
    ratatui::restore();
    Ok(())
}

fn draw(
    frame: &mut Frame,
    plan: &Plan,
    progress: &ProgressCounters,
    server: &ServerView,
    per_second: &VecDeque<u64>,
    window: usize,
    started: Instant,
) {
    let [top, chart, middle, bottom, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    draw_progress(frame, top, plan, progress, started);
    draw_throughput(frame, chart, progress, per_second, window);
    let [latency, histogram] =
        Layout::horizontal([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(middle);
    draw_latency(frame, latency, progress);
    draw_histogram(frame, histogram, progress);
    let [errors, farm] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(bottom);
    draw_errors(frame, errors, progress);
    draw_server(frame, farm, server);
    frame.render_widget(
        Paragraph::new("q or Ctrl-C: stop and write every report   + / -: the chart's window").dark_gray(),
        help,
    );
}

fn draw_progress(frame: &mut Frame, area: Rect, plan: &Plan, progress: &ProgressCounters, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    let sent = progress.sent.load(Ordering::Relaxed);
    let (ratio, label) = match plan.length {
        Length::Seconds(total) => {
            let left = (total - elapsed).max(0.0);
            (
                (elapsed / total.max(1e-9)).min(1.0),
                format!("{elapsed:.0} s of {total:.0} s, {left:.0} s left; {sent} sent"),
            )
        }
        Length::Requests(total) => {
            ((sent as f64 / total.max(1) as f64).min(1.0), format!("{sent} of {total} requests sent"))
        }
    };
    let gauge = Gauge::default()
        .block(Block::bordered().title(plan.title.as_str()))
        .gauge_style(Style::default().fg(Color::Cyan))
        .ratio(ratio)
        .label(label);
    frame.render_widget(gauge, area);
}

fn draw_throughput(
    frame: &mut Frame,
    area: Rect,
    progress: &ProgressCounters,
    per_second: &VecDeque<u64>,
    window: usize,
) {
    let shown: Vec<u64> = per_second.iter().rev().take(window).rev().copied().collect();
    let last = shown.last().copied().unwrap_or(0);
    let target = f64::from_bits(progress.so_far.target_rps.load(Ordering::Relaxed));
    let target = if target.is_finite() { format!(", target {target:.0}/s") } else { String::new() };
    let title = format!(" Throughput: {last} ok replies/s{target} (last {window} s) ");
    frame
        .render_widget(Sparkline::default().block(Block::bordered().title(title)).data(&shown).green(), area);
}

/// p50/p90/p99 of a histogram, in ms; `–` when empty.
fn percentiles(h: &hdrhistogram::Histogram<u64>) -> [String; 3] {
    [0.5, 0.9, 0.99].map(|q| {
        if h.is_empty() {
            "–".into()
        } else {
            format!("{:.3}", h.value_at_quantile(q) as f64 / 1000.0)
        }
    })
}

fn draw_latency(frame: &mut Frame, area: Rect, progress: &ProgressCounters) {
    let last = percentiles(&progress.so_far.last_interval.lock().unwrap_or_else(PoisonError::into_inner));
    let whole = percentiles(&progress.so_far.latency.lock().unwrap_or_else(PoisonError::into_inner));
    let rows = ["p50", "p90", "p99"]
        .iter()
        .enumerate()
        .map(|(i, name)| Row::new([name.to_string(), last[i].clone(), whole[i].clone()]));
    let table = Table::new(rows, [Constraint::Length(6), Constraint::Length(14), Constraint::Length(14)])
        .header(Row::new(["", "last second", "whole run"]).bold())
        .block(Block::bordered().title(" Latency from schedule (ms) "));
    frame.render_widget(table, area);
}

fn draw_histogram(frame: &mut Frame, area: Rect, progress: &ProgressCounters) {
    let h = progress.so_far.latency.lock().unwrap_or_else(PoisonError::into_inner);
    let mut below = 0u64;
    let bars: Vec<Bar> = BUCKETS_MS
        .iter()
        .map(|bound| {
            let upto = if h.is_empty() { 0 } else { h.count_between(0, (bound * 1000.0) as u64) };
            let n = upto.saturating_sub(below);
            below = upto.max(below);
            Bar::default().value(n).label(Line::from(format!("≤{bound}")))
        })
        .collect();
    let chart = BarChart::default()
        .block(Block::bordered().title(" Latency histogram, whole run (ms) "))
        .bar_width(5)
        .bar_gap(1)
        .data(BarGroup::default().bars(&bars));
    frame.render_widget(chart, area);
}

fn draw_errors(frame: &mut Frame, area: Rect, progress: &ProgressCounters) {
    let by_code = progress.errors_by_code.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut lines: Vec<Line> =
        by_code.iter().map(|(code, n)| Line::from(format!("{code}: {n}")).red()).collect();
    let timeouts = progress.timeouts.load(Ordering::Relaxed);
    if timeouts > 0 {
        lines.push(Line::from(format!("timeouts: {timeouts}")).red());
    }
    if lines.is_empty() {
        lines.push(Line::from("none").green());
    }
    let ok = progress.ok.load(Ordering::Relaxed);
    let title = format!(" {ok} ok; errors by code ");
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), area);
}

fn draw_server(frame: &mut Frame, area: Rect, server: &ServerView) {
    let lines = if server.answered {
        vec![
            Line::from(format!(
                "workers: {} busy, {} idle, {} other",
                server.busy, server.idle, server.other
            )),
            Line::from(format!("queue: {} of {}", server.queued, server.capacity)),
        ]
    } else {
        vec![Line::from("no stats yet (an embedded farm: watch it with --dashboard)").dark_gray()]
    };
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" The server ")), area);
}
