//! `tc-client plot` draws every chart, as PNG and SVG, from real reports.

mod common;

use common::run_client;

#[test]
fn every_chart_is_drawn_from_real_reports() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (csv, hgrm, hlog) = (path("runs.csv"), path("run.hgrm"), path("run.hlog"));
    for workers in ["1", "2"] {
        let out = run_client(&[
            "--embedded",
            "--mode",
            "threads",
            "--workers",
            workers,
            // Connections vary with workers, so both the throughput and the
            // latency chart have two x values to draw a line through.
            "-c",
            workers,
            "-n",
            "40",
            "--size",
            "1000",
            "--csv",
            &csv,
            "--hgrm",
            &hgrm,
            "--hdr-log",
            &hlog,
            "--hdr-log-interval",
            "10ms",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let charts: [(&str, Vec<&str>, &str); 5] = [
        ("throughput", vec!["--csv", &csv], "Throughput as workers grow"),
        ("latency", vec!["--csv", &csv], "Latency as connections grow"),
        ("breakdown", vec!["--csv", &csv], "Where the time goes"),
        ("percentiles", vec!["--hgrm", &hgrm], "Latency by percentile"),
        ("timeline", vec!["--hdr-log", &hlog], "Latency over time"),
    ];
    for (chart, inputs, title) in charts {
        let out_base = path(chart);
        let mut args = vec!["plot", chart, "-o", &out_base];
        args.extend(inputs);
        let out = run_client(&args);
        assert!(out.status.success(), "{chart}: {}", String::from_utf8_lossy(&out.stderr));
        let png = std::fs::read(format!("{out_base}.png")).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "{chart}: a PNG file");
        assert!(png.len() > 10_000, "{chart}: a PNG with something drawn ({} bytes)", png.len());
        let svg = std::fs::read_to_string(format!("{out_base}.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains(title), "{chart}: the SVG has its title");
    }
    // A chart without its input is a clear error.
    let out = run_client(&["plot", "throughput", "-o", &path("nothing")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--csv"));
}

#[test]
fn a_missing_input_and_a_missing_output_directory_are_reported_together() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.csv");
    let out_base = dir.path().join("no/dir/x");
    let out = run_client(&[
        "plot",
        "throughput",
        "--csv",
        missing.to_str().unwrap(),
        "-o",
        out_base.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("2 problems, nothing drawn"), "{stderr}");
    assert!(stderr.contains("missing.csv: cannot read the CSV"), "{stderr}");
    assert!(stderr.contains("the directory for -o/--out does not exist"), "{stderr}");
}

#[test]
fn charts_say_how_to_read_them_and_the_timeline_has_a_log_axis() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (csv, hlog) = (path("sweep.csv"), path("run.hlog"));
    let out = run_client(
        &["sweep", "--modes", "threads", "--workers", "1,2", "-c", "2", "--sizes", "1000"]
            .into_iter()
            .chain(["-d", "300ms", "--warmup", "0s", "--repeats", "2", "--csv", &csv])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run_client(
        &["--embedded", "--mode", "threads", "--workers", "1", "-c", "2", "-n", "40"]
            .into_iter()
            .chain(["--size", "1000", "--hdr-log", &hlog, "--hdr-log-interval", "10ms"])
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let draw = |args: &[&str], name: &str| {
        let out_base = path(name);
        let out = run_client(&[args, &["-o", &out_base]].concat());
        assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
        std::fs::read_to_string(format!("{out_base}.svg")).unwrap()
    };
    let throughput = draw(&["plot", "throughput", "--csv", &csv], "throughput");
    assert!(throughput.contains("-core machine"), "the title states the cores");
    // Notes are wrapped into lines of text: look for a few words at a time.
    assert!(throughput.contains("cores: CPU-bound work"), "the note explains the plateau");
    assert!(throughput.contains("the median"), "2 runs per point: medians with their range");

    let timeline = draw(&["plot", "timeline", "--hdr-log", &hlog], "timeline");
    assert!(timeline.contains("time the replies arrived"), "the x axis says where a request is placed");
    assert!(timeline.contains("reply arrived, not"), "and the note says it in full");
    assert!(!timeline.contains("log scale"));
    let log = draw(&["plot", "timeline", "--hdr-log", &hlog, "--log-y"], "timeline-log");
    assert!(log.contains("latency (ms, log scale)"), "--log-y makes the latency axis logarithmic");
}

#[test]
fn the_workers_chart_and_the_trace_have_every_answered_job_on_its_worker() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let requests = path("requests.csv");
    let out = run_client(&[
        "--embedded",
        "--mode",
        "processes",
        "--workers",
        "2",
        "-c",
        "2",
        "-n",
        "30",
        "--size",
        "1000",
        "--warmup",
        "0",
        "--requests-csv",
        &requests,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (chart, trace) = (path("workers"), path("trace.json"));
    let out = run_client(&["plot", "workers", "--requests-csv", &requests, "-o", &chart, "--trace", &trace]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for extension in ["png", "svg"] {
        assert!(std::fs::metadata(format!("{chart}.{extension}")).unwrap().len() > 1000, "{extension}");
    }
    // One "job" slice per answered request, each on the worker the CSV names.
    let csv = std::fs::read_to_string(&requests).unwrap();
    let mut answered: Vec<(u64, u64, u64)> = csv
        .lines()
        .skip(1)
        .map(|line| line.split(',').collect::<Vec<_>>())
        .filter(|cells| cells[11] == "ok")
        .map(|cells| (cells[0].parse().unwrap(), cells[1].parse().unwrap(), cells[10].parse().unwrap()))
        .collect();
    let trace: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&trace).unwrap()).unwrap();
    let mut slices: Vec<(u64, u64, u64)> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["cat"] == "job")
        .map(|e| {
            (
                e["args"]["connection"].as_u64().unwrap(),
                e["args"]["id"].as_u64().unwrap(),
                e["tid"].as_u64().unwrap(),
            )
        })
        .collect();
    answered.sort_unstable();
    slices.sort_unstable();
    assert_eq!(answered.len(), 60, "-n 30 on each of 2 connections");
    assert_eq!(slices, answered);
    // A worker runs one job at a time: its track's slices never overlap
    // (Perfetto would draw overlapping ones wrongly nested).
    let events = trace["traceEvents"].as_array().unwrap();
    let mut workers: Vec<u64> = slices.iter().map(|&(_, _, worker)| worker).collect();
    workers.sort_unstable();
    workers.dedup();
    for worker in workers {
        let mut runs: Vec<(u64, u64)> = events
            .iter()
            .filter(|e| e["cat"] == "job" && e["tid"] == worker)
            .map(|e| (e["ts"].as_u64().unwrap(), e["ts"].as_u64().unwrap() + e["dur"].as_u64().unwrap()))
            .collect();
        runs.sort_unstable();
        assert!(runs.windows(2).all(|pair| pair[0].1 <= pair[1].0), "worker {worker}: {runs:?}");
    }
    // Every queue wait opens and closes, on no worker's track.
    let waits = |phase: &str| events.iter().filter(|e| e["cat"] == "queue" && e["ph"] == phase).count();
    assert_eq!(waits("b"), waits("e"));
    assert!(events.iter().filter(|e| e["cat"] == "queue").all(|e| e.get("tid").is_none()));
    // The refusal of a CSV that is not a requests CSV names the flag.
    let out = run_client(&["plot", "workers", "--requests-csv", &chart, "-o", &path("x")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--requests-csv"));
}
