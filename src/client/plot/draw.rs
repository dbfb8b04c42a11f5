//! Drawing the charts with plotters, into PNG and SVG files.
//!
//! What makes them readable, chart by chart:
//! - every line differs from its neighbours in three ways — colour
//!   (Okabe–Ito, safe with colour blindness), dash pattern and marker — so
//!   two series with the same values stay visible, one over the other;
//! - the legend has its own column right of the plot and never covers data;
//! - a count axis (workers, connections) has a tick at each value measured
//!   and nowhere else; the percentile axis is labelled p50, p90, p99...;
//!   log axes get 1-2-5 ticks across the whole range; numbers are printed
//!   without a trailing `.0`;
//! - a point made from several runs has a bar from the slowest to the
//!   fastest, in its line's colour;
//! - the chart's notes (how to read it: cores, repeats, where a request is
//!   placed in time) are printed under the legend, wrapped to its column.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::charts::{LineChart, Series, XAxis};
use crate::error::{Error, Result};

pub(super) const SIZE: (u32, u32) = (1100, 640);
/// Width of the legend column, right of the plot.
pub(super) const LEGEND_WIDTH: u32 = 300;
/// Okabe–Ito colours: distinguishable with every common colour blindness.
pub(super) const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
    RGBColor(240, 228, 66),
];
const GREY: RGBColor = RGBColor(150, 150, 150);
pub(super) const FONT: &str = "sans-serif";

pub(super) fn register_fonts() {
    static FONTS: Once = Once::new();
    FONTS.call_once(|| {
        let _ = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
        let _ = plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold());
    });
}

/// Draws a chart of `size` pixels with `draw` into a buffer and writes it to
/// `png`: plotters draws, the image crate encodes.
///
/// # Errors
/// What `draw` returns, or a file that cannot be written.
pub(super) fn write_png(
    png: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    draw(BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area())?;
    image::save_buffer_with_format(
        png,
        &pixels,
        width,
        height,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::Chart(format!("cannot write {}: {e}", png.display())))
}

pub(super) fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::Chart(e.to_string())
}

/// How series `index` is drawn: colour, line, marker.
#[derive(Clone, Copy)]
struct Look {
    color: RGBColor,
    /// Dash and gap in pixels; `None` for a solid line.
    dash: Option<(i32, i32)>,
    /// 0 circle, 1 triangle, 2 square, 3 cross.
    marker: usize,
    width: u32,
}

impl Look {
    fn of(index: usize, series: &Series) -> Self {
        if series.reference {
            return Look { color: GREY, dash: Some((6, 6)), marker: usize::MAX, width: 2 };
        }
        let dash = [None, Some((14, 6)), Some((4, 4))][index % 3];
        Look { color: PALETTE[index % PALETTE.len()], dash, marker: index % 4, width: 3 }
    }
}

