//! PNG plots for the scenario runner: latency CDFs and per-backend traffic share.
//!
//! Rendering uses `plotters`' bitmap backend with its `ab_glyph` text backend, so no
//! system font library is needed: a TrueType/OpenType font is read at run time from
//! `$SCENARIO_FONT`, or else from a few well-known paths (DejaVu Sans first). Axis tick
//! labels and axis titles are drawn by plotters; all other text (title, captions, legend,
//! notes) is laid out here with `ab_glyph` directly, because plotters' `ab_glyph` text
//! path drops glyph side bearings, which garbles spacing in numbers like "11.5".
//!
//! Nothing here panics on bad data: NaN, infinite and non-positive latency samples are
//! skipped (and counted in the legend), non-finite shares break the line, and an input
//! with nothing to draw still yields a valid PNG that carries a note saying so.

use std::error::Error;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::OnceLock;

use ab_glyph::{Font as _, FontRef, PxScale, ScaleFont as _, point};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::register_font;

type Res<T> = Result<T, Box<dyn Error>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Image size in pixels.
const SIZE: (u32, u32) = (1200, 700);
/// Height of the title strip at the top.
const TITLE_H: u32 = 44;
/// Width of the legend column on the right.
const LEGEND_W: u32 = 290;
/// Family name the loaded font is registered under.
const FONT: &str = "sans-serif";
/// Env var naming the TTF/OTF file to render text with.
const FONT_ENV: &str = "SCENARIO_FONT";
/// Fonts tried, in order, when `$SCENARIO_FONT` is unset.
const DEFAULT_FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];
/// Latencies are drawn clamped to this range (ms) so the log axis stays sane.
const MIN_MS: f64 = 1e-6;
const MAX_MS: f64 = 1e12;
/// Bucket starts (s) beyond this magnitude are ignored.
const MAX_ABS_S: f64 = 1e12;
/// Per-axis vertex budget for one CDF curve (keeps million-sample inputs cheap).
const CDF_BUDGET: usize = 1500;
/// Share series with at most this many points also get a marker per point.
const MARKER_MAX_POINTS: usize = 120;

const GRID_BOLD: RGBColor = RGBColor(205, 205, 205);
const GRID_LIGHT: RGBColor = RGBColor(238, 238, 238);
const REF_LINE: RGBColor = RGBColor(105, 105, 105);
const DIM_TEXT: RGBColor = RGBColor(85, 85, 85);

/// Twelve well-separated colours (Tableau 10 plus navy and dark gold).
const PALETTE: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(57, 59, 121),
    RGBColor(184, 134, 11),
];

/// Latency CDF, x = latency in ms (log scale), y = fraction of requests ≤ x.
///
/// Left panel: the whole distribution (y 0–1, dashed p50/p90/p99 lines). Right panel:
/// the tail, y 0.9–1.0 (dashed p95/p99/p99.9 lines), x zoomed to where the tail lives.
/// Samples that are NaN, infinite or ≤ 0 are skipped and counted in the legend.
pub fn latency_cdf(
    path: &std::path::Path,
    title: &str,
    series: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    guarded(|| latency_cdf_impl(path, title, series))
}

/// Share of requests per backend over time, x = seconds from start, one line per backend.
///
/// `series[i].1[j]` is the share of backend `i` in the bucket starting at
/// `bucket_starts_s[j]`. Non-finite values break the line; values outside [0, 1] are
/// clipped (and noted). A dashed line marks the even split 1/k over the k backends.
pub fn share_over_time(
    path: &std::path::Path,
    title: &str,
    bucket_starts_s: &[f64],
    series: &[(String, Vec<f64>)],
) -> Result<(), Box<dyn std::error::Error>> {
    guarded(|| share_impl(path, title, bucket_starts_s, series))
}

/// Runs `f`, turning a panic inside plotting into an error. (Errors do not repeat the
/// output path; callers report it.)
fn guarded(f: impl FnOnce() -> Res<()>) -> Res<()> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(format!("plotting panicked: {msg}").into())
        }
    }
}

