//! `tc-client plot workers`: the dashboard's task stream, after the fact —
//! one row per worker, a bar per job, its queue wait before it — drawn from
//! a `--requests-csv`, and (`--trace`) the same run in the Chrome
//! trace-event format that Perfetto and `chrome://tracing` open.
//!
//! The CSV gives, per request, when it was sent and answered (the client's
//! clock) and, from the server, its worker, queue wait and service time. A
//! job's run is placed to end when its reply arrived and to last its
//! service time; its queue wait comes just before. So each bar is late by
//! the reply's trip back over the network (microseconds on loopback), and a
//! request with no reply or no server timing is left out (and counted).
//! Those trips differ from reply to reply, so two jobs placed that way can
//! overlap on one worker, which ran them one after the other: where they
//! do, the earlier job is moved back until it ends as the next one starts
//! (it can only have been placed too late, never too early).

use std::path::{Path, PathBuf};

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::Deserialize;
use serde_json::json;

use super::draw::{draw_error, draw_swatches, register_fonts, FONT, PALETTE};
use crate::error::{Error, Result};

/// Width of the legend column, right of the plot.
const LEGEND_WIDTH: u32 = 260;
/// A job's queue wait.
const WAITING: RGBColor = RGBColor(230, 159, 0);
/// A job answered with an error.
const ERROR_RED: RGBColor = RGBColor(214, 40, 40);

/// One job, placed on its worker's row (µs since the run started).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    pub(crate) worker: u64,
    pub(crate) id: u64,
    pub(crate) connection: u64,
    pub(crate) cmd: String,
    pub(crate) queued_us: u64,
    pub(crate) start_us: u64,
    pub(crate) end_us: u64,
    pub(crate) ok: bool,
    /// Sent during the warm-up: drawn, but not in the run's report.
    pub(crate) warmup: bool,
}

/// The columns of `--requests-csv` this chart reads.
#[derive(Debug, Deserialize)]
struct Row {
    connection: u64,
    id: u64,
    cmd: String,
    warmup: bool,
    sent_us: u64,
    uncorrected_us: Option<u64>,
    queue_us: Option<u64>,
    service_us: Option<u64>,
    worker: Option<u64>,
    outcome: String,
}