/// A number as an axis label: `2000`, `12.5`, `0.25` (no `2000.0`).
pub(super) fn tidy(value: f64) -> String {
    if value == value.round() && value.abs() < 1e15 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// 1-2-5 ticks covering `low..=high` (both positive): 0.5, 1, 2, 5, 10...
fn ticks_1_2_5(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(low.log10().floor());
    while decade <= high * 10.0 && ticks.len() < 60 {
        for step in [1.0, 2.0, 5.0] {
            let tick = decade * step;
            if tick >= low && tick <= high {
                ticks.push(tick);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// `p50`, `p99`, `p99.9` for a 1/(1-p) axis value (2, 100, 1000).
fn percentile_label(inverse: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / inverse);
    if p <= 0.0 {
        "p0".to_string()
    } else {
        format!("p{}", tidy((p * 1000.0).round() / 1000.0))
    }
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
    write_png(&png, SIZE, |area| draw_lines(area, chart))?;
    draw_lines(SVGBackend::new(&svg, SIZE).into_drawing_area(), chart)?;
    Ok(vec![png, svg])
}

/// Where a chart's data lies: the ranges its axes must cover.
struct Extent {
    x_min: f64,
    x_max: f64,
    /// Just under the smallest positive value (where a log axis starts).
    y_bottom: f64,
    y_top: f64,
    /// Ticks where there is data (counts), at p50, p90, p99... (percentiles),
    /// or none: wherever plotters likes (seconds).
    x_ticks: Vec<f64>,
}

impl Extent {
    fn of(chart: &LineChart) -> Self {
        // The y range covers the range bars too, not only the medians.
        let ranges =
            || chart.series.iter().flat_map(|s| s.ranges.iter().flat_map(|r| [(r.x, r.low), (r.x, r.high)]));
        let points = || chart.series.iter().flat_map(|s| s.points.iter().copied()).chain(ranges());
        let (x_min, x_max) = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter())
            .fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
        let y_top = points().map(|p| p.1).fold(0.0, f64::max) * 1.1 + 1e-9;
        let y_bottom = points().map(|p| p.1).filter(|y| *y > 0.0).fold(y_top, f64::min) * 0.8;
        let x_ticks: Vec<f64> = match chart.x_axis {
            XAxis::Counts => {
                let measured: BTreeSet<u64> = points().map(|p| p.0.round() as u64).collect();
                measured.into_iter().map(|x| x as f64).collect()
            }
            XAxis::Percentiles => {
                [2.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6].into_iter().filter(|x| *x <= x_max * 1.01).collect()
            }
            XAxis::Seconds => Vec::new(),
        };
        Extent { x_min, x_max, y_bottom, y_top, x_ticks }
    }
}

fn draw_lines<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &LineChart) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_error)?;
    let (plot_area, legend_area) = root.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    let Extent { x_min, x_max, y_bottom, y_top, x_ticks } = Extent::of(chart);
    let y_label = |y: &f64| tidy(*y);
    let mut builder = ChartBuilder::on(&plot_area);
    builder.caption(&chart.title, (FONT, 28)).margin(20).x_label_area_size(55).y_label_area_size(80);

    // Each kind of axis is its own type in plotters, and so is its label
    // formatter: the macro writes the mesh once for all of them.
    // `$at` maps a data point to the axes' coordinates; `$x_label` prints
    // an x coordinate.
    macro_rules! body {
        ($ctx:expr, $at:expr, $x_label:expr) => {{
            let mut ctx = $ctx;
            ctx.configure_mesh()
                .x_label_formatter(&$x_label)
                .y_label_formatter(&y_label)
                .x_desc(chart.x_label.as_str())
                .y_desc(chart.y_label.as_str())
                .label_style((FONT, 16))
                .axis_desc_style((FONT, 18))
                .light_line_style(WHITE.mix(0.0))
                .draw()
                .map_err(draw_error)?;
            draw_every_series(&mut ctx, chart, $at)?;
        }};
    }
    let same = |p: &(f64, f64)| *p;
    // A log y axis: from just under the smallest positive value, with 1-2-5
    // ticks (a log axis cannot reach 0).
    let y_log_range = y_bottom.max(1e-3)..y_top;
    let y_log =
        || y_log_range.clone().log_scale().with_key_points(ticks_1_2_5(y_log_range.start, y_log_range.end));
    // Whole numbers in tenths on an integer axis (plotters puts chosen ticks
    // only on axes it can format by itself), with some room either side so
    // the end points are not on the frame.
    let tenths = |x: f64| (x * 10.0).round() as i64;
    let pad = ((x_max - x_min) * 0.4).max(3.0) as i64;
    let count_axis = || {
        let ticks = x_ticks.iter().map(|x| tenths(*x)).collect();
        (tenths(x_min) - pad..tenths(x_max) + pad).with_key_points(ticks)
    };
    let seconds_axis = x_min..x_max.max(x_min + 1e-9);
    match (chart.x_axis, chart.log_y) {
        (XAxis::Percentiles, _) => {
            body!(
                builder
                    .build_cartesian_2d(
                        (x_min.max(1.0)..x_max).log_scale().with_key_points(x_ticks.clone()),
                        y_log()
                    )
                    .map_err(draw_error)?,
                same,
                |x: &f64| percentile_label(*x)
            )
        }
        (XAxis::Counts, false) => body!(
            builder.build_cartesian_2d(count_axis(), 0.0..y_top).map_err(draw_error)?,
            |p: &(f64, f64)| (tenths(p.0), p.1),
            |x: &i64| tidy(*x as f64 / 10.0)
        ),
        (XAxis::Counts, true) => body!(
            builder.build_cartesian_2d(count_axis(), y_log()).map_err(draw_error)?,
            |p: &(f64, f64)| (tenths(p.0), p.1),
            |x: &i64| tidy(*x as f64 / 10.0)
        ),
        (XAxis::Seconds, false) => body!(
            builder.build_cartesian_2d(seconds_axis.clone(), 0.0..y_top).map_err(draw_error)?,
            same,
            |x: &f64| tidy(*x)
        ),
        (XAxis::Seconds, true) => body!(
            builder.build_cartesian_2d(seconds_axis.clone(), y_log()).map_err(draw_error)?,
            same,
            |x: &f64| tidy(*x)
        ),
    }
    let entries: Vec<(String, Look)> =
        chart.series.iter().enumerate().map(|(i, s)| (s.label.clone(), Look::of(i, s))).collect();
    let legend_bottom = draw_legend(&legend_area, &entries)?;
    draw_notes(&legend_area, &chart.notes, legend_bottom + 30)?;
    root.present().map_err(draw_error)
}