// ---------------------------------------------------------------------------------------
// Latency CDF
// ---------------------------------------------------------------------------------------

struct CdfSeries {
    name: String,
    /// Valid samples, sorted ascending.
    xs: Vec<f64>,
    skipped: usize,
}

fn latency_cdf_impl(path: &Path, title: &str, series: &[(String, Vec<f64>)]) -> Res<()> {
    let pen = Pen::new()?;
    prepare_path(path)?;

    let cleaned: Vec<CdfSeries> = series
        .iter()
        .map(|(name, samples)| {
            let mut xs: Vec<f64> = samples
                .iter()
                .copied()
                .filter(|x| x.is_finite() && *x > 0.0)
                .collect();
            xs.sort_by(f64::total_cmp);
            CdfSeries {
                name: clean_text(name),
                skipped: samples.len() - xs.len(),
                xs,
            }
        })
        .collect();

    let nonempty = || cleaned.iter().filter(|s| !s.xs.is_empty());
    let data_lo = nonempty().map(|s| clamp_ms(s.xs[0])).reduce(f64::min);
    let data_hi = nonempty()
        .map(|s| clamp_ms(s.xs[s.xs.len() - 1]))
        .reduce(f64::max);
    let tail_lo = nonempty()
        .filter_map(|s| quantile(&s.xs, 0.9))
        .map(clamp_ms)
        .reduce(f64::min);
    let clamped = nonempty()
        .flat_map(|s| s.xs.iter())
        .filter(|x| **x < MIN_MS || **x > MAX_MS)
        .count();

    let (main_x, tail_x, note) = match (data_lo, data_hi, tail_lo) {
        (Some(lo), Some(hi), Some(tlo)) => (log_range(lo, hi), log_range(tlo, hi), None),
        _ => {
            let note = if series.is_empty() {
                "no series given"
            } else {
                "no valid latency samples\n(all empty, NaN or ≤ 0)"
            };
            ((0.1, 1000.0), (0.1, 1000.0), Some(note))
        }
    };

    let mut main_curves = Vec::new();
    let mut tail_curves = Vec::new();
    let mut entries = Vec::new();
    for (i, s) in cleaned.iter().enumerate() {
        let colour = colour(i);
        main_curves.push((colour, cdf_path(&s.xs, 0.0, main_x.1)));
        tail_curves.push((colour, cdf_path(&s.xs, 0.9, tail_x.1)));
        let mut suffix = format!(" (n={}", s.xs.len());
        if s.skipped > 0 {
            suffix.push_str(&format!(", {} skipped", s.skipped));
        }
        suffix.push(')');
        let detail = match (
            quantile(&s.xs, 0.5),
            quantile(&s.xs, 0.9),
            quantile(&s.xs, 0.99),
        ) {
            (Some(p50), Some(p90), Some(p99)) => format!(
                "p50 {} · p90 {} · p99 {} ms",
                fmt_num(p50, 3, 0),
                fmt_num(p90, 3, 0),
                fmt_num(p99, 3, 0)
            ),
            _ => "no valid samples".to_string(),
        };
        entries.push(LegendEntry {
            colour,
            name: s.name.clone(),
            suffix,
            detail,
        });
    }

    let mut notes = Vec::new();
    if clamped > 0 {
        notes.push(format!(
            "{clamped} samples beyond [{}, {}] ms clamped",
            fmt_num(MIN_MS, 3, 0),
            fmt_num(MAX_MS, 3, 0)
        ));
    }

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (title_area, body) = root.split_vertically(TITLE_H);
    pen.title(&title_area, title)?;
    let (plots, legend) = body.split_horizontally(SIZE.0 - LEGEND_W);
    let (main_area, tail_area) = plots.split_horizontally((SIZE.0 - LEGEND_W) * 54 / 100);

    let main = CdfPanel {
        caption: "all requests",
        x: main_x,
        y: (0.0, 1.0),
        y_labels: 11,
        y_decimals: 1,
        y_desc: "fraction of requests ≤ x",
        refs: &[(0.5, "p50"), (0.9, "p90"), (0.99, "p99")],
    };
    draw_cdf_panel(&pen, &root, &main_area, &main, &main_curves, note)?;
    let tail = CdfPanel {
        caption: "tail (p90 and above)",
        x: tail_x,
        y: (0.9, 1.0),
        y_labels: 6,
        y_decimals: 2,
        y_desc: "fraction of requests ≤ x",
        refs: &[(0.95, "p95"), (0.99, "p99"), (0.999, "p99.9")],
    };
    draw_cdf_panel(&pen, &root, &tail_area, &tail, &tail_curves, note)?;
    pen.legend(&legend, &entries, &notes)?;
    root.present()?;
    Ok(())
}

