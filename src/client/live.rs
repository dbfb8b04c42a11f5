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
use ratatui::symbols::Marker;
use ratatui::text::Line;
use ratatui::widgets::{
    Axis as ChartAxis, Bar, BarChart, BarGroup, Block, Chart, Dataset, Gauge, GraphType, LegendPosition,
    Paragraph, Row, Table, Wrap,
};
use ratatui::Frame;

use crate::client::bench::options::{BenchOptions, Pacing, StopAfter, Target};
use crate::client::bench::ProgressCounters;

/// Redraws a second: smooth enough, and a small share of a core.
const FRAME: Duration = Duration::from_millis(62);
/// The throughput chart's windows, in seconds (`+` / `-`).
const WINDOWS: [usize; 5] = [10, 30, 60, 120, 300];
/// Latency histogram buckets: upper bound in ms and label (3 characters
/// fit a bar); the last one takes everything above 10 s.
const BUCKETS: [(f64, &str); 12] = [
    (0.1, "0.1"),
    (0.3, "0.3"),
    (1.0, "1"),
    (3.0, "3"),
    (10.0, "10"),
    (30.0, "30"),
    (100.0, "100"),
    (300.0, "300"),
    (1e3, "1s"),
    (3e3, "3s"),
    (1e4, "10s"),
    (f64::INFINITY, "…"),
];

/// How many of a sweep's finished runs the sweep pane lists.
const SWEEP_LINES: usize = 6;

/// The running view; dropping it gives the terminal back.
pub(crate) struct LiveView {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// What the drawing and polling threads read.
#[derive(Default)]
struct Shared {
    /// The run on screen; a sweep replaces it run by run.
    run: Mutex<Option<Arc<Shown>>>,
    /// A sweep's finished runs, a line each (the last [`SWEEP_LINES`]).
    lines: Mutex<VecDeque<String>>,
    /// Whether this view shows a sweep.
    sweep: bool,
}

/// One run on screen.
struct Shown {
    plan: Plan,
    progress: Arc<ProgressCounters>,
    started: Instant,
    /// The server's state from its `stats`, polled for this run.
    server: Mutex<ServerView>,
}

impl LiveView {
    /// Starts the view of one run, or `None` when stdout is not a terminal
    /// (a pipe, a file, CI): then the caller shows the progress line.
    pub(crate) fn start(options: &BenchOptions, progress: Arc<ProgressCounters>) -> Option<LiveView> {
        let view = LiveView::open(false)?;
        view.begin(options, progress, None);
        Some(view)
    }

    /// Starts the view of a sweep, whose runs [`LiveView::begin`] one by
    /// one; `None` without a terminal.
    pub(crate) fn for_sweep() -> Option<LiveView> {
        LiveView::open(true)
    }

    fn open(sweep: bool) -> Option<LiveView> {
        if !std::io::stdout().is_terminal() {
            return None;
        }
        let shared = Arc::new(Shared { sweep, ..Shared::default() });
        let stop = Arc::new(AtomicBool::new(false));
        poll_server(Arc::clone(&shared), Arc::clone(&stop));
        let (thread_shared, thread_stop) = (Arc::clone(&shared), Arc::clone(&stop));
        let thread = std::thread::Builder::new()
            .name("live-view".into())
            .spawn(move || {
                if let Err(e) = show(&thread_shared, &thread_stop) {
                    ratatui::restore();
                    crate::client::say!("tc-client: the live view stopped ({e}); the run goes on");
                }
            })
            .ok()?;
        Some(LiveView { shared, stop, thread: Some(thread) })
    }

    /// Shows `progress` from now on: the run `options` plan (a sweep's
    /// next run, named by `label`).
    pub(crate) fn begin(&self, options: &BenchOptions, progress: Arc<ProgressCounters>, label: Option<&str>) {
        let shown = Shown {
            plan: Plan::of(options, label),
            progress,
            started: Instant::now(),
            server: Mutex::default(),
        };
        *self.shared.run.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(shown));
    }

