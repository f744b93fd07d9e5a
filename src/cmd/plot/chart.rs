//! Drawing [`RunCurves`] with plotters: loss and zero-shot top-1 against samples seen,
//! each over the whole run and zoomed on its final 10%, with evaluated models marked
//! (the soup as a star), like the figure of the convnext_xxlarge model card.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, bail, Context};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::element::{Drawable, PointCollection};
use plotters::prelude::*;
use plotters::style::RGBColor;
use plotters_backend::{BackendCoord, DrawingErrorKind};

use super::curves::{Curve, EvalPoint, RunCurves};

/// Picture size in pixels (PNG) or user units (SVG).
pub const SIZE: (u32, u32) = (1400, 900);

/// The zoom panels show x from `ZOOM_FROM x x_max` on.
pub const ZOOM_FROM: f64 = 0.9;

const FONT: &str = "sans-serif";

const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),  // blue: the first training stage (core)
    RGBColor(255, 127, 14),  // orange: the second (rewind)
    RGBColor(148, 103, 189), // purple
    RGBColor(140, 86, 75),   // brown
    RGBColor(227, 119, 194), // pink
    RGBColor(23, 190, 207),  // cyan
];
const SOUP: RGBColor = RGBColor(44, 160, 44);

/// Text needs a font; a bundled one (DejaVu Sans, from the `dejavu` crate) makes the
/// picture the same on every machine, with or without system fonts.
fn register_fonts() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
            .and_then(|()| {
                plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold())
            })
            .map_err(|_| anyhow!("the bundled DejaVu Sans font did not load"));
    });
    result
}

/// Output formats, chosen by the file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn from_path(path: &Path) -> anyhow::Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("png") => Ok(Format::Png),
            Some("svg") => Ok(Format::Svg),
            _ => bail!(
                "{}: unknown picture format (use a .png or .svg file name)",
                path.display()
            ),
        }
    }
}

/// Draws `curves` into the file at `path` (PNG or SVG by `format`).
pub fn draw(curves: &RunCurves, path: &Path, format: Format) -> anyhow::Result<()> {
    register_fonts()?;
    let err = |e: String| anyhow!("drawing {}: {e}", path.display());
    match format {
        Format::Png => {
            let root = BitMapBackend::new(path, SIZE).into_drawing_area();
            draw_on(curves, &root).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))?;
        }
        Format::Svg => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            draw_on(curves, &root).map_err(err)?;
            root.present().map_err(|e| err(e.to_string()))?;
        }
    }
    std::fs::metadata(path).with_context(|| format!("{} was not written", path.display()))?;
    Ok(())
}

/// The chart as an SVG document (the report page embeds it).
pub fn svg(curves: &RunCurves) -> anyhow::Result<String> {
    register_fonts()?;
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw_on(curves, &root).map_err(|e| anyhow!("drawing the curves: {e}"))?;
        root.present()
            .map_err(|e| anyhow!("drawing the curves: {e}"))?;
    }
    Ok(out)
}

type DrawResult = Result<(), String>;

fn draw_on<DB: DrawingBackend>(curves: &RunCurves, root: &DrawingArea<DB, Shift>) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let (title, body) = root.split_vertically(52);
    let stages: Vec<&str> = curves
        .loss
        .iter()
        .chain(&curves.top1)
        .map(|c| c.stage.as_str())
        .collect();
    let color_of = |stage: &str| {
        let mut seen: Vec<&str> = Vec::new();
        for s in &stages {
            if !seen.contains(s) {
                seen.push(s);
            }
        }
        let i = seen.iter().position(|s| *s == stage).unwrap_or(seen.len());
        PALETTE[i % PALETTE.len()]
    };
    title
        .titled(
            &format!("tureen run {}", curves.run_id),
            (FONT, 26).into_font().style(FontStyle::Bold),
        )
        .map_err(e)?;

    let x_max = curves.x_max();
    if x_max <= 0.0 {
        return Err("no point has a positive x (samples seen)".into());
    }
    let full = 0.0..x_max * 1.02;
    let zoom = x_max * ZOOM_FROM..x_max * 1.005;
    let x_desc = if curves.x_is_samples {
        "samples seen"
    } else {
        "step"
    };
    let has_top1 = !curves.top1.is_empty() || !curves.evals.is_empty();
    let rows = if has_top1 { 2 } else { 1 };
    let panels = body.split_evenly((rows, 2));

    let loss_evals: Vec<EvalPoint> = Vec::new();
    let panel = |area: &DrawingArea<DB, Shift>,
                 title: &str,
                 y_desc: &str,
                 data: &[Curve],
                 evals: &[EvalPoint],
                 x: Range<f64>,
                 legend: Option<SeriesLabelPosition>| {
        let evals = PanelEvals {
            points: evals,
            branches: &curves.branches,
        };
        draw_panel(
            area, title, x_desc, y_desc, data, &evals, x, legend, &color_of,
        )
    };
    // Legends go where the curves are not: loss falls, accuracy rises.
    let (upper, lower) = (
        Some(SeriesLabelPosition::UpperRight),
        Some(SeriesLabelPosition::UpperLeft),
    );
    panel(
        &panels[0],
        "training loss",
        "loss",
        &curves.loss,
        &loss_evals,
        full.clone(),
        upper,
    )?;
    panel(
        &panels[1],
        "training loss: final 10%",
        "loss",
        &curves.loss,
        &loss_evals,
        zoom.clone(),
        None,
    )?;
    if has_top1 {
        let title = "zero-shot top-1 (%), bars: one standard error";
        panel(
            &panels[2],
            title,
            "top-1 %",
            &curves.top1,
            &curves.evals,
            full,
            lower,
        )?;
        panel(
            &panels[3],
            "zero-shot top-1 (%): final 10%",
            "top-1 %",
            &curves.top1,
            &curves.evals,
            zoom,
            None,
        )?;
    }
    Ok(())
}