struct CdfPanel<'s> {
    caption: &'s str,
    x: (f64, f64),
    y: (f64, f64),
    /// Maximum number of y labels (plotters picks round values).
    y_labels: usize,
    y_decimals: usize,
    y_desc: &'s str,
    refs: &'s [(f64, &'s str)],
}

fn draw_cdf_panel(
    pen: &Pen,
    root: &Area,
    area: &Area,
    p: &CdfPanel,
    curves: &[(RGBColor, Vec<(f64, f64)>)],
    note: Option<&str>,
) -> Res<()> {
    let axis_px = area.dim_in_pixel().0.saturating_sub(130);
    let ticks = log_ticks(p.x.0, p.x.1, axis_px);
    let x_spec = (p.x.0..p.x.1)
        .log_scale()
        .with_key_points(ticks.bold)
        .with_light_points(ticks.light);
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .margin_top(34)
        .margin_right(50)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_spec, p.y.0..p.y.1)?;
    let x_fmt = |v: &f64| fmt_num(*v, 3, ticks.min_decimals);
    let y_fmt = |v: &f64| format!("{:.*}", p.y_decimals, v);
    chart
        .configure_mesh()
        .x_desc("latency (ms, log scale)")
        .y_desc(p.y_desc)
        .y_labels(p.y_labels)
        .y_max_light_lines(1)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .draw()?;
    let (xr, yr) = chart.plotting_area().get_pixel_range();
    let at = ((xr.start + xr.end) / 2, yr.start - 26);
    pen.draw(
        root,
        p.caption,
        at,
        16.0,
        BLACK,
        Align::Center,
        Align::Start,
    )?;

    for (y, label) in p.refs {
        chart.draw_series(DashedLineSeries::new(
            vec![(p.x.0, *y), (p.x.1, *y)],
            6,
            4,
            REF_LINE.stroke_width(1),
        ))?;
        let (px, py) = chart.backend_coord(&(p.x.1, *y));
        pen.draw(
            root,
            label,
            (px + 5, py),
            12.0,
            DIM_TEXT,
            Align::Start,
            Align::Center,
        )?;
    }
    for (colour, pts) in curves {
        if pts.len() >= 2 {
            chart.draw_series(LineSeries::new(pts.iter().copied(), colour.stroke_width(2)))?;
        }
    }
    if let Some(note) = note {
        pen.note(root, &chart.plotting_area().get_pixel_range(), note)?;
    }
    Ok(())
}

/// Nearest-rank quantile of sorted `xs`: the smallest sample with at least `q` of the
/// samples ≤ it.
fn quantile(xs: &[f64], q: f64) -> Option<f64> {
    let n = xs.len();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64) - 1e-9).ceil().max(1.0) as usize;
    xs.get(rank.min(n) - 1).copied()
}

