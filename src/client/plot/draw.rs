//! Drawing the charts with plotters, into PNG and SVG files: axes, labels,
//! colours that stay distinguishable with colour blindness, legends.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use super::{LineChart, RunRow};
use crate::error::{Error, Result};

const SIZE: (u32, u32) = (1000, 640);
/// Okabe–Ito colours: distinguishable with every common colour blindness.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];
const FONT: &str = "sans-serif";

fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

/// Draws a line chart into `OUT.png` and `OUT.svg`; returns the two paths.
///
/// # Errors
/// An empty chart, or a file that cannot be written.
pub(crate) fn write_line_chart(chart: &LineChart, out: &Path) -> Result<Vec<PathBuf>> {
    if chart.series.iter().all(|s| s.points.is_empty()) {
        return Err(Error::Chart(format!("nothing to draw for \"{}\"", chart.title)));
    }
    register_fonts();
    let (png, svg) = (out.with_extension("png"), out.with_extension("svg"));
    draw_lines(BitMapBackend::new(&png, SIZE).into_drawing_area(), chart)?;
    draw_lines(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)?;
    Ok(vec![png, svg])
}

fn bounds(chart: &LineChart) -> (f64, f64, f64) {
    let xs = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.0));
    let (x_min, x_max) = xs.fold((f64::MAX, f64::MIN), |(lo, hi), x| (lo.min(x), hi.max(x)));
    let y_max = chart.series.iter().flat_map(|s| s.points.iter().map(|p| p.1)).fold(0.0, f64::max);
    (x_min, x_max.max(x_min + 1e-9), y_max * 1.1 + 1e-9)
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &LineChart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let (x_min, x_max, y_max) = bounds(chart);
    // Counts (workers, connections) get whole-number ticks only.
    let whole_x = chart.series.iter().flat_map(|s| &s.points).all(|p| p.0.fract() == 0.0);
    let x_ticks = if whole_x && !chart.x_log { ((x_max - x_min) as usize + 1).min(12) } else { 10 };
    let mut builder = ChartBuilder::on(&root);
    builder.caption(&chart.title, (FONT, 30)).margin(20).x_label_area_size(55).y_label_area_size(80);
    // The two axis kinds are different types, so each gets its own body.
    macro_rules! body {
        ($ctx:expr) => {{
            let mut ctx = $ctx;
            let whole_numbers = |x: &f64| if whole_x { format!("{x:.0}") } else { format!("{x}") };
            ctx.configure_mesh()
                .x_labels(x_ticks)
                .x_label_formatter(&whole_numbers)
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style((FONT, 16))
                .axis_desc_style((FONT, 18))
                .draw()
                .map_err(draw_error)?;
            for (i, series) in chart.series.iter().enumerate() {
                let color =
                    if series.reference { RGBColor(150, 150, 150) } else { PALETTE[i % PALETTE.len()] };
                let style = color.stroke_width(if series.reference { 1 } else { 3 });
                ctx.draw_series(LineSeries::new(series.points.iter().copied(), style))
                    .map_err(draw_error)?
                    .label(series.label.as_str())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(3)));
                if !series.reference {
                    ctx.draw_series(series.points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                        .map_err(draw_error)?;
                }
            }
            legend(&mut ctx)?;
        }};
    }
    let y_min =
        chart.series.iter().flat_map(|s| &s.points).map(|p| p.1).filter(|y| *y > 0.0).fold(y_max, f64::min);
    let y_log = (y_min * 0.8).max(1e-3)..y_max;
    match (chart.x_log, chart.y_log) {
        (true, true) => body!(builder
            .build_cartesian_2d((x_min.max(1.0)..x_max).log_scale(), y_log.log_scale())
            .map_err(draw_error)?),
        (true, false) => body!(builder
            .build_cartesian_2d((x_min.max(1.0)..x_max).log_scale(), 0.0..y_max)
            .map_err(draw_error)?),
        (false, true) => {
            body!(builder.build_cartesian_2d(x_min..x_max, y_log.log_scale()).map_err(draw_error)?)
        }
        (false, false) => body!(builder.build_cartesian_2d(x_min..x_max, 0.0..y_max).map_err(draw_error)?),
    }
    root.present().map_err(draw_error)
}

/// Draws, per run of a CSV, a stacked bar of mean queue wait, service time
/// and the rest, into `OUT.png` and `OUT.svg`.
///
/// # Errors
/// No rows, or a file that cannot be written.
pub(crate) fn write_breakdown_chart(rows: &[RunRow], out: &Path) -> Result<Vec<PathBuf>> {
    if rows.is_empty() {
        return Err(Error::Chart("nothing to draw: the CSV has no rows".into()));
    }
    register_fonts();
    let (png, svg) = (out.with_extension("png"), out.with_extension("svg"));
    draw_breakdown(BitMapBackend::new(&png, SIZE).into_drawing_area(), rows)?;
    draw_breakdown(SVGBackend::new(&svg, SIZE).into_drawing_area(), rows)?;
    Ok(vec![png, svg])
}

fn draw_breakdown<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, rows: &[RunRow]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let total = |r: &RunRow| (r.queue_mean_us + r.service_mean_us + r.rest_mean_us) / 1000.0;
    let y_max = rows.iter().map(total).fold(0.0, f64::max) * 1.15 + 1e-9;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} {}w {}c", r.configuration(), r.server_workers, r.concurrency))
        .collect();
    // A segmented axis: one segment per run, its label centred under the bar.
    let mut ctx = ChartBuilder::on(&root)
        .caption("Where the time goes (mean per request)", (FONT, 30))
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(80)
        .build_cartesian_2d((0..rows.len() - 1).into_segmented(), 0.0..y_max)
        .map_err(draw_error)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .x_desc("run (configuration, workers, connections)")
        .y_desc("latency (ms)")
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 18))
        .draw()
        .map_err(draw_error)?;
    /// A stacked part of a bar: its name, colour, and how to read it (µs).
    type Part = (&'static str, RGBColor, fn(&RunRow) -> f64);
    let parts: [Part; 3] = [
        ("queue wait", RGBColor(230, 159, 0), |r| r.queue_mean_us),
        ("service", RGBColor(0, 114, 178), |r| r.service_mean_us),
        ("rest (network, framing, threads)", RGBColor(0, 158, 115), |r| r.rest_mean_us),
    ];
    for (name, color, value) in parts {
        let bars = rows.iter().enumerate().map(|(i, row)| {
            let below: f64 = parts.iter().take_while(|(n, _, _)| *n != name).map(|(_, _, v)| v(row)).sum();
            let (left, right) = (SegmentValue::Exact(i), SegmentValue::Exact(i + 1));
            let mut bar = Rectangle::new(
                [(left, below / 1000.0), (right, (below + value(row)) / 1000.0)],
                color.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            bar
        });
        ctx.draw_series(bars)
            .map_err(draw_error)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 6), (x + 16, y + 6)], color.filled()));
    }
    legend(&mut ctx)?;
    root.present().map_err(draw_error)
}

/// The legend box, the same on every chart: top left, over a light background.
fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    ctx: &mut ChartContext<'a, DB, CT>,
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    ctx.configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 15))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(draw_error)
}
