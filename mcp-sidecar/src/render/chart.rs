//! Bar and line charts drawn as SVG text: title, axes with "nice" ticks, axis labels, legend.
//!
//! Layout is proportional to the requested size, so one spec looks the same at 400×300 and
//! at 1600×1200. All user text is XML-escaped; numbers are written with fixed precision, so
//! the same spec always gives the same bytes.

use std::fmt::Write;

use super::spec::{Chart, ChartKind, Dimensions};

/// Series colours (Tableau 10), reused in order.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Series with more points than this are drawn without point markers.
const MARKER_LIMIT: usize = 60;

/// Draws `chart` as a complete SVG document of `size`, with text in `font_family`.
pub fn chart_svg(chart: &Chart, size: Dimensions, font_family: &str) -> String {
    let width = f64::from(size.width());
    let height = f64::from(size.height());
    let unit = width.min(height);
    let font = (unit * 0.032).clamp(6.0, 28.0);
    let title_font = font * 1.35;

    // Plot area, leaving room for title, tick labels, axis labels and the legend.
    let legend_width = legend_width(chart, font, width);
    let left = font * 4.2
        + if chart.y_label.is_some() {
            font * 1.6
        } else {
            0.0
        };
    let right = width - legend_width - font;
    let top = if chart.title.is_some() {
        title_font * 2.2
    } else {
        font * 1.2
    };
    let bottom = height
        - font * 2.4
        - if chart.x_label.is_some() {
            font * 1.6
        } else {
            0.0
        };
    let plot = Rect {
        left,
        top,
        right: right.max(left + 1.0),
        bottom: bottom.max(top + 1.0),
    };

    let mut svg = String::with_capacity(4096 + 64 * total_points(chart));
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="{family}" font-size="{font:.1}">"#,
        w = size.width(),
        h = size.height(),
        family = escape(font_family),
    );
    let _ = write!(
        svg,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    );

    if let Some(title) = &chart.title {
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="{title_font:.1}" font-weight="bold" fill="#222222">{text}</text>"##,
            x = (plot.left + plot.right) / 2.0,
            y = title_font * 1.4,
            text = escape(title),
        );
    }

    let y_axis = Axis::for_values(
        chart
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|p| p.1)),
        chart.kind == ChartKind::Bar,
    );
    draw_y_axis(&mut svg, &y_axis, &plot, font);

    match chart.kind {
        ChartKind::Line => draw_lines(&mut svg, chart, &plot, &y_axis, font),
        ChartKind::Bar => draw_bars(&mut svg, chart, &plot, &y_axis, font),
    }

    // Axis lines on top of the data.
    let _ = write!(
        svg,
        r##"<path d="M{l:.1} {t:.1}V{b:.1}H{r:.1}" fill="none" stroke="#333333" stroke-width="{sw:.2}"/>"##,
        l = plot.left,
        t = plot.top,
        b = plot.bottom,
        r = plot.right,
        sw = (unit / 500.0).max(0.5),
    );

    if let Some(label) = &chart.x_label {
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#333333">{text}</text>"##,
            x = (plot.left + plot.right) / 2.0,
            y = height - font * 0.6,
            text = escape(label),
        );
    }
    if let Some(label) = &chart.y_label {
        let x = font * 1.2;
        let y = (plot.top + plot.bottom) / 2.0;
        let _ = write!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})" fill="#333333">{text}</text>"##,
            text = escape(label),
        );
    }

    draw_legend(&mut svg, chart, right + font * 0.8, plot.top, font);
    svg.push_str("</svg>");
    svg
}

struct Rect {
    left: f64,
    top: f64,
    right: f64,
    bottom: f64,
}

/// A linear axis from `min` to `max` with ticks every `step`.
struct Axis {
    min: f64,
    max: f64,
    step: f64,
}