/// Step-shaped empirical CDF of sorted `xs` (y = fraction of samples ≤ x), restricted
/// to y ≥ `y_floor` and extended at y = 1 to `x_end`. Vertices are thinned so that
/// consecutive kept points differ by ≥ 1/CDF_BUDGET of the y span or of the log-x span,
/// which is below a pixel at this image size.
fn cdf_path(xs: &[f64], y_floor: f64, x_end: f64) -> Vec<(f64, f64)> {
    let n = xs.len();
    if n == 0 {
        return Vec::new();
    }
    let nf = n as f64;
    let start = (((y_floor * nf) - 1e-9).ceil().max(0.0) as usize)
        .saturating_sub(1)
        .min(n - 1);
    let first_x = clamp_ms(xs[start]);
    let span_lx = (clamp_ms(xs[n - 1]).ln() - first_x.ln()).max(1e-12);
    let min_dy = (1.0 - y_floor) / CDF_BUDGET as f64;
    let min_dlx = span_lx / CDF_BUDGET as f64;

    let mut pts = vec![(first_x, y_floor)];
    let (mut prev_y, mut kept_lx) = (y_floor, first_x.ln());
    for i in start..n {
        // Only the last of a run of equal samples is a CDF vertex.
        if i + 1 < n && xs[i + 1] <= xs[i] {
            continue;
        }
        let y = (i + 1) as f64 / nf;
        let x = clamp_ms(xs[i]);
        let lx = x.ln();
        if i + 1 == n || y - prev_y >= min_dy || lx - kept_lx >= min_dlx {
            pts.push((x, prev_y));
            pts.push((x, y));
            prev_y = y;
            kept_lx = lx;
        }
    }
    if let Some(&(last_x, _)) = pts.last() {
        if x_end > last_x {
            pts.push((x_end, 1.0));
        }
    }
    pts
}

fn clamp_ms(x: f64) -> f64 {
    x.clamp(MIN_MS, MAX_MS)
}

/// Log-axis range covering [lo, hi] with a 2 % (of the log span) margin on each side,
/// widened to ×/÷1.5 around the value when the data has (almost) no spread.
fn log_range(lo: f64, hi: f64) -> (f64, f64) {
    let (lo, hi) = (clamp_ms(lo.min(hi)), clamp_ms(hi.max(lo)));
    if hi <= lo * 1.001 {
        return (lo / 1.5, hi * 1.5);
    }
    let pad = (hi / lo).powf(0.02);
    (lo / pad, hi * pad)
}

struct Ticks {
    /// Labelled ticks (bold grid lines).
    bold: Vec<f64>,
    /// Minor grid lines.
    light: Vec<f64>,
    /// Minimum decimals for tick labels (non-zero only for linear fallback ticks).
    min_decimals: usize,
}

/// Ticks for a log axis over [lo, hi] (0 < lo < hi) at least ~40 px apart on an axis
/// `axis_px` long: the finest of the mantissa sets 1–9, 1-2-3-5, 1-2-5, 1-3, 1 that
/// fits; every k-th decade for huge ranges; plain linear ticks for ranges too narrow to
/// get three log ticks.
fn log_ticks(lo: f64, hi: f64, axis_px: u32) -> Ticks {
    let span = (hi / lo).log10().max(1e-9);
    let min_gap = 40.0 / (f64::from(axis_px.max(100)) / span); // in decades
    let e0 = (lo.log10().floor() as i32).clamp(-320, 320) - 1;
    let e1 = (hi.log10().ceil() as i32).clamp(-320, 320) + 1;
    let generate = |mantissas: &[f64], every: i32| -> Vec<f64> {
        (e0..=e1)
            .filter(|e| e.rem_euclid(every) == 0)
            .flat_map(|e| mantissas.iter().map(move |m| m * 10f64.powi(e)))
            .filter(|v| *v >= lo && *v <= hi)
            .collect()
    };
    let spaced = |t: &[f64]| t.windows(2).all(|w| (w[1] / w[0]).log10() >= min_gap);
    let all: &[f64] = &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
    let light = if span <= 8.0 {
        generate(all, 1)
    } else {
        generate(&[1.0], 1)
    };

    let sets: [&[f64]; 5] = [
        all,
        &[1.0, 2.0, 3.0, 5.0],
        &[1.0, 2.0, 5.0],
        &[1.0, 3.0],
        &[1.0],
    ];
    for set in sets {
        let t = generate(set, 1);
        if spaced(&t) {
            if t.len() >= 3 {
                return Ticks {
                    bold: t,
                    light,
                    min_decimals: 0,
                };
            }
            if set.len() == 1 {
                break;
            }
        }
    }
    if span > 1.0 {
        // Wide range: labels every k-th decade.
        let every = (min_gap.ceil() as i32).max(1);
        return Ticks {
            bold: generate(&[1.0], every),
            light,
            min_decimals: 0,
        };
    }
    // Narrow range: linear ticks at a 1-2-5 step (log ≈ linear over < 1 decade).
    let raw = (hi - lo) / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil();
    let bold: Vec<f64> = (0..20)
        .map(|i| (first + f64::from(i)) * step)
        .take_while(|v| *v <= hi)
        .collect();
    Ticks {
        bold,
        light: Vec::new(),
        min_decimals: (-step.log10().floor()).max(0.0) as usize,
    }
}