/// The evaluations a panel shows, and where rewinds branch (see [`RunCurves::branches`]).
struct PanelEvals<'a> {
    points: &'a [EvalPoint],
    branches: &'a BTreeMap<String, EvalPoint>,
}

/// The y range covering every value with x in `x`, padded by 5%.
fn y_range(data: &[Curve], evals: &[EvalPoint], x: &Range<f64>) -> Range<f64> {
    let inside = |px: f64| px >= x.start && px <= x.end;
    let ys = data
        .iter()
        .flat_map(|c| c.points.iter().filter(|p| inside(p.0)).map(|p| p.1))
        .chain(evals.iter().filter(|ev| inside(ev.x)).flat_map(|ev| {
            let se = ev.stderr.unwrap_or(0.0);
            [ev.top1 - se, ev.top1 + se]
        }));
    let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
        (lo.min(y), hi.max(y))
    });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 1e-3).max(1e-6);
    lo - pad..hi + pad
}

/// Enough decimals that about six labels over a span of `span` all differ.
fn label_decimals(span: f64) -> usize {
    if span.is_nan() || span <= 0.0 {
        return 2;
    }
    (-(span / 6.0).log10()).ceil().clamp(0.0, 6.0) as usize
}

/// `34.7B`, `135.6M`, `12k`: axis labels for sample counts.
pub fn human(x: f64) -> String {
    let a = x.abs();
    let (v, unit) = if a >= 1e9 {
        (x / 1e9, "B")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e3 {
        (x / 1e3, "k")
    } else {
        return format!("{x:.0}");
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}{unit}")
}

#[allow(clippy::too_many_arguments)]
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    data: &[Curve],
    evals: &PanelEvals<'_>,
    x: Range<f64>,
    legend: Option<SeriesLabelPosition>,
    color_of: &dyn Fn(&str) -> RGBColor,
) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let (branches, evals) = (evals.branches, evals.points);
    let y = y_range(data, evals, &x);
    let decimals = label_decimals(y.end - y.start);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x.clone(), y)
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&|v| human(*v))
        .y_label_formatter(&|v| format!("{v:.decimals$}"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(e)?;
    let inside = |px: f64| px >= x.start && px <= x.end;
    let mut drew_any = false;
    for curve in data {
        let color = color_of(&curve.stage);
        let points: Vec<(f64, f64)> = curve
            .points
            .iter()
            .copied()
            .filter(|p| inside(p.0))
            .collect();
        if points.is_empty() {
            continue;
        }
        drew_any = true;
        let series = chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(e)?;
        series
            .label(format!("{} ({})", curve.stage, curve.kind))
            .legend(move |(lx, ly)| {
                PathElement::new(vec![(lx, ly), (lx + 24, ly)], color.stroke_width(3))
            });
        // Few points (short runs, sparse evals): show each one.
        if points.len() <= 64 {
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(e)?;
        }
    }
    let shown: Vec<&EvalPoint> = evals.iter().filter(|ev| inside(ev.x)).collect();
    if !shown.is_empty() {
        drew_any = true;
        draw_evals(&mut chart, &shown, branches, color_of)?;
    }
    if !drew_any {
        area.draw(&Text::new("no data in this range", (90, 60), (FONT, 16)))
            .map_err(e)?;
    }
    if let (Some(position), true) = (legend, drew_any) {
        chart
            .configure_series_labels()
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .position(position)
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Markers closer than this (pixels) are set side by side.
const MARKER_GAP: i32 = 15;

/// The evaluated models of one panel: a line through the evaluations of each training
/// stage's models in order of samples seen (zero-shot accuracy over training), each
/// evaluation a marker with a bar of one standard error either side, the soup a star.
/// Markers that would cover one another are moved apart sideways by a few pixels.
fn draw_evals<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    evals: &[&EvalPoint],
    branches: &BTreeMap<String, EvalPoint>,
    color_of: &dyn Fn(&str) -> RGBColor,
) -> DrawResult {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    let mut stages: Vec<&str> = Vec::new();
    for ev in evals.iter().filter(|ev| ev.model_kind != "soup") {
        if !stages.contains(&ev.model_stage.as_str()) {
            stages.push(&ev.model_stage);
        }
    }
    for stage in &stages {
        let mut points: Vec<&EvalPoint> = evals
            .iter()
            .copied()
            .filter(|ev| ev.model_stage == *stage && ev.model_kind != "soup")
            .collect();
        points.sort_by(|a, b| a.x.total_cmp(&b.x));
        let color = color_of(stage);
        let last = points.last().expect("a stage listed has evaluations");
        let label = match points.len() {
            1 => format!("{stage}: {} {:.2}%", last.eval_stage, last.top1),
            n => format!("{stage}: {n} evaluations, last {:.2}%", last.top1),
        };
        // A rewind's curve starts where it branched off its parent's.
        let start = branches.get(*stage).map(|b| (b.x, b.top1));
        let line: Vec<(f64, f64)> = start
            .into_iter()
            .chain(points.iter().map(|ev| (ev.x, ev.top1)))
            .collect();
        chart
            .draw_series(LineSeries::new(line, color.mix(0.8).stroke_width(2)))
            .map_err(e)?
            .label(label)
            .legend(move |(lx, ly)| diamond((lx + 12, ly), 6, color));
    }
    let offsets = dodge(
        &evals
            .iter()
            .map(|ev| chart.backend_coord(&(ev.x, ev.top1)))
            .collect::<Vec<_>>(),
    );
    for (ev, dx) in evals.iter().zip(offsets) {
        let bar = ev
            .stderr
            .map(|se| ((ev.x, ev.top1 - se), (ev.x, ev.top1 + se)));
        if ev.model_kind == "soup" {
            let label = format!("{} ({}): {:.2}%", ev.model_stage, ev.eval_stage, ev.top1);
            chart
                .draw_series(std::iter::once(
                    star((ev.x, ev.top1), 11, SOUP).with(bar, dx),
                ))
                .map_err(e)?
                .label(label)
                .legend(move |(lx, ly)| star((lx + 12, ly), 7, SOUP));
        } else {
            let color = color_of(&ev.model_stage);
            chart
                .draw_series(std::iter::once(
                    diamond((ev.x, ev.top1), 7, color).with(bar, dx),
                ))
                .map_err(e)?;
        }
    }
    Ok(())
}

/// Sideways pixel offsets that keep markers at pixel positions `at` from covering one
/// another: runs of markers closer than [`MARKER_GAP`] in x (and in y) are spread
/// evenly around where they belong, in the order given.
fn dodge(at: &[BackendCoord]) -> Vec<i32> {
    let mut order: Vec<usize> = (0..at.len()).collect();
    order.sort_by_key(|&i| at[i].0);
    let mut offsets = vec![0; at.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len()
            && (at[order[end]].0 - at[order[end - 1]].0).abs() < MARKER_GAP
            && order[start..end]
                .iter()
                .any(|&j| (at[order[end]].1 - at[j].1).abs() < 2 * MARKER_GAP)
        {
            end += 1;
        }
        let mut group: Vec<usize> = order[start..end].to_vec();
        group.sort_unstable();
        let n = group.len() as i32;
        for (k, &i) in group.iter().enumerate() {
            // Centred on the group's mean position, MARKER_GAP apart.
            let mean = group.iter().map(|&j| at[j].0).sum::<i32>() / n;
            offsets[i] = mean - at[i].0 + (2 * k as i32 - (n - 1)) * MARKER_GAP / 2;
        }
        start = end;
    }
    offsets
}

/// Pixel offsets of a five-pointed star of outer radius `r`.
fn star_points(r: i32) -> Vec<(i32, i32)> {
    (0..10)
        .map(|i| {
            let radius = if i % 2 == 0 {
                r as f64
            } else {
                r as f64 * 0.45
            };
            let angle = std::f64::consts::PI * (i as f64 / 5.0) - std::f64::consts::FRAC_PI_2;
            (
                (radius * angle.cos()).round() as i32,
                (radius * angle.sin()).round() as i32,
            )
        })
        .collect()
}

fn diamond_points(r: i32) -> Vec<(i32, i32)> {
    vec![(0, -r), (r, 0), (0, r), (-r, 0)]
}

fn closed(mut points: Vec<(i32, i32)>) -> Vec<(i32, i32)> {
    if let Some(first) = points.first().copied() {
        points.push(first);
    }
    points
}

/// A filled marker with a thin black outline around `at`, optionally with an error bar
/// from `bar.0` to `bar.1` and moved `dx` pixels sideways: a plotters element that,
/// unlike a composed one, does not depend on the backend type (legends need that).
struct Marker<C> {
    /// The marker's position, then the bar's ends if it has one.
    points: Vec<C>,
    /// Pixel offsets of the outline from the position.
    outline: Vec<(i32, i32)>,
    color: RGBColor,
    dx: i32,
}

impl<C> Marker<C> {
    /// This marker with an error bar (`(low, high)`) and a sideways pixel offset.
    fn with(mut self, bar: Option<(C, C)>, dx: i32) -> Marker<C> {
        if let Some((lo, hi)) = bar {
            self.points.truncate(1);
            self.points.extend([lo, hi]);
        }
        self.dx = dx;
        self
    }
}

impl<'a, C: 'a> PointCollection<'a, C> for &'a Marker<C> {
    type Point = &'a C;
    type IntoIter = std::slice::Iter<'a, C>;
    fn point_iter(self) -> Self::IntoIter {
        self.points.iter()
    }
}

impl<C, DB: DrawingBackend> Drawable<DB> for Marker<C> {
    fn draw<I: Iterator<Item = BackendCoord>>(
        &self,
        pos: I,
        backend: &mut DB,
        _: (u32, u32),
    ) -> Result<(), DrawingErrorKind<DB::ErrorType>> {
        let pos: Vec<BackendCoord> = pos.map(|(x, y)| (x + self.dx, y)).collect();
        let Some(&(x, y)) = pos.first() else {
            return Ok(());
        };
        if let [_, lo, hi] = pos.as_slice() {
            let bar = self.color.stroke_width(2);
            backend.draw_line(*lo, *hi, &bar)?;
            for end in [lo, hi] {
                backend.draw_line((end.0 - 4, end.1), (end.0 + 4, end.1), &bar)?;
            }
        }
        let points: Vec<BackendCoord> = self
            .outline
            .iter()
            .map(|(dx, dy)| (x + dx, y + dy))
            .collect();
        backend.fill_polygon(points.clone(), &self.color.filled())?;
        backend.draw_path(closed(points), &BLACK.stroke_width(1))?;
        Ok(())
    }
}

fn star<C>(at: C, r: i32, color: RGBColor) -> Marker<C> {
    Marker {
        points: vec![at],
        outline: star_points(r),
        color,
        dx: 0,
    }
}

fn diamond<C>(at: C, r: i32, color: RGBColor) -> Marker<C> {
    Marker {
        points: vec![at],
        outline: diamond_points(r),
        color,
        dx: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_markers_are_spread_and_separate_ones_stay() {
        // Two at the same place, one just beside them, one far away.
        let at = [(100, 50), (100, 50), (106, 52), (300, 50)];
        let dx = dodge(&at);
        let placed: Vec<i32> = at.iter().zip(&dx).map(|(p, d)| p.0 + d).collect();
        assert_eq!(dx[3], 0, "a lone marker stays where it is");
        for i in 0..3 {
            for j in 0..i {
                assert!(
                    (placed[i] - placed[j]).abs() >= MARKER_GAP - 1,
                    "{placed:?}"
                );
            }
        }
        // Markers far apart in y do not push each other sideways.
        assert_eq!(dodge(&[(100, 10), (100, 200)]), vec![0, 0]);
    }

    #[test]
    fn sample_counts_read_like_the_card() {
        assert_eq!(human(34_727_436_288.0), "34.73B");
        assert_eq!(human(135_646_078.0), "135.65M");
        assert_eq!(human(12_000.0), "12k");
        assert_eq!(human(640.0), "640");
    }

    #[test]
    fn label_decimals_grow_as_the_range_shrinks() {
        assert_eq!(label_decimals(5.0), 1);
        assert_eq!(label_decimals(0.5), 2);
        assert_eq!(label_decimals(0.0075), 3);
        assert_eq!(label_decimals(600.0), 0);
    }

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(
            Format::from_path(Path::new("a/curves.PNG")).unwrap(),
            Format::Png
        );
        assert_eq!(
            Format::from_path(Path::new("curves.svg")).unwrap(),
            Format::Svg
        );
        assert!(Format::from_path(Path::new("curves.pdf"))
            .unwrap_err()
            .to_string()
            .contains("curves.pdf"));
    }
}