    /// Adds a line to the sweep pane (a finished run).
    pub(crate) fn say(&self, line: &str) {
        let mut lines = self.shared.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.push_back(line.to_string());
        if lines.len() > SWEEP_LINES {
            lines.pop_front();
        }
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
    /// A timed warm-up's seconds, at the start of `length`.
    warmup_s: f64,
    title: String,
    /// An open loop: latency from schedule and from send differ.
    open_loop: bool,
    /// The token `stats` is asked with.
    auth_token: Option<String>,
}

enum Length {
    Seconds(f64),
    Requests(u64),
}

impl Plan {
    fn of(options: &BenchOptions, label: Option<&str>) -> Plan {
        let length = match options.stop {
            StopAfter::Duration(d) => Length::Seconds((d + options.timed_warmup()).as_secs_f64()),
            StopAfter::Requests(n) => {
                Length::Requests((n + options.warmup_requests()) * options.concurrency as u64)
            }
        };
        let title = match label {
            Some(label) => format!(" tc-client sweep {label} "),
            None => {
                let target = match &options.target {
                    Target::Remote { host, port } => format!("{host}:{port}"),
                    Target::Embedded { mode, workers, .. } => {
                        let workers = crate::units::count(*workers as u64, "worker", "workers");
                        format!("embedded {}, {workers}", mode.as_str())
                    }
                };
                let connections =
                    crate::units::count(options.concurrency as u64, "connection", "connections");
                format!(" tc-client → {target}: {}, {connections} ", options.mix)
            }
        };
        Plan {
            length,
            warmup_s: options.timed_warmup().as_secs_f64(),
            title,
            open_loop: !matches!(options.pacing, Pacing::Closed { .. }),
            auth_token: options.auth_token.clone(),
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
    /// The last `stats` went unanswered (the server stopped or is gone).
    silent: bool,
}

impl ServerView {
    /// The view a `stats` reply gives, if it is one.
    fn of_stats(reply: &str) -> Option<ServerView> {
        let value = serde_json::from_str::<serde_json::Value>(reply).ok()?;
        let result = value.get("result")?;
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
        Some(view)
    }
}

/// Asks the server of the run on screen for `stats` once a second, on a
/// connection of its own, until `stop` — a remote server, or an embedded
/// farm once it has started (its port is picked then).
fn poll_server(shared: Arc<Shared>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new().name("live-stats".into()).spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let shown = shared.run.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if let Some(shown) = shown {
                let endpoint = shown.progress.server.lock().unwrap_or_else(PoisonError::into_inner).clone();
                if let Some(endpoint) = endpoint {
                    let reply = crate::client::connection::call(
                        &endpoint.host,
                        endpoint.port,
                        serde_json::json!({"cmd": "stats"}),
                        Duration::from_secs(1),
                        shown.plan.auth_token.as_deref(),
                        endpoint.tls.as_ref(),
                    );
                    let mut view = shown.server.lock().unwrap_or_else(PoisonError::into_inner);
                    match reply.ok().as_deref().and_then(ServerView::of_stats) {
                        Some(answer) => *view = answer,
                        None => view.silent = true,
                    }
                }
            }
            // A second between polls, a stop seen within a tenth of one.
            for _ in 0..10 {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
}

/// Ok replies per second of the run on screen, the last
/// `WINDOWS[last]` seconds of them.
#[derive(Default)]
struct PerSecond {
    /// Ok replies in each second, oldest first.
    counts: VecDeque<u64>,
    /// The open loop's target rate in each second (`NaN` in a closed loop).
    targets: VecDeque<f64>,
    last_ok: u64,
    last_tick: Option<Instant>,
}

impl PerSecond {
    fn tick(&mut self, progress: &ProgressCounters) {
        let now = Instant::now();
        let last_tick = *self.last_tick.get_or_insert(now);
        if now.duration_since(last_tick) >= Duration::from_secs(1) {
            let ok = progress.ok.load(Ordering::Relaxed);
            self.counts.push_back(ok.saturating_sub(self.last_ok));
            self.targets.push_back(f64::from_bits(progress.so_far.target_rps.load(Ordering::Relaxed)));
            if self.counts.len() > WINDOWS[WINDOWS.len() - 1] {
                self.counts.pop_front();
                self.targets.pop_front();
            }
            self.last_ok = ok;
            self.last_tick = Some(last_tick + Duration::from_secs(1));
        }
    }
}

/// Draws until `stop`, reading keys between frames.
fn show(shared: &Shared, stop: &AtomicBool) -> std::io::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let mut on_screen: Option<Arc<Shown>> = None;
    let mut per_second = PerSecond::default();
    let mut window = 1; // WINDOWS[1]: 30 s
    while !stop.load(Ordering::SeqCst) {
        let shown = shared.run.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if !matches!((&shown, &on_screen), (Some(a), Some(b)) if Arc::ptr_eq(a, b)) {
            // A sweep's next run: its chart starts afresh.
            per_second = PerSecond::default();
            on_screen = shown;
        }
        if let Some(shown) = &on_screen {
            per_second.tick(&shown.progress);
        }
        let lines: Vec<String> =
            shared.lines.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect();
        let sweep = shared.sweep.then_some(lines.as_slice());
        terminal.draw(|frame| draw(frame, on_screen.as_deref(), &per_second, WINDOWS[window], sweep))?;
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
                            // Exiting from here drops nothing: give the
                            // cursor back as well as the screen.
                            let _ = terminal.show_cursor();
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
    shown: Option<&Shown>,
    per_second: &PerSecond,
    window: usize,
    sweep: Option<&[String]>,
) {
    let sweep_height = sweep.map_or(0, |_| SWEEP_LINES as u16 + 2);
    // A taller terminal gives its rows to the chart.
    let [top, chart, middle, bottom, sweep_area, help] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Min(9),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(sweep_height),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    if let Some(lines) = sweep {
        let lines: Vec<Line> = lines.iter().map(|l| Line::from(l.as_str())).collect();
        let title = " Sweep: the runs so far (each run starts its own farm) ";
        frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(title)), sweep_area);
    }
    frame.render_widget(
        Paragraph::new("q or Ctrl-C: stop and write every report   + / -: the chart's window").dark_gray(),
        help,
    );
    let Some(shown) = shown else {
        let waiting =
            Paragraph::new("starting the first run…").block(Block::bordered().title(" tc-client sweep "));
        frame.render_widget(waiting, top);
        return;
    };
    let progress = &shown.progress;
    draw_progress(frame, top, &shown.plan, progress, shown.started);
    draw_throughput(frame, chart, per_second, window);
    let [latency, histogram] =
        Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(middle);
    draw_latency(frame, latency, progress, shown.plan.open_loop);
    draw_histogram(frame, histogram, progress);
    let [errors, farm] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(bottom);
    draw_errors(frame, errors, progress);
    let server = shown.server.lock().unwrap_or_else(PoisonError::into_inner).clone();
    draw_server(frame, farm, &server);
}

fn draw_progress(frame: &mut Frame, area: Rect, plan: &Plan, progress: &ProgressCounters, started: Instant) {
    let elapsed = started.elapsed().as_secs_f64();
    let sent = progress.sent.load(Ordering::Relaxed);
    // Counts and times include the warm-up, which the summary leaves out.
    let (ratio, label) = match plan.length {
        Length::Seconds(total) if elapsed < plan.warmup_s => (
            (elapsed / total.max(1e-9)).min(1.0),
            format!("warming up: {elapsed:.1} s of {:.1} s; {sent} sent", plan.warmup_s),
        ),
        Length::Seconds(total) => {
            let (measured, of) = (elapsed - plan.warmup_s, total - plan.warmup_s);
            let left = (of - measured).max(0.0);
            (
                (elapsed / total.max(1e-9)).min(1.0),
                format!(
                    "{measured:.0} s of {of:.0} s measured, {left:.0} s left; {sent} sent, warm-up included"
                ),
            )
        }
        Length::Requests(total) => (
            (sent as f64 / total.max(1) as f64).min(1.0),
            format!("{sent} of {total} requests sent, warm-up included"),
        ),
    };
    let gauge = Gauge::default()
        .block(Block::bordered().title(plan.title.as_str()))
        .gauge_style(Style::default().fg(Color::Cyan))
        .ratio(ratio)
        .label(label);
    frame.render_widget(gauge, area);
}

/// Ok replies per second over the last `window` seconds as a line (the
/// open loop's target as a second one), its axes labelled.
fn draw_throughput(frame: &mut Frame, area: Rect, per_second: &PerSecond, window: usize) {
    let newest = per_second.counts.len();
    let from = newest.saturating_sub(window);
    // The newest second at x = 0, the window's oldest at 1 - window.
    let x = |i: usize| i as f64 + 1.0 - newest as f64;
    let ok: Vec<(f64, f64)> =
        per_second.counts.iter().enumerate().skip(from).map(|(i, &n)| (x(i), n as f64)).collect();
    let target: Vec<(f64, f64)> = per_second
        .targets
        .iter()
        .enumerate()
        .skip(from)
        .filter(|(_, t)| t.is_finite())
        .map(|(i, &t)| (x(i), t))
        .collect();
    let top = ok.iter().chain(&target).map(|&(_, y)| y).fold(1.0, f64::max) * 1.1;
    let last = per_second.counts.back().copied().unwrap_or(0);
    let aim = target.last().map(|&(_, t)| format!(", target {t:.0}/s")).unwrap_or_default();
    let title = format!(" Ok replies/s: {last} in the last second{aim} (window {window} s) ");
    let line = |name: &'static str, data| {
        Dataset::default().name(name).marker(Marker::Braille).graph_type(GraphType::Line).data(data)
    };
    let mut datasets = vec![line("ok replies/s", &ok).green()];
    // A legend only where there are two lines to tell apart.
    let legend = (!target.is_empty()).then_some(LegendPosition::TopLeft);
    if !target.is_empty() {
        datasets.push(line("target", &target).yellow());
    }
    let chart = Chart::new(datasets)
        .block(Block::bordered().title(title))
        .x_axis(
            ChartAxis::default()
                .bounds([1.0 - window as f64, 0.0])
                .labels([format!("-{window} s"), format!("-{} s", window / 2), "now".to_string()])
                .dark_gray(),
        )
        .y_axis(
            ChartAxis::default()
                .bounds([0.0, top])
                .labels(["0".to_string(), format!("{:.0}", top / 2.0), format!("{top:.0}")])
                .dark_gray(),
        )
        .legend_position(legend);
    frame.render_widget(chart, area);
}

const QUANTILES: [f64; 3] = [0.5, 0.9, 0.99];

/// p50/p90/p99 of a histogram, in µs; `None` when empty.
fn percentiles(h: &hdrhistogram::Histogram<u64>) -> [Option<u64>; 3] {
    QUANTILES.map(|q| (!h.is_empty()).then(|| h.value_at_quantile(q)))
}

fn ms(us: Option<u64>) -> String {
    us.map_or_else(|| "–".into(), |us| format!("{:.3}", us as f64 / 1000.0))
}

/// p50/p90/p99 from schedule, of the last second and the whole run; in an
/// open loop also the whole run's from send, and the gap between the two:
/// how much a closed-loop measurement would hide (coordinated omission).
fn draw_latency(frame: &mut Frame, area: Rect, progress: &ProgressCounters, open_loop: bool) {
    let last = percentiles(
        &progress.so_far.last_interval.lock().unwrap_or_else(PoisonError::into_inner).from_schedule,
    );
    let (whole, from_send) = {
        let so_far = progress.so_far.latency.lock().unwrap_or_else(PoisonError::into_inner);
        (percentiles(&so_far.from_schedule), percentiles(&so_far.from_send))
    };
    let rows: Vec<Vec<String>> = ["p50", "p90", "p99"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let mut cells = vec![name.to_string(), ms(last[i]), ms(whole[i])];
            if open_loop {
                cells.push(ms(from_send[i]));
                let gap = whole[i].zip(from_send[i]).map(|(s, f)| s.saturating_sub(f));
                cells.push(gap.map_or_else(|| "–".into(), |us| format!("+{:.3}", us as f64 / 1000.0)));
            }
            cells
        })
        .collect();
    let (header, title) = if open_loop {
        (
            vec!["", "last 1 s", "whole run", "from send", "gap"],
            " Latency from schedule (ms); gap = coordinated omission ",
        )
    } else {
        (vec!["", "last 1 s", "whole run"], " Latency from schedule (ms); closed loop: = from send ")
    };
    // Columns that do not fit are left out, never cut: a cut "0.1" reads as "0.".
    let fit = (usize::from(area.width.saturating_sub(2)).saturating_sub(4) / 11).clamp(1, header.len() - 1);
    let header: Vec<&str> = header.into_iter().take(fit + 1).collect();
    let rows = rows.into_iter().map(|cells| Row::new(cells.into_iter().take(fit + 1)));
    let widths: Vec<Constraint> =
        [4, 10, 10, 10, 10].into_iter().take(fit + 1).map(Constraint::Length).collect();
    let table =
        Table::new(rows, widths).header(Row::new(header).bold()).block(Block::bordered().title(title));
    frame.render_widget(table, area);
}