impl Axis {
    /// An axis covering `values` with about five "nice" (1, 2, 5 × 10^n) steps. Bar charts
    /// always include zero, so bars grow from a baseline.
    fn for_values(values: impl Iterator<Item = f64>, include_zero: bool) -> Self {
        let (mut low, mut high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
        if include_zero {
            low = low.min(0.0);
            high = high.max(0.0);
        }
        if !low.is_finite() || !high.is_finite() {
            (low, high) = (0.0, 1.0);
        }
        if high - low < f64::EPSILON * high.abs().max(1.0) {
            // All values equal: give the axis some height around them.
            let pad = if low == 0.0 { 1.0 } else { low.abs() * 0.5 };
            (low, high) = (low - pad, high + pad);
            if include_zero && low < 0.0 && high > 0.0 && (low + pad) >= 0.0 {
                low = 0.0;
            }
        }
        let step = nice_step((high - low) / 5.0);
        Self {
            min: (low / step).floor() * step,
            max: (high / step).ceil() * step,
            step,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let count = ((self.max - self.min) / self.step).round() as i64;
        (0..=count.clamp(0, 100)).map(move |i| self.min + self.step * i as f64)
    }

    /// Maps `value` onto the pixel range `from..to`.
    fn scale(&self, value: f64, from: f64, to: f64) -> f64 {
        from + (value - self.min) / (self.max - self.min) * (to - from)
    }

    fn label(&self, value: f64) -> String {
        format_number(value, self.step)
    }
}

fn nice_step(rough: f64) -> f64 {
    if !rough.is_finite() || rough <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(rough.log10().floor());
    let residual = rough / magnitude;
    let nice = if residual <= 1.0 {
        1.0
    } else if residual <= 2.0 {
        2.0
    } else if residual <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// Formats a tick value with as many decimals as the step needs, and never "-0".
fn format_number(value: f64, step: f64) -> String {
    let decimals = if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()).clamp(0.0, 10.0) as usize
    };
    let magnitude = value.abs();
    if magnitude != 0.0 && !(1e-6..1e9).contains(&magnitude) {
        return format!("{value:.2e}");
    }
    let text = format!("{value:.decimals$}");
    if text
        .trim_start_matches('-')
        .chars()
        .all(|c| c == '0' || c == '.')
    {
        text.trim_start_matches('-').to_owned()
    } else {
        text
    }
}

fn draw_y_axis(svg: &mut String, axis: &Axis, plot: &Rect, font: f64) {
    for tick in axis.ticks() {
        let y = axis.scale(tick, plot.bottom, plot.top);
        let _ = write!(
            svg,
            r##"<line x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="#e5e5e5" stroke-width="1"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end" fill="#555555">{label}</text>"##,
            l = plot.left,
            r = plot.right,
            tx = plot.left - font * 0.4,
            ty = y + font * 0.35,
            label = escape(&axis.label(tick)),
        );
    }
}

fn draw_x_tick(svg: &mut String, x: f64, plot: &Rect, font: f64, label: &str) {
    let _ = write!(
        svg,
        r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{tb:.1}" stroke="#333333" stroke-width="1"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" fill="#555555">{label}</text>"##,
        b = plot.bottom,
        tb = plot.bottom + font * 0.3,
        ty = plot.bottom + font * 1.3,
        label = escape(label),
    );
}

fn draw_lines(svg: &mut String, chart: &Chart, plot: &Rect, y_axis: &Axis, font: f64) {
    let x_axis = Axis::for_values(
        chart
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|p| p.0)),
        false,
    );
    for tick in x_axis.ticks() {
        let x = x_axis.scale(tick, plot.left, plot.right);
        draw_x_tick(svg, x, plot, font, &x_axis.label(tick));
    }
    let stroke = (font / 6.0).max(1.0);
    for (index, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        let mut points = series.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{stroke:.2}" stroke-linejoin="round" points=""#
        );
        for (x, y) in &points {
            let _ = write!(
                svg,
                "{:.2},{:.2} ",
                x_axis.scale(*x, plot.left, plot.right),
                y_axis.scale(*y, plot.bottom, plot.top)
            );
        }
        svg.push_str("\"/>");
        if points.len() <= MARKER_LIMIT {
            for (x, y) in &points {
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r:.2}" fill="{colour}"/>"#,
                    cx = x_axis.scale(*x, plot.left, plot.right),
                    cy = y_axis.scale(*y, plot.bottom, plot.top),
                    r = stroke * 1.6,
                );
            }
        }
    }
}

fn draw_bars(svg: &mut String, chart: &Chart, plot: &Rect, y_axis: &Axis, font: f64) {
    // One group per distinct x value, in order; one bar per series within a group.
    let mut categories: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|series| series.points.iter().map(|p| p.0))
        .collect();
    categories.sort_by(f64::total_cmp);
    categories.dedup();
    let groups = categories.len().max(1) as f64;
    let group_width = (plot.right - plot.left) / groups;
    let bar_width = group_width * 0.8 / chart.series.len() as f64;
    let baseline = y_axis.scale(0.0f64.clamp(y_axis.min, y_axis.max), plot.bottom, plot.top);
    let label_step = category_label_step(&categories, group_width, font);

    for (group, category) in categories.iter().enumerate() {
        if group % label_step == 0 {
            let x = plot.left + group_width * (group as f64 + 0.5);
            let step = categories
                .windows(2)
                .map(|pair| pair[1] - pair[0])
                .fold(f64::INFINITY, f64::min);
            let step = if step.is_finite() { step } else { 1.0 };
            draw_x_tick(svg, x, plot, font, &format_number(*category, step.min(1.0)));
        }
    }
    for (index, series) in chart.series.iter().enumerate() {
        let colour = PALETTE[index % PALETTE.len()];
        for (x, y) in &series.points {
            let Ok(group) = categories.binary_search_by(|c| c.total_cmp(x)) else {
                continue;
            };
            let left = plot.left + group_width * (group as f64 + 0.1) + bar_width * index as f64;
            let top = y_axis.scale(*y, plot.bottom, plot.top);
            let (y0, y1) = if top < baseline {
                (top, baseline)
            } else {
                (baseline, top)
            };
            let _ = write!(
                svg,
                r#"<rect x="{left:.2}" y="{y0:.2}" width="{w:.2}" height="{h:.2}" fill="{colour}"/>"#,
                w = (bar_width * 0.95).max(0.5),
                h = (y1 - y0).max(0.5),
            );
        }
    }
}

