//! The "where the time goes" chart: per run of a CSV, one stacked bar of
//! mean queue wait, service time and the rest.
//!
//! Bars are numbered and the legend column names each run, so labels never
//! overlap however many runs a sweep has.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::draw::{draw_error, draw_swatches, register_fonts, tidy, FONT, LEGEND_WIDTH, SIZE};
use super::rows::RunRow;
use crate::error::{Error, Result};

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
    super::draw::write_png(&png, SIZE, |area| draw_breakdown(area, rows))?;
    draw_breakdown(SVGBackend::new(&svg, SIZE).into_drawing_area(), rows)?;
    Ok(vec![png, svg])
}

fn draw_breakdown<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, rows: &[RunRow]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let total = |r: &RunRow| (r.queue_mean_us + r.service_mean_us + r.rest_mean_us) / 1000.0;
    let y_max = rows.iter().map(total).fold(0.0, f64::max) * 1.15 + 1e-9;
    // Bars are numbered; the legend column says what each number is, so
    // labels never overlap however many runs there are.
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let plural = if r.server_workers == 1 { "" } else { "s" };
            format!("{}, {} worker{plural}, {} conn", r.configuration(), r.server_workers, r.concurrency)
        })
        .collect();
    let mut ctx = ChartBuilder::on(&plot_area)
        .caption("Where the time goes (mean per request)", (FONT, 28))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(80)
        .build_cartesian_2d((0..rows.len() - 1).into_segmented(), 0.0..y_max)
        .map_err(draw_error)?;
    ctx.configure_mesh()
        .disable_x_mesh()
        .x_labels(rows.len())
        .x_label_formatter(&|x| match x {
            SegmentValue::CenterOf(i) => (i + 1).to_string(),
            _ => String::new(),
        })
        .y_label_formatter(&|y| tidy(*y))
        .x_desc("run (numbered; see the list on the right)")
        .y_desc("latency (ms)")
        .axis_desc_style((FONT, 18))
        .label_style((FONT, 16))
        .light_line_style(WHITE.mix(0.0))
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
            bar.set_margin(0, 0, 6, 6);
            bar
        });
        ctx.draw_series(bars).map_err(draw_error)?;
    }
    // The legend, top to bottom in the order the parts stack bottom to top.
    let swatches: Vec<(&str, RGBAColor)> =
        parts.iter().rev().map(|(name, color, _)| (*name, color.to_rgba())).collect();
    draw_swatches(&legend_area, &swatches)?;
    let text = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let row = (440 / labels.len().max(1) as i32).clamp(14, 22);
    let small = TextStyle::from((FONT, if row < 18 { 12 } else { 14 }).into_font())
        .pos(Pos::new(HPos::Left, VPos::Center));
    legend_area.draw_text("runs:", &text, (8, 160)).map_err(draw_error)?;
    for (index, label) in labels.iter().enumerate() {
        let y = 160 + (index as i32 + 1) * row;
        legend_area.draw_text(&format!("{:>2}  {label}", index + 1), &small, (8, y)).map_err(draw_error)?;
    }
    root.present().map_err(draw_error)
}