// ---------------------------------------------------------------------------------------
// Share over time
// ---------------------------------------------------------------------------------------

fn share_impl(
    path: &Path,
    title: &str,
    bucket_starts_s: &[f64],
    series: &[(String, Vec<f64>)],
) -> Res<()> {
    let pen = Pen::new()?;
    prepare_path(path)?;

    let valid_x = |x: f64| x.is_finite() && x.abs() <= MAX_ABS_S;
    let x_lo = bucket_starts_s
        .iter()
        .copied()
        .filter(|x| valid_x(*x))
        .reduce(f64::min);
    let x_hi = bucket_starts_s
        .iter()
        .copied()
        .filter(|x| valid_x(*x))
        .reduce(f64::max);

    let mut clipped = 0usize;
    let mut length_mismatch = 0usize;
    let mut with_data = 0usize;
    let mut lines = Vec::new(); // (colour, segments)
    let mut entries = Vec::new();
    for (i, (name, values)) in series.iter().enumerate() {
        if values.len() != bucket_starts_s.len() {
            length_mismatch += 1;
        }
        let mut pts: Vec<(f64, f64)> = bucket_starts_s
            .iter()
            .zip(values)
            .filter(|(x, _)| valid_x(**x))
            .map(|(x, v)| (*x, *v))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));

        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut current = Vec::new();
        let (mut sum, mut count) = (0.0, 0usize);
        let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
        for (x, v) in pts {
            if v.is_finite() {
                let c = v.clamp(0.0, 1.0);
                if (c - v).abs() > 1e-9 {
                    clipped += 1;
                }
                current.push((x, c));
                sum += v;
                count += 1;
                min = min.min(v);
                max = max.max(v);
            } else if !current.is_empty() {
                segments.push(std::mem::take(&mut current));
            }
        }
        if !current.is_empty() {
            segments.push(current);
        }
        if count > 0 {
            with_data += 1;
        }
        let colour = colour(i);
        let detail = if count > 0 {
            format!(
                "mean {:.3} · min {:.2} · max {:.2}",
                sum / count as f64,
                min,
                max
            )
        } else {
            "no data".to_string()
        };
        entries.push(LegendEntry {
            colour,
            name: clean_text(name),
            suffix: String::new(),
            detail,
        });
        lines.push((colour, segments));
    }

    let mut notes = Vec::new();
    if clipped > 0 {
        notes.push(format!("{clipped} values outside [0, 1] clipped"));
    }
    if length_mismatch > 0 {
        notes.push(format!(
            "{length_mismatch} series length ≠ {} buckets",
            bucket_starts_s.len()
        ));
    }
    let note = if series.is_empty() {
        Some("no series given")
    } else if with_data == 0 || x_lo.is_none() {
        Some("no data")
    } else {
        None
    };
    let (x0, x1) = match (x_lo, x_hi) {
        (Some(lo), Some(hi)) if hi - lo > 1e-9 * lo.abs().max(1.0) => (lo, hi),
        (Some(lo), _) => (lo - 0.5, lo + 0.5),
        _ => (0.0, 1.0),
    };

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (title_area, body) = root.split_vertically(TITLE_H);
    pen.title(&title_area, title)?;
    let (plot_area, legend) = body.split_horizontally(SIZE.0 - LEGEND_W);

    let mut chart = ChartBuilder::on(&plot_area)
        .margin(8)
        .margin_top(16)
        .margin_right(50)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, 0.0..1.0)?;
    let x_fmt = |v: &f64| fmt_num(*v, 4, 0);
    let y_fmt = |v: &f64| format!("{v:.1}");
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .y_desc("share of requests (fraction of bucket)")
        .x_labels(12)
        .y_labels(11)
        .y_max_light_lines(1)
        .x_max_light_lines(4)
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .draw()?;

    if with_data >= 2 {
        let even = 1.0 / with_data as f64;
        chart.draw_series(DashedLineSeries::new(
            vec![(x0, even), (x1, even)],
            6,
            4,
            REF_LINE.stroke_width(1),
        ))?;
        let (px, py) = chart.backend_coord(&(x1, even));
        let label = format!("1/{with_data}");
        pen.draw(
            &root,
            &label,
            (px + 5, py),
            12.0,
            DIM_TEXT,
            Align::Start,
            Align::Center,
        )?;
    }
    for (colour, segments) in &lines {
        let total: usize = segments.iter().map(Vec::len).sum();
        for seg in segments {
            if seg.len() >= 2 {
                chart.draw_series(LineSeries::new(seg.iter().copied(), colour.stroke_width(2)))?;
            }
            if total <= MARKER_MAX_POINTS || seg.len() == 1 {
                chart.draw_series(seg.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
            }
        }
    }
    if let Some(note) = note {
        pen.note(&root, &chart.plotting_area().get_pixel_range(), note)?;
    }
    pen.legend(&legend, &entries, &notes)?;
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Shared pieces: title, legend, notes, fonts, formatting
// ---------------------------------------------------------------------------------------

struct LegendEntry {
    colour: RGBColor,
    name: String,
    /// Kept whole after the (possibly truncated) name.
    suffix: String,
    detail: String,
}

/// Where a text is anchored along one axis: its start (left/top), or its centre.
#[derive(Clone, Copy)]
enum Align {
    Start,
    Center,
}

/// Text layout and rasterisation with `ab_glyph`, honouring side bearings and kerning.
struct Pen {
    font: &'static FontRef<'static>,
}

impl Pen {
    fn new() -> Res<Self> {
        Ok(Self {
            font: ensure_font()?,
        })
    }

    /// Advance width of `text` in pixels at `size` px.
    fn width(&self, text: &str, size: f32) -> f32 {
        let sf = self.font.as_scaled(PxScale::from(size));
        let mut w = 0.0;
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                w += sf.kern(p, id);
            }
            w += sf.h_advance(id);
            prev = Some(id);
        }
        w
    }

    /// Draws `text` on `area` (in its pixel coordinates), anchored at `at` per `h`/`v`.
    #[allow(clippy::too_many_arguments)]
    fn draw(
        &self,
        area: &Area,
        text: &str,
        at: (i32, i32),
        size: f32,
        colour: RGBColor,
        h: Align,
        v: Align,
    ) -> Res<()> {
        let scale = PxScale::from(size);
        let sf = self.font.as_scaled(scale);
        let mut x = at.0 as f32;
        if let Align::Center = h {
            x -= self.width(text, size) / 2.0;
        }
        let baseline = at.1 as f32
            + match v {
                Align::Start => sf.ascent(),
                Align::Center => (sf.ascent() + sf.descent()) / 2.0,
            };
        let mut pixels = Vec::new();
        let mut prev = None;
        for c in text.chars() {
            let id = sf.glyph_id(c);
            if let Some(p) = prev {
                x += sf.kern(p, id);
            }
            let glyph = id.with_scale_and_position(scale, point(x, baseline));
            if let Some(outline) = self.font.outline_glyph(glyph) {
                let b = outline.px_bounds();
                outline.draw(|gx, gy, coverage| {
                    if coverage > 0.02 {
                        let p = (b.min.x as i32 + gx as i32, b.min.y as i32 + gy as i32);
                        pixels.push((p, coverage.min(1.0)));
                    }
                });
            }
            x += sf.h_advance(id);
            prev = Some(id);
        }
        for (p, coverage) in pixels {
            area.draw_pixel(p, &colour.mix(f64::from(coverage)))?;
        }
        Ok(())
    }

    /// `text` + `suffix`, with `text` shortened (ending in "…") to fit `max_w` pixels.
    fn fit(&self, text: &str, suffix: &str, size: f32, max_w: f32) -> String {
        let whole = format!("{text}{suffix}");
        if self.width(&whole, size) <= max_w {
            return whole;
        }
        let mut chars: Vec<char> = text.chars().collect();
        while chars.pop().is_some() {
            let candidate = format!("{}…{suffix}", chars.iter().collect::<String>());
            if self.width(&candidate, size) <= max_w {
                return candidate;
            }
        }
        format!("…{suffix}")
    }

    fn title(&self, area: &Area, title: &str) -> Res<()> {
        let (w, h) = area.dim_in_pixel();
        let text = self.fit(&clean_text(title), "", 24.0, w as f32 - 20.0);
        let at = (w as i32 / 2, h as i32 / 2 + 4);
        self.draw(area, &text, at, 24.0, BLACK, Align::Center, Align::Center)
    }

    /// Draws `note` (lines split at '\n') on a white box in the upper middle of the
    /// plotting area given by its pixel ranges.
    fn note(
        &self,
        root: &Area,
        (xr, yr): &(std::ops::Range<i32>, std::ops::Range<i32>),
        note: &str,
    ) -> Res<()> {
        let (size, line_h) = (16.0, 24);
        let lines: Vec<&str> = note.lines().collect();
        let width = lines
            .iter()
            .map(|l| self.width(l, size))
            .fold(0.0, f32::max) as i32;
        let cx = (xr.start + xr.end) / 2;
        let top = yr.start + (yr.end - yr.start) / 3 - line_h * lines.len() as i32 / 2;
        let bottom = top + line_h * lines.len() as i32;
        root.draw(&Rectangle::new(
            [
                (cx - width / 2 - 10, top - 6),
                (cx + width / 2 + 10, bottom + 6),
            ],
            WHITE.filled(),
        ))?;
        for (k, line) in lines.iter().enumerate() {
            let at = (cx, top + line_h * k as i32 + line_h / 2);
            self.draw(root, line, at, size, DIM_TEXT, Align::Center, Align::Center)?;
        }
        Ok(())
    }

    /// Legend in its own column: a colour swatch, the name (+ suffix) and a grey detail
    /// line per series; one line per series when space is short, then "… and N more";
    /// notes at the bottom.
    fn legend(&self, area: &Area, entries: &[LegendEntry], notes: &[String]) -> Res<()> {
        let (w, h) = area.dim_in_pixel();
        let (w, h) = (w as i32, h as i32);
        let (name_size, detail_size) = (14.0, 12.0);
        let text_x = 46;
        let max_text_w = (w - text_x - 8) as f32;

        let top = 40;
        let notes_h = 18 * notes.len() as i32 + if notes.is_empty() { 0 } else { 10 };
        let avail = (h - top - notes_h - 8).max(0);
        let full = entries.len() as i32 * 40 <= avail;
        let row_h = if full { 40 } else { 21 };
        let max_rows = (avail / row_h).max(1) as usize;
        let shown = if entries.len() > max_rows {
            max_rows - 1
        } else {
            entries.len()
        };

        if !entries.is_empty() {
            self.draw(
                area,
                "series",
                (12, top - 26),
                14.0,
                DIM_TEXT,
                Align::Start,
                Align::Start,
            )?;
        }
        for (k, e) in entries.iter().take(shown).enumerate() {
            let y = top + k as i32 * row_h;
            area.draw(&PathElement::new(
                vec![(10, y + 9), (38, y + 9)],
                e.colour.stroke_width(3),
            ))?;
            let name = self.fit(&e.name, &e.suffix, name_size, max_text_w);
            self.draw(
                area,
                &name,
                (text_x, y + 9),
                name_size,
                BLACK,
                Align::Start,
                Align::Center,
            )?;
            if full {
                let detail = self.fit(&e.detail, "", detail_size, max_text_w);
                let at = (text_x, y + 27);
                self.draw(
                    area,
                    &detail,
                    at,
                    detail_size,
                    DIM_TEXT,
                    Align::Start,
                    Align::Center,
                )?;
            }
        }
        if shown < entries.len() {
            let y = top + shown as i32 * row_h;
            let more = format!("… and {} more", entries.len() - shown);
            self.draw(
                area,
                &more,
                (text_x, y + 9),
                detail_size,
                DIM_TEXT,
                Align::Start,
                Align::Center,
            )?;
        }
        for (k, note) in notes.iter().enumerate() {
            let y = h - notes_h + 4 + 18 * k as i32;
            let note = self.fit(note, "", detail_size, (w - 20) as f32);
            self.draw(
                area,
                &note,
                (12, y),
                detail_size,
                DIM_TEXT,
                Align::Start,
                Align::Start,
            )?;
        }
        Ok(())
    }
}

