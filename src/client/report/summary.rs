//! The human summary printed on stdout after a run.

use std::io::{self, Write};

use super::{Exporter, LatencyStats, RunReport};
use crate::client::bench::BenchRun;
use crate::error::{Error, Result};
use crate::units::count;

/// Column label of a percentile: `p50`, `p99.9`, `max`.
fn label(percentile: f64) -> String {
    if percentile >= 100.0 {
        "max".into()
    } else {
        format!("p{percentile}")
    }
}

/// Microseconds shown as milliseconds with three decimals (µs precision).
fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn latency_row<W: Write>(out: &mut W, name: &str, stats: &LatencyStats) -> io::Result<()> {
    write!(out, "    {name:<16}{:>10}", ms(stats.min_us))?;
    for p in &stats.percentiles {
        write!(out, "{:>10}", ms(p.value_us))?;
    }
    writeln!(
        out,
        "{:>10}{:>10}",
        format!("{:.3}", stats.mean_us / 1000.0),
        format!("{:.3}", stats.stdev_us / 1000.0)
    )
}

fn latency_header<W: Write>(out: &mut W, title: &str, stats: &LatencyStats) -> io::Result<()> {
    write!(out, "  {title:<18}{:>10}", "min")?;
    for p in &stats.percentiles {
        write!(out, "{:>10}", label(p.percentile))?;
    }
    writeln!(out, "{:>10}{:>10}", "mean", "stdev")
}