/// Draws each series of `chart` on a mesh already drawn: its line, its
/// markers and its range bars. `at` maps a data point to the axes'
/// coordinates, whatever type they are.
fn draw_every_series<DB, CT>(
    ctx: &mut ChartContext<'_, DB, CT>,
    chart: &LineChart,
    at: impl Fn(&(f64, f64)) -> CT::From + Copy,
) -> Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate,
    CT::From: Clone + 'static,
{
    for (index, series) in chart.series.iter().enumerate() {
        let look = Look::of(index, series);
        let style = look.color.stroke_width(look.width);
        let line = series.points.iter().map(at);
        match look.dash {
            None => ctx.draw_series(LineSeries::new(line, style)).map(|_| ()),
            Some((dash, gap)) => ctx.draw_series(DashedLineSeries::new(line, dash, gap, style)).map(|_| ()),
        }
        .map_err(draw_error)?;
        // Markers on at most ~25 points, so dense curves stay lines.
        let step = (series.points.len() / 25).max(1);
        let marked = series.points.iter().step_by(step).map(at);
        let (fill, stroke) = (look.color.filled(), look.color.stroke_width(2));
        match look.marker {
            0 => ctx.draw_series(marked.map(|p| Circle::new(p, 5, fill))).map(|_| ()),
            1 => ctx.draw_series(marked.map(|p| TriangleMarker::new(p, 7, fill))).map(|_| ()),
            2 => ctx
                .draw_series(marked.map(|p| EmptyElement::at(p) + Rectangle::new([(-4, -4), (4, 4)], fill)))
                .map(|_| ()),
            3 => ctx.draw_series(marked.map(|p| Cross::new(p, 5, stroke))).map(|_| ()),
            _ => Ok(()),
        }
        .map_err(draw_error)?;
        // The range of the runs behind a point, from the slowest to the
        // fastest: a vertical line with a 12-pixel cap at each end.
        for range in &series.ranges {
            let (low, high) = (at(&(range.x, range.low)), at(&(range.x, range.high)));
            let cap = |end: CT::From| EmptyElement::at(end) + PathElement::new([(-6, 0), (6, 0)], stroke);
            ctx.draw_series([PathElement::new([low.clone(), high.clone()], stroke)]).map_err(draw_error)?;
            ctx.draw_series([cap(low), cap(high)]).map_err(draw_error)?;
        }
    }
    Ok(())
}