/// Printable, bounded copy of caller-supplied text.
fn clean_text(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn colour(i: usize) -> RGBColor {
    match PALETTE.get(i) {
        Some(c) => *c,
        None => {
            // Beyond the palette: hues spread by the golden ratio.
            let hue = ((i - PALETTE.len()) as f64 * 0.618_034 + 0.05).fract();
            let (r, g, b) = HSLColor(hue, 0.7, 0.42).to_backend_color().rgb;
            RGBColor(r, g, b)
        }
    }
}

/// `v` with `sig` significant digits (at least `min_decimals` decimals), trailing zeros
/// trimmed; scientific notation outside [1e-3, 1e7).
fn fmt_num(v: f64, sig: i32, min_decimals: usize) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v == 0.0 {
        return "0".to_string();
    }
    let a = v.abs();
    if !(1e-3..1e7).contains(&a) {
        let s = format!("{:.*e}", (sig - 1).max(0) as usize, v);
        return match s.split_once('e') {
            Some((mantissa, exp)) => format!("{}e{exp}", trim_zeros(mantissa)),
            None => s,
        };
    }
    let decimals = ((sig - 1) - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{:.*}", decimals.max(min_decimals).min(9), v);
    trim_zeros(&s).to_string()
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Checks the file extension (the encoder picks the format from it) and creates the
/// parent directories.
fn prepare_path(path: &Path) -> Res<()> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if !matches!(ext.as_deref(), Some("png" | "jpg" | "jpeg" | "bmp")) {
        return Err("unsupported image file name: expected a .png path".into());
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("creating directory {}: {e}", parent.display()))?;
    }
    Ok(())
}

