//! Benchmark reports: a JSON file for machines and comparisons between runs,
//! and one self-contained HTML page (inline SVG, no scripts) for people.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

/// A chart in the HTML report.
#[derive(Debug, Clone)]
pub enum Chart {
    /// Lines over a numeric x axis.
    Lines {
        title: String,
        x_label: String,
        y_label: String,
        series: Vec<(String, Vec<(f64, f64)>)>,
        log_y: bool,
    },
    /// Groups of bars (e.g. p50/p95/p99 per mode), on a log scale when values span decades.
    Bars {
        title: String,
        unit: String,
        groups: Vec<(String, Vec<(String, f64)>)>,
    },
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn y_map(v: f64, lo: f64, hi: f64, log: bool, top: f64, height: f64) -> f64 {
    let (v, lo, hi) = if log {
        (v.max(lo).log10(), lo.log10(), hi.log10())
    } else {
        (v, lo, hi)
    };
    top + height - (v - lo) / (hi - lo).max(1e-12) * height
}

/// Where a chart is drawn: the canvas and, inside its margins, the plot
/// area (the right margin holds the legend). Every chart has the same.
#[derive(Debug, Clone, Copy)]
struct Frame {
    w: f64,
    h: f64,
    left: f64,
    top: f64,
    /// The plot area's width and height.
    pw: f64,
    ph: f64,
}

impl Frame {
    fn standard() -> Self {
        let (w, h, left, top, right, bottom) = (760.0, 300.0, 70.0, 30.0, 170.0, 40.0);
        Self {
            w,
            h,
            left,
            top,
            pw: w - left - right,
            ph: h - top - bottom,
        }
    }
}

/// The value range a chart's y axis spans, and whether it is logarithmic.
#[derive(Debug, Clone, Copy)]
struct YScale {
    lo: f64,
    hi: f64,
    log: bool,
}

impl YScale {
    /// The y coordinate of `v` in `frame`.
    fn y(&self, v: f64, frame: &Frame) -> f64 {
        y_map(v, self.lo, self.hi, self.log, frame.top, frame.ph)
    }
}

fn svg(chart: &Chart) -> String {
    let frame = Frame::standard();
    let Frame { w, h, .. } = frame;
    let mut out = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    match chart {
        Chart::Lines {
            title,
            x_label,
            y_label,
            series,
            log_y,
        } => {
            let (x_hi, scale) = line_scales(series, *log_y);
            title_and_box(&mut out, &frame, &esc(title));
            line_axes(&mut out, &frame, x_hi, scale, x_label, y_label);
            line_series(&mut out, &frame, x_hi, scale, series);
        }
        Chart::Bars {
            title,
            unit,
            groups,
        } => {
            let scale = bar_scale(groups);
            let title = format!(
                "{} ({}{})",
                esc(title),
                esc(unit),
                if scale.log { ", log scale" } else { "" }
            );
            title_and_box(&mut out, &frame, &title);
            bar_groups(&mut out, &frame, scale, unit, groups);
        }
    }
    out.push_str("</svg>");
    out
}

/// The chart's title (already escaped) above the plot area's outline.
fn title_and_box(out: &mut String, frame: &Frame, title: &str) {
    let Frame {
        left, top, pw, ph, ..
    } = *frame;
    let _ = write!(
        out,
        r#"<text x="{left}" y="18" font-size="13" font-weight="bold">{title}</text>"#
    );
    let _ = write!(
        out,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>"##
    );
}

/// Entry `k` of the legend in the right margin: a colour swatch and a name.
fn legend_entry(out: &mut String, frame: &Frame, k: usize, color: &str, name: &str) {
    let Frame { left, top, pw, .. } = *frame;
    let ly = top + 14.0 * k as f64 + 8.0;
    let _ = write!(
        out,
        r#"<rect x="{}" y="{}" width="10" height="10" fill="{color}"/><text x="{}" y="{}">{}</text>"#,
        left + pw + 10.0,
        ly - 8.0,
        left + pw + 24.0,
        ly + 1.0,
        esc(name)
    );
}

/// A line chart's x extent (from 0) and y scale: from 0, or on a log scale
/// from half the smallest positive value; 10 % headroom above the largest.
fn line_scales(series: &[(String, Vec<(f64, f64)>)], log_y: bool) -> (f64, YScale) {
    let points = series.iter().flat_map(|(_, p)| p.iter());
    let (mut x_hi, mut y_hi, mut y_lo) = (1e-9f64, 1e-9f64, f64::MAX);
    for (x, y) in points {
        x_hi = x_hi.max(*x);
        y_hi = y_hi.max(*y);
        if *y > 0.0 {
            y_lo = y_lo.min(*y);
        }
    }
    let y_lo = if log_y {
        (y_lo.min(y_hi) / 2.0).max(1e-3)
    } else {
        0.0
    };
    let y_hi = y_hi * 1.1;
    (
        x_hi,
        YScale {
            lo: y_lo,
            hi: y_hi,
            log: log_y,
        },
    )
}

/// A line chart's axes: five y gridlines with their values, five x values,
/// and both axis labels.
fn line_axes(
    out: &mut String,
    frame: &Frame,
    x_hi: f64,
    scale: YScale,
    x_label: &str,
    y_label: &str,
) {
    let Frame {
        h,
        left,
        top,
        pw,
        ph,
        ..
    } = *frame;
    let YScale {
        lo: y_lo,
        hi: y_hi,
        log: log_y,
    } = scale;
    for i in 0..=4 {
        let v = if log_y {
            10f64.powf(y_lo.log10() + (y_hi.log10() - y_lo.log10()) * f64::from(i) / 4.0)
        } else {
            y_lo + (y_hi - y_lo) * f64::from(i) / 4.0
        };
        let y = scale.y(v, frame);
        let _ = write!(
            out,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 4.0,
            y + 4.0,
            short(v)
        );
    }
    for i in 0..=4 {
        let v = x_hi * f64::from(i) / 4.0;
        let x = left + pw * f64::from(i) / 4.0;
        let _ = write!(
            out,
            r#"<text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 14.0,
            short(v)
        );
    }
    let _ = write!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 6.0,
        esc(x_label)
    );
    let _ = write!(
        out,
        r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
}

/// One polyline per series, each followed by its legend entry.
fn line_series(
    out: &mut String,
    frame: &Frame,
    x_hi: f64,
    scale: YScale,
    series: &[(String, Vec<(f64, f64)>)],
) {
    let Frame { left, pw, .. } = *frame;
    for (k, (name, pts)) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", left + x / x_hi * pw, scale.y(*y, frame)))
            .collect();
        let _ = write!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        legend_entry(out, frame, k, color, name);
    }
}