/// The run's latency histogram: a bar per bucket of [`BUCKETS`] (every
/// other one merged when the pane is narrow), heights on a log scale so
/// the tail shows beside the mode, each bar's count written under it.
fn draw_histogram(frame: &mut Frame, area: Rect, progress: &ProgressCounters) {
    let so_far = progress.so_far.latency.lock().unwrap_or_else(PoisonError::into_inner);
    let h = &so_far.from_schedule;
    let inner = area.width.saturating_sub(2);
    // Four columns a bar (three wide, one gap) fit the labels.
    let step = if usize::from(inner) >= 4 * BUCKETS.len() { 1 } else { 2 };
    let mut below = 0u64;
    let bars: Vec<Bar> = BUCKETS
        .iter()
        .enumerate()
        .filter(|(i, _)| (i + 1) % step == 0 || *i == BUCKETS.len() - 1)
        .map(|(_, &(bound_ms, label))| {
            let upto = match () {
                _ if h.is_empty() => 0,
                _ if bound_ms.is_infinite() => h.len(),
                _ => h.count_between(0, (bound_ms * 1000.0) as u64),
            };
            let n = upto.saturating_sub(below);
            below = upto.max(below);
            let height = if n == 0 { 0 } else { (100.0 * (1.0 + (n as f64).log10())) as u64 };
            Bar::default().value(height).text_value(compact(n)).label(Line::from(label))
        })
        .collect();
    let per_bar = (inner / bars.len().max(1) as u16).max(2);
    let chart = BarChart::default()
        .block(Block::bordered().title(" Latency histogram, whole run (ms up to; … over 10 s; log scale) "))
        .bar_width(per_bar - 1)
        .bar_gap(1)
        .data(BarGroup::default().bars(&bars));
    frame.render_widget(chart, area);
}