/// Loads the text font once per process (see the module docs) and registers it with
/// plotters for the axis labels.
fn ensure_font() -> Res<&'static FontRef<'static>> {
    static LOADED: OnceLock<Result<FontRef<'static>, String>> = OnceLock::new();
    match LOADED.get_or_init(load_font) {
        Ok(font) => Ok(font),
        Err(e) => Err(e.clone().into()),
    }
}

fn load_font() -> Result<FontRef<'static>, String> {
    if let Some(p) = std::env::var_os(FONT_ENV).filter(|p| !p.is_empty()) {
        let p = Path::new(&p);
        return load_font_file(p)
            .map_err(|e| format!("{FONT_ENV}={}: cannot use font: {e}", p.display()));
    }
    let mut tried = Vec::new();
    for candidate in DEFAULT_FONTS {
        match load_font_file(Path::new(candidate)) {
            Ok(font) => return Ok(font),
            Err(e) => tried.push(format!("{candidate} ({e})")),
        }
    }
    Err(format!(
        "no font for plot text: set {FONT_ENV}=/path/to/font.ttf \
         (e.g. install fonts-dejavu-core); tried: {}",
        tried.join(", ")
    ))
}

fn load_font_file(path: &Path) -> Result<FontRef<'static>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    // Both plotters' font table and our `Pen` keep the font for the whole process, so
    // it is leaked; the result is cached, so this runs once per candidate per process.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    let font = FontRef::try_from_slice(bytes)
        .map_err(|_| "not a valid TrueType/OpenType font".to_string())?;
    register_font(FONT, FontStyle::Normal, bytes)
        .map_err(|_| "not a valid TrueType/OpenType font".to_string())?;
    Ok(font)
}