/// A bar chart's y scale: up to 1.5 × the largest value, logarithmic (from
/// half the smallest positive value) when the values span more than ~50×.
fn bar_scale(groups: &[(String, Vec<(String, f64)>)]) -> YScale {
    let values: Vec<f64> = groups
        .iter()
        .flat_map(|(_, b)| b.iter().map(|(_, v)| *v))
        .collect();
    let hi = values.iter().copied().fold(1e-9, f64::max) * 1.5;
    let lo = values
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(hi)
        / 2.0;
    let log = hi / lo.max(1e-9) > 50.0;
    let lo = if log { lo.max(1e-3) } else { 0.0 };
    YScale { lo, hi, log }
}

/// The bars, group by group: each bar with its value above it (and a
/// tooltip), the legend from the first group's bar names, each group's label
/// under it.
fn bar_groups(
    out: &mut String,
    frame: &Frame,
    scale: YScale,
    unit: &str,
    groups: &[(String, Vec<(String, f64)>)],
) {
    let Frame {
        left, top, pw, ph, ..
    } = *frame;
    let group_w = pw / groups.len().max(1) as f64;
    for (g, (label, bars)) in groups.iter().enumerate() {
        let bar_w = (group_w * 0.8) / bars.len().max(1) as f64;
        for (b, (name, v)) in bars.iter().enumerate() {
            let x = left + group_w * g as f64 + group_w * 0.1 + bar_w * b as f64;
            let y = scale.y(v.max(scale.lo), frame);
            let color = COLORS[b % COLORS.len()];
            let _ = write!(
                out,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{} {}: {v:.3} {}</title></rect>"#,
                bar_w - 2.0,
                top + ph - y,
                esc(label),
                esc(name),
                esc(unit)
            );
            let _ = write!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="9">{}</text>"#,
                x + bar_w / 2.0 - 1.0,
                y - 3.0,
                short(*v)
            );
            if g == 0 {
                legend_entry(out, frame, b, color, name);
            }
        }
        let _ = write!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            left + group_w * (g as f64 + 0.5),
            top + ph + 14.0,
            esc(label)
        );
    }
}

fn short(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Writes `report` as pretty JSON to `json_path` and an HTML page with `charts`
/// and `table` (rows of cells, first row the header) to `html_path`.
pub fn write(
    json_path: &Path,
    html_path: &Path,
    title: &str,
    report: &Value,
    table: &[Vec<String>],
    charts: &[Chart],
) -> std::io::Result<()> {
    for path in [json_path, html_path] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
    }
    std::fs::write(
        json_path,
        serde_json::to_string_pretty(report).expect("report serializes"),
    )?;
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{0}</title>\
         <style>body{{font:14px sans-serif;margin:2rem auto;max-width:900px}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}}td:first-child,th:first-child{{text-align:left}}th{{background:#f4f4f4}}\
         pre{{background:#f8f8f8;padding:1rem;overflow:auto;font-size:12px}}</style></head><body><h1>{0}</h1>",
        esc(title)
    );
    html.push_str("<table>");
    for (i, row) in table.iter().enumerate() {
        let cell = if i == 0 { "th" } else { "td" };
        html.push_str("<tr>");
        for c in row {
            let _ = write!(html, "<{cell}>{}</{cell}>", esc(c));
        }
        html.push_str("</tr>");
    }
    html.push_str("</table>");
    for chart in charts {
        let _ = write!(html, "<p>{}</p>", svg(chart));
    }
    let _ = write!(
        html,
        "<h2>Raw report</h2><pre>{}</pre></body></html>",
        esc(&serde_json::to_string_pretty(report).expect("report serializes"))
    );
    std::fs::write(html_path, html)
}

/// Prints `table` aligned, first row as the header.
pub fn print_table(table: &[Vec<String>]) {
    let columns = table.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            table
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (i, row) in table.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        println!("  {}", line.join("  "));
        if i == 0 {
            println!(
                "  {}",
                widths
                    .iter()
                    .map(|w| "-".repeat(*w))
                    .collect::<Vec<_>>()
                    .join("  ")
            );
        }
    }
}