/// "p99.9 and p99.99": percentile labels joined for a sentence.
fn joined(labels: &[String]) -> String {
    match labels {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Writes the summary of `report`.
///
/// # Errors
/// Whatever the writer returns.
pub(crate) fn write_summary<W: Write>(report: &RunReport, out: &mut W) -> io::Result<()> {
    write_what_ran(report, out)?;
    write_counts(report, out)?;
    write_latency(report, out)?;
    write_thresholds(report, out)?;
    writeln!(out)?;
    writeln!(out, "Done: {} responses in {:.3}s", report.counts.answered(), report.measured_s)
}

/// Which server, which workload, how paced, and whether the run was cut short.
fn write_what_ran<W: Write>(report: &RunReport, out: &mut W) -> io::Result<()> {
    let p = &report.parameters.workload;
    let server = &report.server;
    let origin = if server.embedded { "embedded server" } else { "server" };
    match server.farm() {
        Some(farm) => writeln!(out, "tc-client -> {} ({origin}: {farm})", server.address)?,
        None => writeln!(
            out,
            "tc-client -> {} ({origin}: mode and workers unknown, it does not answer stats)",
            server.address
        )?,
    }
    let what = if p.cmd.contains("compute") { format!("{} n={}", p.cmd, p.size) } else { p.cmd.clone() };
    let pacing = match (p.pipeline, p.rate_rps) {
        // A ramp's text is FROM..TO over LENGTH; steps are LENGTH@RATE,...
        _ if p.stages.as_deref().is_some_and(|s| s.contains("..")) => {
            format!("open loop ramping {} requests/s", p.stages.as_deref().unwrap_or_default())
        }
        _ if p.stages.is_some() => format!("open loop in stages {}", p.stages.as_deref().unwrap_or_default()),
        (_, Some(rate)) => format!("open loop at {rate} requests/s"),
        (Some(1), _) => "closed loop, 1 request in flight per connection".into(),
        (Some(k), _) => format!("closed loop, {k} requests in flight per connection"),
        (None, None) => "closed loop".into(),
    };
    let length = match (p.requests_per_connection, p.duration_s) {
        (Some(n), _) => format!("{} per connection", count(n, "request", "requests")),
        (_, Some(s)) => format!("{s} s"),
        _ => String::new(),
    };
    let connections = count(p.concurrency as u64, "connection", "connections");
    writeln!(out, "  {what}, {connections}, {pacing}, {length}, warm-up {}", p.warmup)?;
    if let Some(why) = &report.aborted {
        writeln!(
            out,
            "  ABORTED after {:.3} s (--abort-on-fail): {why}; this report covers what was measured until then",
            report.wall_s
        )?;
    }
    if report.interrupted {
        // q or Ctrl-C in the live view, else a signal.
        let by = crate::client::interrupt::stopped_by().unwrap_or("Ctrl-C or SIGTERM");
        writeln!(
            out,
            "  INTERRUPTED after {:.3} s ({by}): this report covers what was measured until then",
            report.wall_s
        )?;
    }
    writeln!(out)
}

/// What came back: replies, errors by code, anything wrong, time and throughput.
fn write_counts<W: Write>(report: &RunReport, out: &mut W) -> io::Result<()> {
    let p = &report.parameters.workload;
    let c = &report.counts;
    writeln!(
        out,
        "  Requests    {} sent, {} ok, {}, {}",
        c.sent,
        c.ok,
        count(c.error_replies(), "error reply", "error replies"),
        count(c.timeouts, "timeout", "timeouts")
    )?;
    for (index, (code, n)) in c.errors.iter().enumerate() {
        let title = if index == 0 { "Errors" } else { "" };
        match c.error_messages.get(code) {
            Some(message) => writeln!(out, "  {title:<12}{code} {n}: {message}")?,
            None => writeln!(out, "  {title:<12}{code} {n}")?,
        }
    }
    let problems: Vec<String> = [
        (c.mismatches, "wrong result", "wrong results", ""),
        (c.duplicates, "duplicate reply", "duplicate replies", ""),
        (c.unknown, "unknown reply", "unknown replies", ""),
        (c.missing, "missing reply", "missing replies", " (the connection broke)"),
        (c.late, "late reply", "late replies", " (after their timeout)"),
    ]
    .iter()
    .filter(|(n, ..)| *n > 0)
    .map(|&(n, one, many, why)| format!("{}{why}", count(n, one, many)))
    .collect();
    if !problems.is_empty() {
        writeln!(out, "  Problems    {}", problems.join(", "))?;
    }
    if c.unread > 0 {
        writeln!(
            out,
            "  Unread      {} never read by the server: it closed the connection in order \
             (a stopping tc-server answers every request it read, then closes)",
            count(c.unread, "request was", "requests were")
        )?;
    }
    if c.cancelled > 0 {
        writeln!(
            out,
            "  Cancelled   {} still in flight at the interrupt",
            count(c.cancelled, "request was", "requests were")
        )?;
    }
    writeln!(out, "  Time        {:.3} s measured ({:.3} s in all)", report.measured_s, report.wall_s)?;
    write!(out, "  Throughput  {:.1} ok replies/s", report.throughput_rps)?;
    // A prediction run's unit of work is the image: a predict_batch reply
    // carries --batch of them.
    if let Some(images) = p.images_per_request {
        write!(out, " = {:.1} images/s", report.throughput_rps * images as f64)?;
    }
    if c.ok > 0 && c.answered() != c.ok {
        write!(
            out,
            " ({:.1} replies/s counting the {} other replies)",
            report.replies_rps,
            c.answered() - c.ok
        )?;
    }
    writeln!(out)?;
    writeln!(out)
}

/// A ✓ or ✗ line per `--threshold`, with the figure it was checked on.
fn write_thresholds<W: Write>(report: &RunReport, out: &mut W) -> io::Result<()> {
    if report.thresholds.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let width = report.thresholds.iter().map(|v| v.threshold.chars().count()).max().unwrap_or(0);
    for (index, verdict) in report.thresholds.iter().enumerate() {
        let title = if index == 0 { "Thresholds" } else { "" };
        let mark = if verdict.passed { "✓" } else { "✗" };
        writeln!(out, "  {title:<12}{mark} {:<width$}  {}", verdict.threshold, verdict.observed_text)?;
    }
    let crossed = report.thresholds.iter().filter(|v| !v.passed).count();
    if crossed > 0 {
        writeln!(
            out,
            "              {} crossed: tc-client exits with {}",
            count(crossed as u64, "threshold", "thresholds"),
            crate::client::bench::thresholds::EXIT_CODE
        )?;
    }
    Ok(())
}

/// The latency table (from schedule and from send) and, when the server
/// reported it, where the time went.
fn write_latency<W: Write>(report: &RunReport, out: &mut W) -> io::Result<()> {
    let p = &report.parameters.workload;
    if report.latency.count == 0 {
        writeln!(out, "  Latency (ms)      —  (no ok replies: latency is measured on ok replies only)")?;
    } else {
        latency_header(out, "Latency (ms)", &report.latency)?;
        latency_row(out, "from schedule", &report.latency)?;
        latency_row(out, "from send", &report.latency_uncorrected)?;
        if p.load_model == "closed" {
            writeln!(out, "    (closed loop: each request is due when its slot frees, so the rows agree)")?;
        }
        let thin = report.latency.thin_percentiles();
        if !thin.is_empty() {
            let labels: Vec<String> = thin.iter().map(|&p| label(p)).collect();
            let needed: Vec<String> =
                thin.iter().map(|&p| LatencyStats::samples_needed(p).to_string()).collect();
            writeln!(
                out,
                "    (too few samples: {} {} at least {} ok replies to differ from max; this run has {})",
                joined(&labels),
                if labels.len() == 1 { "needs" } else { "need" },
                joined(&needed),
                report.latency.count
            )?;
        }
    }
    if report.breakdown.service.count > 0 {
        writeln!(out)?;
        latency_header(out, "Where it went (ms)", &report.breakdown.queue)?;
        latency_row(out, "queue wait", &report.breakdown.queue)?;
        latency_row(out, "service", &report.breakdown.service)?;
        latency_row(out, "rest", &report.breakdown.rest)?;
        writeln!(out, "    (rest = from send - queue - service: network, framing, threads)")?;
    }
    for error in &report.connection_errors {
        writeln!(out, "  ! {error}")?;
    }
    Ok(())
}

/// The summary, on standard output.
pub(crate) struct Summary;

impl Exporter for Summary {
    fn finish(self: Box<Self>, _run: &BenchRun, report: &RunReport) -> Result<()> {
        let mut stdout = io::stdout().lock();
        write_summary(report, &mut stdout)
            .and_then(|()| stdout.flush())
            .map_err(|e| Error::io("writing the summary to standard output", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::report::tests::sample_run;

    /// The summary of `run`, as the user would read it.
    fn summary_of(run: &BenchRun) -> String {
        let mut out = Vec::new();
        write_summary(&RunReport::new(run), &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn summary_text_is_stable() {
        let text = summary_of(&sample_run());
        let expected = "\
tc-client -> 127.0.0.1:5050 (embedded server: processes, 2 workers)
  compute n=500000, 4 connections, closed loop, 1 request in flight per connection, 5 requests per connection, warm-up none

  Requests    1002 sent, 1000 ok, 2 error replies, 0 timeouts
  Errors      BUSY 2: the job queue is full
  Time        2.000 s measured (2.500 s in all)
  Throughput  500.0 ok replies/s (501.0 replies/s counting the 2 other replies)

  Latency (ms)             min       p50       p99       max      mean     stdev
    from schedule        0.001     0.500     0.990     1.000     0.500     0.289
    from send            0.002     1.000     1.980     2.000     1.001     0.577
    (closed loop: each request is due when its slot frees, so the rows agree)

  Where it went (ms)       min       p50       p99       max      mean     stdev
    queue wait           0.001     0.050     0.099     0.100     0.050     0.029
    service              0.001     0.125     0.247     0.250     0.125     0.072
    rest                 0.002     0.825     1.634     1.650     0.827     0.476
    (rest = from send - queue - service: network, framing, threads)

Done: 1002 responses in 2.000s
";
        assert_eq!(text, expected);
    }

    #[test]
    fn a_prediction_run_shows_images_per_second_beside_requests() {
        let mut run = sample_run();
        run.options.mix = crate::client::bench::mix::CommandMix::parse("predict_batch").unwrap();
        run.options.images.batch = 8;
        let text = summary_of(&run);
        assert!(text.contains("Throughput  500.0 ok replies/s = 4000.0 images/s ("), "{text}");

        run.options.mix = crate::client::bench::mix::CommandMix::parse("predict:1,ping:1").unwrap();
        assert!(!summary_of(&run).contains("images/s"), "a mix has no single image count");
    }

    #[test]
    fn a_server_with_the_gil_says_so_in_the_first_line() {
        let mut run = sample_run();
        (run.server.mode, run.server.gil) = (Some("threads".into()), Some(true));
        let text = summary_of(&run);
        assert!(
            text.starts_with("tc-client -> 127.0.0.1:5050 (embedded server: threads, GIL on, 2 workers)"),
            "{text}"
        );
    }

    #[test]
    fn a_gateway_names_its_hosts_not_its_own_mode() {
        use crate::client::bench::FarmHosts;
        let mut run = sample_run();
        run.server.embedded = false;
        let hosts = |alive, workers, modes: &[&str]| FarmHosts {
            alive,
            workers,
            modes: modes.iter().map(|m| m.to_string()).collect(),
        };
        // `--workers 0` and one 2-slot host: the gateway's 2 workers are its host's.
        run.server.hosts = Some(hosts(1, 2, &["processes"]));
        assert!(
            summary_of(&run)
                .starts_with("tc-client -> 127.0.0.1:5050 (server: gateway, no local workers; 1 host: 2 workers, processes)"),
            "{}",
            summary_of(&run)
        );
        // Its own pool as well: 4 workers in all, 3 of them on two hosts.
        (run.server.mode, run.server.workers) = (Some("threads".into()), Some(4));
        run.server.hosts = Some(hosts(2, 3, &["processes", "threads"]));
        let text = summary_of(&run);
        assert!(
            text.contains(
                "(server: gateway, 1 local worker (threads); 2 hosts: 3 workers, processes and threads)"
            ),
            "{text}"
        );
        run.server.hosts = Some(hosts(0, 0, &[]));
        let text = summary_of(&run);
        assert!(text.contains("(server: gateway, 4 local workers (threads); no live host)"), "{text}");
    }

    #[test]
    fn one_of_anything_is_singular() {
        let mut run = sample_run();
        run.server.workers = Some(1);
        run.options.concurrency = 1;
        run.recorder.counts.unread = 1;
        run.recorder.counts.timeouts = 1;
        run.recorder.counts.errors.insert("BUSY".into(), 1);
        let text = summary_of(&run);
        for phrase in [
            "processes, 1 worker)",
            "1 connection,",
            "1 error reply, 1 timeout\n",
            "1 request was never read",
        ] {
            assert!(text.contains(phrase), "{phrase:?} in {text}");
        }
    }

    #[test]
    fn a_run_without_ok_replies_shows_no_latency_and_says_why() {
        let mut run = sample_run();
        run.recorder = crate::client::bench::Recorder::default();
        run.recorder.counts.sent = 1;
        run.recorder.counts.errors.insert("BAD_REQUEST".into(), 1);
        run.recorder.counts.error_messages.insert("BAD_REQUEST".into(), "n is above --max-n".into());
        run.recorder.counts.unread = 3;
        run.interrupted = true;
        let text = summary_of(&run);
        assert!(text.contains("Errors      BAD_REQUEST 1: n is above --max-n"), "{text}");
        assert!(text.contains("Latency (ms)      —  (no ok replies"), "{text}");
        assert!(!text.contains("from schedule"), "no table of zeros: {text}");
        assert!(text.contains("Throughput  0.0 ok replies/s\n"), "no replies/s beside nothing: {text}");
        assert!(text.contains("3 requests were never read by the server"), "{text}");
        assert!(text.contains("warm-up none\n"), "{text}");
        assert!(text.contains("INTERRUPTED after"), "{text}");
    }

    #[test]
    fn each_threshold_has_a_line_with_its_mark_and_figure() {
        let mut run = sample_run();
        run.options.thresholds = ["p99<1ms", "errors==0"]
            .iter()
            .map(|t| crate::client::bench::thresholds::Threshold::parse(t).unwrap())
            .collect();
        let text = summary_of(&run);
        assert!(text.contains("  Thresholds  ✓ p99<1ms    p99 latency from schedule was 0.9"), "{text}");
        assert!(text.contains("              ✗ errors==0  2 error replies\n"), "{text}");
        assert!(text.contains("1 threshold crossed: tc-client exits with 99"), "{text}");
        assert!(!summary_of(&sample_run()).contains("Thresholds"), "no section without thresholds");
    }

    #[test]
    fn percentiles_with_too_few_samples_are_flagged() {
        let mut run = sample_run();
        run.options.percentiles = vec![50.0, 99.9, 99.99, 100.0];
        let text = summary_of(&run);
        assert!(
            text.contains("too few samples: p99.99 needs at least 10000 ok replies to differ from max; this run has 1000"),
            "{text}"
        );
    }
}