/// The jobs of a requests CSV that can be placed, and how many could not.
///
/// # Errors
/// A file that cannot be read or is not a requests CSV, or one with no job
/// that has server timings.
pub(crate) fn read_jobs(path: &Path) -> Result<(Vec<Placed>, usize)> {
    let bad = |message: String| Error::input(path, message);
    let mut reader = csv::Reader::from_path(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    let (mut jobs, mut left_out) = (Vec::new(), 0);
    for (line, row) in reader.deserialize::<Row>().enumerate() {
        let row = row.map_err(|e| {
            bad(format!(
                "row {} is not a --requests-csv row ({e}); write one with tc-client --requests-csv FILE",
                line + 2
            ))
        })?;
        let (Some(latency), Some(queue), Some(service), Some(worker)) =
            (row.uncorrected_us, row.queue_us, row.service_us, row.worker)
        else {
            left_out += 1;
            continue;
        };
        let end_us = row.sent_us + latency;
        let start_us = end_us.saturating_sub(service);
        jobs.push(Placed {
            worker,
            id: row.id,
            connection: row.connection,
            cmd: row.cmd,
            queued_us: start_us.saturating_sub(queue),
            start_us,
            end_us,
            ok: row.outcome == "ok",
            warmup: row.warmup,
        });
    }
    settle(&mut jobs);
    if jobs.is_empty() {
        return Err(bad(
            "no request in it has a reply with the server's timing (worker, queue_us, service_us); \
             only replies to compute and predict jobs carry them"
                .into(),
        ));
    }
    Ok((jobs, left_out))
}

/// Moves each job that overlaps the next one on its worker back, keeping
/// its queue wait and service time, so that a worker's jobs follow one
/// another as they ran. Leaves the jobs in the order of their end.
fn settle(jobs: &mut [Placed]) {
    jobs.sort_by_key(|job| (job.worker, job.end_us));
    for same_worker in jobs.chunk_by_mut(|a, b| a.worker == b.worker) {
        let mut next_start = u64::MAX;
        for job in same_worker.iter_mut().rev() {
            let late = job.end_us.saturating_sub(next_start);
            job.queued_us = job.queued_us.saturating_sub(late);
            job.start_us = job.start_us.saturating_sub(late);
            job.end_us -= late;
            next_start = job.start_us;
        }
    }
    jobs.sort_by_key(|job| (job.end_us, job.worker));
}

/// Draws the task stream into `OUT.png` and `OUT.svg`.
///
/// # Errors
/// A file that cannot be written.
pub(crate) fn write_workers_chart(jobs: &[Placed], left_out: usize, out: &Path) -> Result<Vec<PathBuf>> {
    register_fonts();
    let (png, svg) = (out.with_extension("png"), out.with_extension("svg"));
    let rows = workers(jobs);
    let height = (160 + 46 * rows.len() as u32).clamp(300, 1400);
    super::draw::write_png(&png, (1100, height), |area| draw(area, jobs, &rows, left_out))?;
    draw(SVGBackend::new(&svg, (1100, height)).into_drawing_area(), jobs, &rows, left_out)?;
    Ok(vec![png, svg])
}

/// The workers that ran something, in order.
fn workers(jobs: &[Placed]) -> Vec<u64> {
    let mut rows: Vec<u64> = jobs.iter().map(|job| job.worker).collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    jobs: &[Placed],
    rows: &[u64],
    left_out: usize,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    // The legend gets a column of its own: inside the plot it would cover
    // the top worker's bars.
    let (width, _) = root.dim_in_pixel();
    let (root, legend_area) = root.split_horizontally(width - LEGEND_WIDTH);
    let start = jobs.iter().map(|job| job.queued_us).min().unwrap_or(0) as f64 / 1e6;
    let end = jobs.iter().map(|job| job.end_us).max().unwrap_or(1) as f64 / 1e6;
    let caption = match left_out {
        0 => "Workers over time: a bar per job, its queue wait a thin stripe before it".to_string(),
        n => format!("Workers over time: a bar per job ({n} requests without server timing left out)"),
    };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 24))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(110)
        // Row i is centred on y = i, so the axis's whole-number ticks name them.
        .build_cartesian_2d(start..end.max(start + 1e-6), -0.5..rows.len() as f64 - 0.5)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows.len())
        .y_label_formatter(&|y| {
            let row = y.round();
            if (y - row).abs() < 0.01 && row >= 0.0 {
                rows.get(row as usize).map(|w| format!("worker {w}")).unwrap_or_default()
            } else {
                String::new()
            }
        })
        .x_desc("time since the run started (s)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 15))
        .draw()
        .map_err(draw_error)?;
    let mut commands: Vec<&str> = jobs.iter().map(|job| job.cmd.as_str()).collect();
    commands.sort_unstable();
    commands.dedup();
    let colour = |cmd: &str| PALETTE[commands.iter().position(|c| *c == cmd).unwrap_or(0) % PALETTE.len()];
    let row_of = |worker: u64| rows.iter().position(|w| *w == worker).unwrap_or(0) as f64;
    let seconds = |us: u64| us as f64 / 1e6;
    let warmup_end = jobs.iter().filter(|job| job.warmup).map(|job| job.end_us).max();
    for cmd in &commands {
        let fill = colour(cmd);
        chart
            .draw_series(jobs.iter().filter(|job| job.cmd == *cmd).map(|job| {
                let y = row_of(job.worker);
                let fill = if job.ok { fill } else { ERROR_RED };
                Rectangle::new(
                    [(seconds(job.start_us), y - 0.35), (seconds(job.end_us), y + 0.35)],
                    fill.filled(),
                )
            }))
            .map_err(draw_error)?;
    }
    draw_waits_and_warmup(&mut chart, jobs, &row_of, (start, rows.len()), warmup_end)?;
    let mut swatches: Vec<(&str, RGBAColor)> =
        commands.iter().map(|cmd| (*cmd, colour(cmd).to_rgba())).collect();
    swatches.push(("queue wait (thin stripe)", WAITING.to_rgba()));
    if warmup_end.is_some() {
        swatches.push(("warm-up, faded (not in the report)", RGBColor(190, 190, 190).to_rgba()));
    }
    if jobs.iter().any(|job| !job.ok) {
        swatches.push(("error reply", ERROR_RED.to_rgba()));
    }
    draw_swatches(&legend_area, &swatches)?;
    root.present().map_err(draw_error)
}