/// A count in at most 3 characters: `7`, `512`, `12k`, `3M`.
fn compact(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=99_999 => format!("{}k", n / 1000),
        100_000..=999_999 => format!(".{}M", n / 100_000),
        _ => format!("{}M", (n / 1_000_000).min(999)),
    }
}

fn draw_errors(frame: &mut Frame, area: Rect, progress: &ProgressCounters) {
    let by_code = progress.errors_by_code.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let mut lines: Vec<Line> = by_code
        .iter()
        .map(|(code, tally)| {
            let first = tally.first_message.as_deref().map(|m| format!(" — first: {m}")).unwrap_or_default();
            Line::from(format!("{code}: {}{first}", tally.count)).red()
        })
        .collect();
    let timeouts = progress.timeouts.load(Ordering::Relaxed);
    if timeouts > 0 {
        lines.push(Line::from(format!("timeouts: {timeouts}")).red());
    }
    if lines.is_empty() {
        lines.push(Line::from("none").green());
    }
    let ok = progress.ok.load(Ordering::Relaxed);
    let title = format!(" {ok} ok; errors by code ");
    let pane = Paragraph::new(lines).wrap(Wrap { trim: true }).block(Block::bordered().title(title));
    frame.render_widget(pane, area);
}

fn draw_server(frame: &mut Frame, area: Rect, server: &ServerView) {
    let mut lines = if server.answered {
        let workers = server.busy + server.idle + server.other;
        let filled = |part: u64, of: u64| {
            let width = 20usize;
            let n = (part.min(of) * width as u64).checked_div(of).unwrap_or(0) as usize;
            format!("[{}{}]", "█".repeat(n), "·".repeat(width - n))
        };
        vec![
            Line::from(format!(
                "workers: {} busy, {} idle, {} other",
                server.busy, server.idle, server.other
            )),
            Line::from(format!("busy  {}", filled(server.busy, workers))),
            Line::from(format!("queue: {} of {}", server.queued, server.capacity)),
            Line::from(format!("queue {}", filled(server.queued, server.capacity))),
        ]
    } else {
        vec![Line::from("asking the server for stats…").dark_gray()]
    };
    if server.silent {
        lines.push(Line::from("the last stats went unanswered").yellow());
    }
    frame.render_widget(Paragraph::new(lines).block(Block::bordered().title(" The server ")), area);
}
