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