/// Over the bars: each job's queue wait as a thin stripe (a job waits while
/// the one before it runs on the same row, so drawn under the bars every
/// wait would be hidden), and the warm-up faded — its jobs ran, but the
/// report leaves them out. The pair is the chart's start (s) and its number of rows.
fn draw_waits_and_warmup<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    jobs: &[Placed],
    row_of: &dyn Fn(u64) -> f64,
    (start, rows): (f64, usize),
    warmup_end: Option<u64>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let seconds = |us: u64| us as f64 / 1e6;
    chart
        .draw_series(jobs.iter().filter(|job| job.start_us > job.queued_us).map(|job| {
            let y = row_of(job.worker);
            Rectangle::new(
                [(seconds(job.queued_us), y - 0.05), (seconds(job.start_us), y + 0.05)],
                WAITING.filled(),
            )
        }))
        .map_err(draw_error)?;
    if let Some(warmup_end) = warmup_end {
        let area = [(start, -0.5), (seconds(warmup_end), rows as f64 - 0.5)];
        chart.draw_series([Rectangle::new(area, WHITE.mix(0.6).filled())]).map_err(draw_error)?;
    }
    Ok(())
}

/// The run in the Chrome trace-event format: one track (thread) per
/// worker with one slice per job, its run (a worker runs one job at a
/// time, so these never overlap), and the jobs' queue waits as async
/// slices beside them (many wait at once, so they cannot share a worker's
/// track; Perfetto stacks them on one "queue wait" track). Times are in
/// microseconds, as the format wants.
pub(crate) fn trace(jobs: &[Placed]) -> serde_json::Value {
    let mut events =
        vec![json!({"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "ThreadCenter workers"}})];
    for worker in workers(jobs) {
        events.push(json!({"ph": "M", "name": "thread_name", "pid": 1, "tid": worker,
                           "args": {"name": format!("worker {worker}")}}));
    }
    for (number, job) in jobs.iter().enumerate() {
        let queue_us = job.start_us - job.queued_us;
        let args =
            json!({"id": job.id, "connection": job.connection, "ok": job.ok, "queue_wait_us": queue_us});
        events.push(json!({"ph": "X", "name": job.cmd, "cat": "job", "pid": 1, "tid": job.worker,
                           "ts": job.start_us, "dur": job.end_us - job.start_us, "args": args}));
        if queue_us > 0 {
            let wait = json!({"name": "queue wait", "cat": "queue", "pid": 1, "id": number,
                              "args": {"id": job.id, "connection": job.connection, "worker": job.worker}});
            let mut begin = wait.clone();
            begin["ph"] = json!("b");
            begin["ts"] = json!(job.queued_us);
            let mut end = wait;
            end["ph"] = json!("e");
            end["ts"] = json!(job.start_us);
            events.extend([begin, end]);
        }
    }
    json!({"traceEvents": events, "displayTimeUnit": "ms"})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_ends_at_its_reply_and_runs_its_service_time_after_its_queue_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        std::fs::write(
            &path,
            "connection,id,cmd,warmup,scheduled_us,sent_us,latency_us,uncorrected_us,queue_us,service_us,worker,outcome\n\
             0,1,compute,false,100,100,1000,1000,200,700,1,ok\n\
             0,2,compute,false,200,200,,,,,,missing\n",
        )
        .unwrap();
        let (jobs, left_out) = read_jobs(&path).unwrap();
        assert_eq!(left_out, 1);
        assert_eq!((jobs[0].queued_us, jobs[0].start_us, jobs[0].end_us), (200, 400, 1100));
        let trace = trace(&jobs);
        let phases: Vec<(&str, &str)> = trace["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] != "M")
            .map(|e| (e["ph"].as_str().unwrap(), e["name"].as_str().unwrap()))
            .collect();
        assert_eq!(phases, [("X", "compute"), ("b", "queue wait"), ("e", "queue wait")]);
    }

    fn job(worker: u64, start_us: u64, end_us: u64) -> Placed {
        Placed {
            worker,
            id: start_us,
            connection: 0,
            cmd: "compute".into(),
            queued_us: start_us - 10,
            start_us,
            end_us,
            ok: true,
            warmup: false,
        }
    }

    #[test]
    fn a_job_placed_over_the_next_one_on_its_worker_is_moved_back_whole() {
        // Worker 1: the first reply came back 30 µs late, so its job seems
        // to end after the second began; worker 2's job is not touched.
        let mut jobs = vec![job(1, 100, 230), job(1, 200, 300), job(2, 150, 260)];
        settle(&mut jobs);
        let placed: Vec<(u64, u64, u64, u64)> =
            jobs.iter().map(|j| (j.worker, j.queued_us, j.start_us, j.end_us)).collect();
        assert_eq!(placed, [(1, 60, 70, 200), (2, 140, 150, 260), (1, 190, 200, 300)]);
    }
}