/// Labels every n-th category so labels do not overlap.
fn category_label_step(categories: &[f64], group_width: f64, font: f64) -> usize {
    let widest = categories
        .iter()
        .map(|c| format_number(*c, 1.0).chars().count())
        .max()
        .unwrap_or(1) as f64;
    let needed = widest * font * 0.65 + font * 0.5;
    ((needed / group_width.max(0.1)).ceil() as usize).max(1)
}

fn legend_width(chart: &Chart, font: f64, width: f64) -> f64 {
    let longest = chart
        .series
        .iter()
        .map(|series| series.name.chars().count())
        .max()
        .unwrap_or(0)
        .min(30) as f64;
    (longest * font * 0.6 + font * 2.5).min(width * 0.3)
}

fn draw_legend(svg: &mut String, chart: &Chart, x: f64, top: f64, font: f64) {
    for (index, series) in chart.series.iter().enumerate() {
        let y = top + font * 1.5 * index as f64;
        let name: String = series.name.chars().take(30).collect();
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{ry:.1}" width="{s:.1}" height="{s:.1}" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" fill="#333333">{name}</text>"##,
            ry = y,
            s = font * 0.9,
            colour = PALETTE[index % PALETTE.len()],
            tx = x + font * 1.3,
            ty = y + font * 0.8,
            name = escape(&name),
        );
    }
}

fn total_points(chart: &Chart) -> usize {
    chart.series.iter().map(|series| series.points.len()).sum()
}

/// Escapes text for XML character data and attribute values; drops characters XML 1.0
/// does not allow at all (control characters other than tab, newline, carriage return, and the
/// noncharacters U+FFFE and U+FFFF; Rust strings cannot hold the surrogates XML also excludes).
pub fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            '\t' | '\n' | '\r' => escaped.push(' '),
            c if c.is_control() || matches!(c, '\u{FFFE}' | '\u{FFFF}') => {}
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::spec::Series;

    fn chart(kind: ChartKind, series: Vec<Series>) -> Chart {
        Chart {
            kind,
            title: Some("Q1 <sales> & \"costs\"".into()),
            x_label: Some("month".into()),
            y_label: Some("EUR".into()),
            series,
        }
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series {
            name: name.into(),
            points: points.to_vec(),
        }
    }

    #[test]
    fn ticks_are_nice_numbers_covering_the_data() {
        let axis = Axis::for_values([3.0, 97.0].into_iter(), false);
        assert_eq!((axis.min, axis.max, axis.step), (0.0, 100.0, 20.0));
        let axis = Axis::for_values([0.012, 0.049].into_iter(), false);
        assert_eq!(axis.step, 0.01);
        assert_eq!(axis.label(0.03), "0.03");
        let bars = Axis::for_values([5.0, 7.0].into_iter(), true);
        assert_eq!(bars.min, 0.0, "bar charts start at zero");
        let flat = Axis::for_values([4.0, 4.0].into_iter(), false);
        assert!(flat.min < 4.0 && flat.max > 4.0);
        assert_eq!(format_number(-0.0, 1.0), "0");
    }

    #[test]
    fn user_text_is_escaped_and_the_document_is_deterministic() {
        let chart = chart(
            ChartKind::Line,
            vec![series("a<b", &[(1.0, 2.0), (2.0, 3.0)])],
        );
        let size = Dimensions::new(640, 480).unwrap();
        let svg = chart_svg(&chart, size, "Test Sans");
        assert!(svg.contains("Q1 &lt;sales&gt; &amp; &quot;costs&quot;"));
        assert!(svg.contains("a&lt;b"));
        assert!(!svg.contains("<sales>"));
        assert_eq!(escape("a\u{1}b\u{FFFE}c\u{FFFF}d\u{FFFD}"), "abcd\u{FFFD}");
        assert_eq!(svg, chart_svg(&chart, size, "Test Sans"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
    }

    #[test]
    fn bars_are_grouped_by_x_with_one_bar_per_series() {
        let chart = chart(
            ChartKind::Bar,
            vec![
                series("2024", &[(1.0, 5.0), (2.0, -3.0), (3.0, 4.0)]),
                series("2025", &[(1.0, 6.0), (3.0, 2.0)]),
            ],
        );
        let svg = chart_svg(&chart, Dimensions::new(800, 600).unwrap(), "Test Sans");
        let bars = svg.matches(r#"<rect x=""#).count();
        // 5 data bars + 2 legend swatches.
        assert_eq!(bars, 5 + 2);
        assert!(svg.contains(">2024<") && svg.contains(">2025<"));
    }

    #[test]
    fn control_characters_never_reach_the_document() {
        assert_eq!(escape("a\u{0}b\u{7}c\nd"), "abc d");
    }
}