/// Breaks `text` into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The chart's notes, wrapped to the legend column, from `top` down.
fn draw_notes<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, notes: &[String], top: i32) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let text = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let mut y = top;
    for note in notes {
        for line in wrap(note, 40) {
            area.draw_text(&line, &text, (8, y)).map_err(draw_error)?;
            y += 17;
        }
        y += 8;
    }
    Ok(())
}

/// The legend, in its own column: a sample of each line (colour, dashes and
/// marker) and its label. Returns the y of its last row.
fn draw_legend<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, entries: &[(String, Look)]) -> Result<i32>
where
    DB::ErrorType: 'static,
{
    // Rows get smaller when there are many, down to a readable minimum.
    let row = (560 / entries.len().max(1) as i32).clamp(16, 26);
    let font_size = if row < 20 { 12 } else { 14 };
    for (index, (label, look)) in entries.iter().enumerate() {
        let y = 60 + index as i32 * row;
        let style = look.color.stroke_width(look.width);
        match look.dash {
            None => area.draw(&PathElement::new([(8, y), (48, y)], style)),
            Some((dash, gap)) => {
                let mut x = 8;
                while x < 48 {
                    area.draw(&PathElement::new([(x, y), ((x + dash).min(48), y)], style))
                        .map_err(draw_error)?;
                    x += dash + gap;
                }
                Ok(())
            }
        }
        .map_err(draw_error)?;
        let (fill, stroke) = (look.color.filled(), look.color.stroke_width(2));
        match look.marker {
            0 => area.draw(&Circle::new((28, y), 5, fill)),
            1 => area.draw(&TriangleMarker::new((28, y), 7, fill)),
            2 => area.draw(&Rectangle::new([(24, y - 4), (32, y + 4)], fill)),
            3 => area.draw(&Cross::new((28, y), 5, stroke)),
            _ => Ok(()),
        }
        .map_err(draw_error)?;
        let text = TextStyle::from((FONT, font_size).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw_text(label, &text, (56, y)).map_err(draw_error)?;
    }
    Ok(60 + (entries.len() as i32 - 1).max(0) * row)
}

/// A legend of filled boxes, one per `(name, colour)`, down a legend
/// column from the top.
pub(super) fn draw_swatches<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    swatches: &[(&str, RGBAColor)],
) -> Result<()>
where
    DB::ErrorType: 'static,
{
    let text = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    for (index, (name, color)) in swatches.iter().enumerate() {
        let y = 60 + index as i32 * 26;
        area.draw(&Rectangle::new([(8, y - 7), (30, y + 7)], color.filled())).map_err(draw_error)?;
        area.draw_text(name, &text, (38, y)).map_err(draw_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_numbers_are_tidy() {
        assert_eq!(tidy(2000.0), "2000");
        assert_eq!(tidy(12.54), "12.5");
        assert_eq!(tidy(0.25), "0.25");
        assert_eq!(percentile_label(2.0), "p50");
        assert_eq!(percentile_label(1000.0), "p99.9");
    }

    #[test]
    fn notes_wrap_at_spaces_to_the_legend_column() {
        assert_eq!(wrap("This machine has 2 cores: work", 16), vec!["This machine has", "2 cores: work"]);
        assert_eq!(wrap("", 10), Vec::<String>::new());
    }

    #[test]
    fn log_ticks_cover_the_whole_range() {
        assert_eq!(ticks_1_2_5(1.5, 30.0), vec![2.0, 5.0, 10.0, 20.0]);
        assert_eq!(ticks_1_2_5(0.3, 0.6), vec![0.5]);
    }
}
