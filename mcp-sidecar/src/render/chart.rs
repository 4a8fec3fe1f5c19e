//! Charts drawn as SVG text: bar (grouped, stacked, horizontal), line, area (stacked), scatter,
//! pie and donut, over numbers, categories or time; title, axes with "nice" ticks, axis
//! labels, legend, light or dark.
//!
//! Layout is proportional to the requested size, so one spec looks the same at 400×300 and
//! at 1600×1200. All user text is XML-escaped; numbers are written with fixed precision, so
//! the same spec always gives the same bytes. A bar or line chart over numbers with no options
//! draws exactly the document it drew before the other kinds existed (the golden tests pin it).

use std::{collections::BTreeMap, f64::consts::PI, fmt::Write};

use super::{
    spec::{Chart, ChartKind, Dimensions, LegendPosition, NumberFormat, Palette, Theme, XScale},
    time,
};

/// Series colours (Tableau 10, also Vega-Lite's default), reused in order.
const PALETTE: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];

/// Okabe–Ito: distinguishable with protanopia, deuteranopia and tritanopia. Its black is grey
/// here, so it also reads on the dark theme.
const COLORBLIND_PALETTE: [&str; 8] = [
    "#0072b2", "#e69f00", "#009e73", "#d55e00", "#56b4e9", "#cc79a7", "#f0e442", "#888888",
];

/// Series with more points than this are drawn without point markers.
const MARKER_LIMIT: usize = 60;
/// Longest category label drawn, in characters (longer ones end in "…").
const CATEGORY_LABEL_CHARS: usize = 24;
/// Most rows a legend above or below the plot takes.
const MAX_LEGEND_ROWS: usize = 3;

/// The colours of one theme.
struct Look {
    background: &'static str,
    title: &'static str,
    text: &'static str,
    muted: &'static str,
    grid: &'static str,
    axis: &'static str,
    colours: &'static [&'static str],
}

impl Look {
    fn of(chart: &Chart) -> Self {
        let colours: &'static [&'static str] = match chart.style.palette {
            Palette::Default => &PALETTE,
            Palette::Colorblind => &COLORBLIND_PALETTE,
        };
        match chart.style.theme {
            Theme::Light => Self {
                background: "#ffffff",
                title: "#222222",
                text: "#333333",
                muted: "#555555",
                grid: "#e5e5e5",
                axis: "#333333",
                colours,
            },
            Theme::Dark => Self {
                background: "#1b1e23",
                title: "#f2f2f2",
                text: "#dddddd",
                muted: "#b4b8bd",
                grid: "#363b42",
                axis: "#9aa0a6",
                colours,
            },
        }
    }

    fn colour(&self, index: usize) -> &'static str {
        self.colours[index % self.colours.len()]
    }
}

/// Sizes every part of the drawing derives from.
struct Metrics {
    unit: f64,
    font: f64,
}

/// Draws `chart` as a complete SVG document of `size`, with text in `font_family`.
pub fn chart_svg(chart: &Chart, size: Dimensions, font_family: &str) -> String {
    let look = Look::of(chart);
    let width = f64::from(size.width());
    let height = f64::from(size.height());
    let unit = width.min(height);
    let font = (unit * 0.032).clamp(6.0, 28.0);
    let title_font = font * 1.35;
    let metrics = Metrics { unit, font };
    let circular = chart.kind.is_circular();
    let horizontal = chart.kind == ChartKind::Bar && chart.style.horizontal;
    let entries = legend_entries(chart);
    let (bottom_axis_label, left_axis_label) = if horizontal {
        (&chart.y_label, &chart.x_label)
    } else {
        (&chart.x_label, &chart.y_label)
    };

    // Plot area, leaving room for title, tick labels, axis labels and the legend.
    let legend = chart.style.legend;
    let legend_width = if legend == LegendPosition::Right {
        legend_width(&entries, font, width)
    } else {
        0.0
    };
    let legend_rows = match legend {
        LegendPosition::Top | LegendPosition::Bottom => {
            legend_rows(&entries, font, width - 2.0 * font)
        }
        _ => Vec::new(),
    };
    #[allow(clippy::cast_precision_loss)]
    let legend_band = legend_rows.len() as f64 * font * 1.5;
    let axis_label_room = |label: &Option<String>| if label.is_some() { font * 1.6 } else { 0.0 };
    let left = if circular {
        font
    } else if horizontal {
        category_labels_width(chart, font, width) + font * 0.8 + axis_label_room(left_axis_label)
    } else if chart.style.y_format != NumberFormat::Auto {
        let widest = value_axis(chart)
            .ticks()
            .map(|tick| {
                format_value(tick, 1.0, chart.style.y_format)
                    .chars()
                    .count()
            })
            .max()
            .unwrap_or(4);
        #[allow(clippy::cast_precision_loss)]
        let needed = widest as f64 * font * 0.62 + font * 0.8;
        needed.max(font * 4.2) + axis_label_room(left_axis_label)
    } else {
        font * 4.2 + axis_label_room(left_axis_label)
    };
    let right = width - legend_width - font;
    let mut top = if chart.title.is_some() {
        title_font * 2.2
    } else {
        font * 1.2
    };
    if legend == LegendPosition::Top {
        top += legend_band;
    }
    let mut bottom = if circular {
        height - font
    } else {
        height - font * 2.4 - axis_label_room(bottom_axis_label)
    };
    if legend == LegendPosition::Bottom {
        bottom -= legend_band;
    }
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
        r#"<rect width="100%" height="100%" fill="{}"/>"#,
        look.background
    );

    if let Some(title) = &chart.title {
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" font-size="{title_font:.1}" font-weight="bold" fill="{fill}">{text}</text>"#,
            x = (plot.left + plot.right) / 2.0,
            y = title_font * 1.4,
            fill = look.title,
            text = escape(title),
        );
    }

    if circular {
        draw_pie(&mut svg, chart, &plot, &metrics, &look);
    } else {
        let value_axis = value_axis(chart);
        // A fixed y range may cut data off: clip it to the plot.
        let clipped = chart.style.y_min.is_some() || chart.style.y_max.is_some();
        if horizontal {
            draw_value_ticks_along_x(
                &mut svg,
                &value_axis,
                &plot,
                font,
                &look,
                chart.style.y_format,
            );
        } else {
            draw_y_axis(
                &mut svg,
                &value_axis,
                &plot,
                font,
                &look,
                chart.style.y_format,
            );
        }
        if clipped {
            let _ = write!(
                svg,
                r#"<clipPath id="plot"><rect x="{l:.1}" y="{t:.1}" width="{w:.1}" height="{h:.1}"/></clipPath><g clip-path="url(#plot)">"#,
                l = plot.left,
                t = plot.top,
                w = plot.right - plot.left,
                h = plot.bottom - plot.top,
            );
        }
        match chart.kind {
            ChartKind::Bar if horizontal => {
                draw_horizontal_bars(&mut svg, chart, &plot, &value_axis, font, &look);
            }
            ChartKind::Bar => draw_bars(&mut svg, chart, &plot, &value_axis, font, &look),
            _ => draw_xy(&mut svg, chart, &plot, &value_axis, font, &look),
        }
        if clipped {
            svg.push_str("</g>");
        }

        // Axis lines on top of the data.
        let _ = write!(
            svg,
            r#"<path d="M{l:.1} {t:.1}V{b:.1}H{r:.1}" fill="none" stroke="{stroke}" stroke-width="{sw:.2}"/>"#,
            l = plot.left,
            t = plot.top,
            b = plot.bottom,
            r = plot.right,
            stroke = look.axis,
            sw = (unit / 500.0).max(0.5),
        );

        if let Some(label) = bottom_axis_label {
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="{fill}">{text}</text>"#,
                x = (plot.left + plot.right) / 2.0,
                y = if legend == LegendPosition::Bottom {
                    height - legend_band - font * 0.6
                } else {
                    height - font * 0.6
                },
                fill = look.text,
                text = escape(label),
            );
        }
        if let Some(label) = left_axis_label {
            let x = font * 1.2;
            let y = (plot.top + plot.bottom) / 2.0;
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" transform="rotate(-90 {x:.1} {y:.1})" fill="{fill}">{text}</text>"#,
                fill = look.text,
                text = escape(label),
            );
        }
    }

    match legend {
        LegendPosition::Right => {
            draw_legend(
                &mut svg,
                &entries,
                right + font * 0.8,
                plot.top,
                font,
                &look,
            );
        }
        LegendPosition::Top => {
            let y = plot.top - legend_band - font * 0.3;
            draw_legend_rows(&mut svg, &legend_rows, font, y, &look);
        }
        LegendPosition::Bottom => {
            let y = height - legend_band - font * 0.2;
            draw_legend_rows(&mut svg, &legend_rows, font, y, &look);
        }
        LegendPosition::None => {}
    }
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
    /// The ends were given (y_min/y_max), so they need not fall on a tick.
    fixed: bool,
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
            fixed: false,
        }
    }

    /// This axis with the ends the chart fixes (either may be left to the data).
    fn with_range(self, min: Option<f64>, max: Option<f64>) -> Self {
        if min.is_none() && max.is_none() {
            return self;
        }
        let low = min.unwrap_or(self.min);
        let mut high = max.unwrap_or(self.max);
        if high <= low {
            high = low + self.step;
        }
        let low = if low >= high { high - self.step } else { low };
        Self {
            min: low,
            max: high,
            step: nice_step((high - low) / 5.0),
            fixed: true,
        }
    }

    fn ticks(&self) -> impl Iterator<Item = f64> + '_ {
        let (first, count) = if self.fixed {
            let first = (self.min / self.step - 1e-9).ceil();
            let last = (self.max / self.step + 1e-9).floor();
            (first * self.step, (last - first).round() as i64)
        } else {
            (self.min, ((self.max - self.min) / self.step).round() as i64)
        };
        (0..=count.clamp(0, 100)).map(move |i| first + self.step * i as f64)
    }

    /// Maps `value` onto the pixel range `from..to`.
    fn scale(&self, value: f64, from: f64, to: f64) -> f64 {
        from + (value - self.min) / (self.max - self.min) * (to - from)
    }

    fn label(&self, value: f64, format: NumberFormat) -> String {
        format_value(value, self.step, format)
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

/// Formats a value on an axis whose ticks are `step` apart, in `format`.
fn format_value(value: f64, step: f64, format: NumberFormat) -> String {
    match format {
        NumberFormat::Auto => format_number(value, step),
        NumberFormat::Thousands if value.abs() < 1e15 => {
            let decimals = if step >= 1.0 {
                0
            } else {
                (-step.log10().floor()).clamp(0.0, 10.0) as usize
            };
            group_thousands(&format_number_fixed(value, decimals))
        }
        NumberFormat::Thousands => format_number(value, step),
        NumberFormat::Percent => format!("{}%", format_number(value * 100.0, step * 100.0)),
        NumberFormat::Compact => {
            let magnitude = value.abs().max(step.abs());
            let (divisor, suffix) = if magnitude >= 1e12 {
                (1e12, "T")
            } else if magnitude >= 1e9 {
                (1e9, "B")
            } else if magnitude >= 1e6 {
                (1e6, "M")
            } else if magnitude >= 1e3 {
                (1e3, "k")
            } else {
                (1.0, "")
            };
            let text = format_number(value / divisor, step / divisor);
            if text == "0" {
                text
            } else {
                format!("{text}{suffix}")
            }
        }
    }
}

/// `value` with `decimals` decimals and never "-0".
fn format_number_fixed(value: f64, decimals: usize) -> String {
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

/// "1234567.5" → "1,234,567.5".
fn group_thousands(text: &str) -> String {
    let (sign, digits) = match text.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", text),
    };
    let (integer, fraction) = match digits.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (digits, None),
    };
    let mut grouped = String::with_capacity(text.len() + integer.len() / 3);
    grouped.push_str(sign);
    for (index, digit) in integer.chars().enumerate() {
        if index > 0 && (integer.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if let Some(fraction) = fraction {
        grouped.push('.');
        grouped.push_str(fraction);
    }
    grouped
}

/// The value axis: the data (stacked totals for stacked charts), zero for bars and areas, and
/// the chart's fixed range.
fn value_axis(chart: &Chart) -> Axis {
    let include_zero = matches!(chart.kind, ChartKind::Bar | ChartKind::Area);
    let axis = if chart.style.stacked {
        let mut sums: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for series in &chart.series {
            for (x, y) in &series.points {
                let entry = sums.entry(x.to_bits()).or_insert((0.0, 0.0));
                if *y >= 0.0 {
                    entry.0 += y;
                } else {
                    entry.1 += y;
                }
            }
        }
        Axis::for_values(sums.values().flat_map(|(up, down)| [*up, *down]), true)
    } else {
        Axis::for_values(
            chart
                .series
                .iter()
                .flat_map(|series| series.points.iter().map(|p| p.1)),
            include_zero,
        )
    };
    axis.with_range(chart.style.y_min, chart.style.y_max)
}

fn draw_y_axis(
    svg: &mut String,
    axis: &Axis,
    plot: &Rect,
    font: f64,
    look: &Look,
    format: NumberFormat,
) {
    for tick in axis.ticks() {
        let y = axis.scale(tick, plot.bottom, plot.top);
        let _ = write!(
            svg,
            r#"<line x1="{l:.1}" y1="{y:.1}" x2="{r:.1}" y2="{y:.1}" stroke="{grid}" stroke-width="1"/><text x="{tx:.1}" y="{ty:.1}" text-anchor="end" fill="{fill}">{label}</text>"#,
            l = plot.left,
            r = plot.right,
            grid = look.grid,
            tx = plot.left - font * 0.4,
            ty = y + font * 0.35,
            fill = look.muted,
            label = escape(&axis.label(tick, format)),
        );
    }
}

/// The value axis of horizontal bars: vertical grid lines, labels under the plot.
fn draw_value_ticks_along_x(
    svg: &mut String,
    axis: &Axis,
    plot: &Rect,
    font: f64,
    look: &Look,
    format: NumberFormat,
) {
    for tick in axis.ticks() {
        let x = axis.scale(tick, plot.left, plot.right);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{t:.1}" x2="{x:.1}" y2="{b:.1}" stroke="{grid}" stroke-width="1"/>"#,
            t = plot.top,
            b = plot.bottom,
            grid = look.grid,
        );
        draw_x_tick(svg, x, plot, font, &axis.label(tick, format), look);
    }
}

fn draw_x_tick(svg: &mut String, x: f64, plot: &Rect, font: f64, label: &str, look: &Look) {
    let _ = write!(
        svg,
        r#"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{tb:.1}" stroke="{axis}" stroke-width="1"/><text x="{x:.1}" y="{ty:.1}" text-anchor="middle" fill="{fill}">{label}</text>"#,
        b = plot.bottom,
        tb = plot.bottom + font * 0.3,
        axis = look.axis,
        ty = plot.bottom + font * 1.3,
        fill = look.muted,
        label = escape(label),
    );
}

/// Where x values go across the plot, for lines, areas and points.
enum XPlacement {
    Linear(Axis),
    Time { min: f64, max: f64 },
    Band { count: usize },
}

impl XPlacement {
    fn for_chart(chart: &Chart) -> Self {
        let xs = || {
            chart
                .series
                .iter()
                .flat_map(|series| series.points.iter().map(|p| p.0))
        };
        match &chart.x_scale {
            XScale::Number => Self::Linear(Axis::for_values(xs(), false)),
            XScale::Time { .. } => {
                let (min, max) = xs().fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
                    (l.min(v), h.max(v))
                });
                if max - min < 1.0 {
                    // One moment: show the day around it.
                    let half_day = 12.0 * 3600.0 * 1000.0;
                    Self::Time {
                        min: min - half_day,
                        max: max + half_day,
                    }
                } else {
                    Self::Time { min, max }
                }
            }
            XScale::Category(labels) => Self::Band {
                count: labels.len().max(1),
            },
        }
    }

    fn place(&self, x: f64, plot: &Rect) -> f64 {
        match self {
            Self::Linear(axis) => axis.scale(x, plot.left, plot.right),
            Self::Time { min, max } => {
                plot.left + (x - min) / (max - min) * (plot.right - plot.left)
            }
            #[allow(clippy::cast_precision_loss)]
            Self::Band { count } => {
                plot.left + (plot.right - plot.left) * (x + 0.5) / *count as f64
            }
        }
    }

    fn draw_ticks(&self, svg: &mut String, chart: &Chart, plot: &Rect, font: f64, look: &Look) {
        match self {
            Self::Linear(axis) => {
                for tick in axis.ticks() {
                    let x = axis.scale(tick, plot.left, plot.right);
                    draw_x_tick(
                        svg,
                        x,
                        plot,
                        font,
                        &axis.label(tick, NumberFormat::Auto),
                        look,
                    );
                }
            }
            Self::Time { min, max } => {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let most = ((plot.right - plot.left) / (font * 5.0)).clamp(2.0, 8.0) as usize;
                let step = time::step_for(*min, *max, most);
                for tick in time::ticks(*min, *max, step) {
                    #[allow(clippy::cast_precision_loss)]
                    let x = self.place(tick as f64, plot);
                    draw_x_tick(svg, x, plot, font, &step.label(tick), look);
                }
            }
            Self::Band { count } => {
                let labels = category_labels(chart);
                #[allow(clippy::cast_precision_loss)]
                let band = (plot.right - plot.left) / *count as f64;
                let step = label_step(&labels, band, font);
                for (index, label) in labels.iter().enumerate() {
                    if index % step == 0 {
                        #[allow(clippy::cast_precision_loss)]
                        let x = self.place(index as f64, plot);
                        draw_x_tick(svg, x, plot, font, label, look);
                    }
                }
            }
        }
    }
}

/// Lines, areas and points.
fn draw_xy(svg: &mut String, chart: &Chart, plot: &Rect, y_axis: &Axis, font: f64, look: &Look) {
    let placement = XPlacement::for_chart(chart);
    placement.draw_ticks(svg, chart, plot, font, look);
    let stroke = (font / 6.0).max(1.0);
    let baseline = y_axis.scale(0.0f64.clamp(y_axis.min, y_axis.max), plot.bottom, plot.top);
    if chart.kind == ChartKind::Area && chart.style.stacked {
        draw_stacked_areas(svg, chart, plot, y_axis, &placement, stroke, look);
        return;
    }
    for (index, series) in chart.series.iter().enumerate() {
        let colour = look.colour(index);
        let mut points = series.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let at = |(x, y): &(f64, f64)| {
            (
                placement.place(*x, plot),
                y_axis.scale(*y, plot.bottom, plot.top),
            )
        };
        if chart.kind == ChartKind::Scatter {
            for point in &points {
                let (cx, cy) = at(point);
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r:.2}" fill="{colour}" fill-opacity="0.8"/>"#,
                    r = stroke * 2.0,
                );
            }
            continue;
        }
        if chart.kind == ChartKind::Area {
            let _ = write!(svg, r#"<path fill="{colour}" fill-opacity="0.3" d=""#);
            if let (Some(first), Some(last)) = (points.first(), points.last()) {
                let _ = write!(svg, "M{:.2} {baseline:.2}", at(first).0);
                for point in &points {
                    let (x, y) = at(point);
                    let _ = write!(svg, "L{x:.2} {y:.2}");
                }
                let _ = write!(svg, "L{:.2} {baseline:.2}Z", at(last).0);
            }
            svg.push_str("\"/>");
        }
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{stroke:.2}" stroke-linejoin="round" points=""#
        );
        for point in &points {
            let (x, y) = at(point);
            let _ = write!(svg, "{x:.2},{y:.2} ");
        }
        svg.push_str("\"/>");
        if chart.kind == ChartKind::Line && points.len() <= MARKER_LIMIT {
            for point in &points {
                let (cx, cy) = at(point);
                let _ = write!(
                    svg,
                    r#"<circle cx="{cx:.2}" cy="{cy:.2}" r="{r:.2}" fill="{colour}"/>"#,
                    r = stroke * 1.6,
                );
            }
        }
    }
}

/// Areas stacked on each other at every x any series has (a series missing an x adds 0 there).
fn draw_stacked_areas(
    svg: &mut String,
    chart: &Chart,
    plot: &Rect,
    y_axis: &Axis,
    placement: &XPlacement,
    stroke: f64,
    look: &Look,
) {
    let mut xs: Vec<f64> = chart
        .series
        .iter()
        .flat_map(|series| series.points.iter().map(|p| p.0))
        .collect();
    xs.sort_by(f64::total_cmp);
    xs.dedup();
    let mut lower = vec![0.0; xs.len()];
    for (index, series) in chart.series.iter().enumerate() {
        let mut values = vec![0.0; xs.len()];
        for (x, y) in &series.points {
            if let Ok(at) = xs.binary_search_by(|c| c.total_cmp(x)) {
                values[at] += y;
            }
        }
        let upper: Vec<f64> = lower.iter().zip(&values).map(|(l, v)| l + v).collect();
        let colour = look.colour(index);
        let _ = write!(svg, r#"<path fill="{colour}" fill-opacity="0.85" d=""#);
        for (at, (x, y)) in xs.iter().zip(&upper).enumerate() {
            let command = if at == 0 { 'M' } else { 'L' };
            let _ = write!(
                svg,
                "{command}{:.2} {:.2}",
                placement.place(*x, plot),
                y_axis.scale(*y, plot.bottom, plot.top)
            );
        }
        for (x, y) in xs.iter().zip(&lower).rev() {
            let _ = write!(
                svg,
                "L{:.2} {:.2}",
                placement.place(*x, plot),
                y_axis.scale(*y, plot.bottom, plot.top)
            );
        }
        svg.push_str("Z\"/>");
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="{w:.2}" stroke-linejoin="round" points=""#,
            w = stroke * 0.6,
        );
        for (x, y) in xs.iter().zip(&upper) {
            let _ = write!(
                svg,
                "{:.2},{:.2} ",
                placement.place(*x, plot),
                y_axis.scale(*y, plot.bottom, plot.top)
            );
        }
        svg.push_str("\"/>");
        lower = upper;
    }
}

/// The groups bars are drawn in (x values, in order) and their labels.
struct BarGroups {
    xs: Vec<f64>,
    labels: Vec<String>,
    /// The longest label, in characters, for spacing labels apart.
    widest: usize,
}

impl BarGroups {
    fn for_chart(chart: &Chart) -> Self {
        if let XScale::Category(_) = chart.x_scale {
            let labels = category_labels(chart);
            #[allow(clippy::cast_precision_loss)]
            let xs = (0..labels.len()).map(|i| i as f64).collect();
            let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
            return Self { xs, labels, widest };
        }
        // One group per distinct x value, in order.
        let mut xs: Vec<f64> = chart
            .series
            .iter()
            .flat_map(|series| series.points.iter().map(|p| p.0))
            .collect();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        let (labels, widest) = if let XScale::Time { .. } = chart.x_scale {
            let step = time::step_of_spacing(&xs);
            #[allow(clippy::cast_possible_truncation)]
            let labels: Vec<String> = xs.iter().map(|x| step.label(*x as i64)).collect();
            let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
            (labels, widest)
        } else {
            let step = xs
                .windows(2)
                .map(|pair| pair[1] - pair[0])
                .fold(f64::INFINITY, f64::min);
            let step = if step.is_finite() { step } else { 1.0 };
            let labels = xs
                .iter()
                .map(|x| format_number(*x, step.min(1.0)))
                .collect();
            let widest = xs
                .iter()
                .map(|c| format_number(*c, 1.0).chars().count())
                .max()
                .unwrap_or(1);
            (labels, widest)
        };
        Self { xs, labels, widest }
    }

    /// The group of `x`.
    fn position(&self, chart: &Chart, x: f64) -> Option<usize> {
        match chart.x_scale {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            XScale::Category(_) => Some(x as usize).filter(|at| *at < self.xs.len()),
            _ => self.xs.binary_search_by(|c| c.total_cmp(&x)).ok(),
        }
    }

    /// Labels every n-th group so labels do not overlap.
    fn label_step(&self, group_width: f64, font: f64) -> usize {
        #[allow(clippy::cast_precision_loss)]
        let needed = self.widest as f64 * font * 0.65 + font * 0.5;
        ((needed / group_width.max(0.1)).ceil() as usize).max(1)
    }
}

/// Where each bar of each group goes along the group, and from which value it starts: side by
/// side for grouped bars, one on another for stacked ones.
struct BarSlots {
    /// Per series, per point (None when off the chart).
    slots: Vec<Vec<Option<BarSlot>>>,
}

/// Offset of a bar within its group and its width, as shares of the group, and the values it
/// spans.
type BarSlot = (f64, f64, f64, f64);

impl BarSlots {
    /// For each series and point: (offset share, width share, from value, to value).
    fn for_chart(chart: &Chart, groups: &BarGroups) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let count = chart.series.len() as f64;
        let mut up = vec![0.0; groups.xs.len()];
        let mut down = vec![0.0; groups.xs.len()];
        let slots = chart
            .series
            .iter()
            .enumerate()
            .map(|(index, series)| {
                series
                    .points
                    .iter()
                    .map(|(x, y)| {
                        let group = groups.position(chart, *x)?;
                        if chart.style.stacked {
                            let stack = if *y >= 0.0 { &mut up } else { &mut down };
                            let from = stack[group];
                            stack[group] += y;
                            Some((0.1, 0.8, from, stack[group]))
                        } else {
                            #[allow(clippy::cast_precision_loss)]
                            let offset = 0.1 + 0.8 / count * index as f64;
                            Some((offset, 0.8 / count, 0.0, *y))
                        }
                    })
                    .collect()
            })
            .collect();
        Self { slots }
    }
}

fn draw_bars(svg: &mut String, chart: &Chart, plot: &Rect, y_axis: &Axis, font: f64, look: &Look) {
    let groups = BarGroups::for_chart(chart);
    #[allow(clippy::cast_precision_loss)]
    let group_count = groups.xs.len().max(1) as f64;
    let group_width = (plot.right - plot.left) / group_count;
    let label_step = groups.label_step(group_width, font);
    for (group, label) in groups.labels.iter().enumerate() {
        if group % label_step == 0 {
            #[allow(clippy::cast_precision_loss)]
            let x = plot.left + group_width * (group as f64 + 0.5);
            draw_x_tick(svg, x, plot, font, label, look);
        }
    }
    let slots = BarSlots::for_chart(chart, &groups);
    let base =
        |value: f64| y_axis.scale(value.clamp(y_axis.min, y_axis.max), plot.bottom, plot.top);
    for (index, series) in chart.series.iter().enumerate() {
        let colour = look.colour(index);
        for ((x, _), slot) in series.points.iter().zip(&slots.slots[index]) {
            let (Some(group), Some((offset, share, from, to))) = (groups.position(chart, *x), slot)
            else {
                continue;
            };
            #[allow(clippy::cast_precision_loss)]
            let left = plot.left + group_width * (group as f64 + offset);
            let bar_width = group_width * share;
            let baseline = base(*from);
            let top = y_axis.scale(*to, plot.bottom, plot.top);
            let (y0, y1) = if top < baseline {
                (top, baseline)
            } else {
                (baseline, top)
            };
            let width = if chart.style.stacked {
                bar_width
            } else {
                bar_width * 0.95
            };
            let _ = write!(
                svg,
                r#"<rect x="{left:.2}" y="{y0:.2}" width="{w:.2}" height="{h:.2}" fill="{colour}"/>"#,
                w = width.max(0.5),
                h = (y1 - y0).max(if chart.style.stacked { 0.0 } else { 0.5 }),
            );
        }
    }
}

fn draw_horizontal_bars(
    svg: &mut String,
    chart: &Chart,
    plot: &Rect,
    value_axis: &Axis,
    font: f64,
    look: &Look,
) {
    let groups = BarGroups::for_chart(chart);
    #[allow(clippy::cast_precision_loss)]
    let group_height = (plot.bottom - plot.top) / groups.xs.len().max(1) as f64;
    let label_step = ((font * 1.2 / group_height.max(0.1)).ceil() as usize).max(1);
    for (group, label) in groups.labels.iter().enumerate() {
        if group % label_step == 0 {
            #[allow(clippy::cast_precision_loss)]
            let y = plot.top + group_height * (group as f64 + 0.5);
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{y:.1}" text-anchor="end" fill="{fill}">{label}</text>"#,
                x = plot.left - font * 0.4,
                y = y + font * 0.35,
                fill = look.muted,
                label = escape(&truncate(label, CATEGORY_LABEL_CHARS)),
            );
        }
    }
    let slots = BarSlots::for_chart(chart, &groups);
    let scale = |value: f64| {
        value_axis.scale(
            value.clamp(value_axis.min, value_axis.max),
            plot.left,
            plot.right,
        )
    };
    for (index, series) in chart.series.iter().enumerate() {
        let colour = look.colour(index);
        for ((x, _), slot) in series.points.iter().zip(&slots.slots[index]) {
            let (Some(group), Some((offset, share, from, to))) = (groups.position(chart, *x), slot)
            else {
                continue;
            };
            #[allow(clippy::cast_precision_loss)]
            let top = plot.top + group_height * (group as f64 + offset);
            let (x0, x1) = {
                let (a, b) = (scale(*from), scale(*to));
                if a < b { (a, b) } else { (b, a) }
            };
            let thickness = group_height * share * if chart.style.stacked { 1.0 } else { 0.95 };
            let _ = write!(
                svg,
                r#"<rect x="{x0:.2}" y="{top:.2}" width="{w:.2}" height="{h:.2}" fill="{colour}"/>"#,
                w = (x1 - x0).max(if chart.style.stacked { 0.0 } else { 0.5 }),
                h = thickness.max(0.5),
            );
        }
    }
}

/// Pie and donut: slices clockwise from 12 o'clock, in category order, with their share
/// written on slices big enough to hold it.
fn draw_pie(svg: &mut String, chart: &Chart, plot: &Rect, metrics: &Metrics, look: &Look) {
    let labels = category_labels(chart);
    let mut values = vec![0.0; labels.len()];
    for series in &chart.series {
        for (x, y) in &series.points {
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            if let Some(value) = values.get_mut(*x as usize) {
                *value += y;
            }
        }
    }
    let total: f64 = values.iter().sum();
    if total <= 0.0 {
        return;
    }
    let font = metrics.font;
    let cx = (plot.left + plot.right) / 2.0;
    let cy = (plot.top + plot.bottom) / 2.0;
    let radius = ((plot.right - plot.left).min(plot.bottom - plot.top) / 2.0 * 0.92).max(1.0);
    let inner = if chart.kind == ChartKind::Donut {
        radius * 0.55
    } else {
        0.0
    };
    let point = |angle: f64, r: f64| (cx + r * angle.cos(), cy + r * angle.sin());
    let separator = (metrics.unit / 300.0).max(1.0);
    let mut angle = -PI / 2.0;
    let mut texts = String::new();
    for (index, value) in values.iter().enumerate() {
        if *value <= 0.0 {
            continue;
        }
        let share = value / total;
        let sweep = share * 2.0 * PI;
        let end = angle + sweep;
        let colour = look.colour(index);
        let large = u8::from(sweep > PI);
        let path = if share > 0.9999 {
            // A whole circle cannot be one arc: two halves (and the hole, drawn even-odd).
            let mut path = format!(
                "M{:.2} {:.2}A{radius:.2} {radius:.2} 0 1 1 {:.2} {:.2}A{radius:.2} {radius:.2} 0 1 1 {:.2} {:.2}Z",
                cx,
                cy - radius,
                cx,
                cy + radius,
                cx,
                cy - radius
            );
            if inner > 0.0 {
                let _ = write!(
                    path,
                    "M{:.2} {:.2}A{inner:.2} {inner:.2} 0 1 0 {:.2} {:.2}A{inner:.2} {inner:.2} 0 1 0 {:.2} {:.2}Z",
                    cx,
                    cy - inner,
                    cx,
                    cy + inner,
                    cx,
                    cy - inner
                );
            }
            path
        } else {
            let (x0, y0) = point(angle, radius);
            let (x1, y1) = point(end, radius);
            if inner > 0.0 {
                let (ix1, iy1) = point(end, inner);
                let (ix0, iy0) = point(angle, inner);
                format!(
                    "M{x0:.2} {y0:.2}A{radius:.2} {radius:.2} 0 {large} 1 {x1:.2} {y1:.2}L{ix1:.2} {iy1:.2}A{inner:.2} {inner:.2} 0 {large} 0 {ix0:.2} {iy0:.2}Z"
                )
            } else {
                format!(
                    "M{cx:.2} {cy:.2}L{x0:.2} {y0:.2}A{radius:.2} {radius:.2} 0 {large} 1 {x1:.2} {y1:.2}Z"
                )
            }
        };
        let _ = write!(
            svg,
            r#"<path d="{path}" fill="{colour}" fill-rule="evenodd" stroke="{background}" stroke-width="{separator:.2}"/>"#,
            background = look.background,
        );
        // The share, where the slice has room for it.
        if sweep * radius * 0.7 > font * 3.0 {
            let middle = angle + sweep / 2.0;
            let at = if inner > 0.0 {
                (radius + inner) / 2.0
            } else {
                radius * 0.64
            };
            let (tx, ty) = point(middle, at);
            let percent = share * 100.0;
            let text = if percent >= 10.0 {
                format!("{percent:.0}%")
            } else {
                format!("{percent:.1}%")
            };
            let _ = write!(
                texts,
                r#"<text x="{tx:.1}" y="{y:.1}" text-anchor="middle" font-weight="bold" fill="{fill}">{text}</text>"#,
                y = ty + font * 0.35,
                fill = readable_on(colour),
            );
        }
        angle = end;
    }
    svg.push_str(&texts);
}

/// Dark text on light colours, white on dark ones (by relative luminance).
fn readable_on(colour: &str) -> &'static str {
    let channel = |at: usize| {
        colour
            .get(at..at + 2)
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .map_or(0.0, |v| f64::from(v) / 255.0)
    };
    let luminance = 0.2126 * channel(1) + 0.7152 * channel(3) + 0.0722 * channel(5);
    if luminance > 0.55 {
        "#222222"
    } else {
        "#ffffff"
    }
}

/// The labels of a category chart, as drawn (long ones shortened).
fn category_labels(chart: &Chart) -> Vec<String> {
    match &chart.x_scale {
        XScale::Category(labels) => labels
            .iter()
            .map(|label| truncate(label, CATEGORY_LABEL_CHARS))
            .collect(),
        _ => Vec::new(),
    }
}

/// Labels every n-th of `labels`, `band` pixels apart, so that they do not overlap.
fn label_step(labels: &[String], band: f64, font: f64) -> usize {
    let widest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1);
    #[allow(clippy::cast_precision_loss)]
    let needed = widest as f64 * font * 0.65 + font * 0.5;
    ((needed / band.max(0.1)).ceil() as usize).max(1)
}

/// Room for the category labels left of horizontal bars.
fn category_labels_width(chart: &Chart, font: f64, width: f64) -> f64 {
    let groups = BarGroups::for_chart(chart);
    let widest = groups
        .labels
        .iter()
        .map(|label| truncate(label, CATEGORY_LABEL_CHARS).chars().count())
        .max()
        .unwrap_or(1);
    #[allow(clippy::cast_precision_loss)]
    (widest as f64 * font * 0.62).min(width * 0.35)
}

/// `text` cut to `most` characters, with "…" when cut.
fn truncate(text: &str, most: usize) -> String {
    if text.chars().count() <= most {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(most.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What the legend lists: the slices of a pie, otherwise the series.
fn legend_entries(chart: &Chart) -> Vec<String> {
    if chart.kind.is_circular() {
        category_labels(chart)
    } else {
        chart
            .series
            .iter()
            .map(|series| series.name.clone())
            .collect()
    }
}

fn legend_width(entries: &[String], font: f64, width: f64) -> f64 {
    let longest = entries
        .iter()
        .map(|name| name.chars().count())
        .max()
        .unwrap_or(0)
        .min(30) as f64;
    (longest * font * 0.6 + font * 2.5).min(width * 0.3)
}

fn draw_legend(svg: &mut String, entries: &[String], x: f64, top: f64, font: f64, look: &Look) {
    for (index, entry) in entries.iter().enumerate() {
        let y = top + font * 1.5 * index as f64;
        let name: String = entry.chars().take(30).collect();
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{ry:.1}" width="{s:.1}" height="{s:.1}" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" fill="{fill}">{name}</text>"#,
            ry = y,
            s = font * 0.9,
            colour = look.colour(index),
            tx = x + font * 1.3,
            ty = y + font * 0.8,
            fill = look.text,
            name = escape(&name),
        );
    }
}

/// A legend entry placed in a row: its index, text and x offset from the row's start.
struct LegendItem {
    index: usize,
    text: String,
    offset: f64,
}

/// Entries laid out in rows of at most `width` pixels (at most [`MAX_LEGEND_ROWS`]).
fn legend_rows(entries: &[String], font: f64, width: f64) -> Vec<Vec<LegendItem>> {
    let mut rows: Vec<Vec<LegendItem>> = Vec::new();
    let mut offset = 0.0;
    for (index, entry) in entries.iter().enumerate() {
        let text: String = entry.chars().take(30).collect();
        #[allow(clippy::cast_precision_loss)]
        let item_width = text.chars().count() as f64 * font * 0.6 + font * 2.4;
        if rows.is_empty() || (offset + item_width > width && offset > 0.0) {
            if rows.len() == MAX_LEGEND_ROWS {
                break;
            }
            rows.push(Vec::new());
            offset = 0.0;
        }
        if let Some(row) = rows.last_mut() {
            row.push(LegendItem {
                index,
                text,
                offset,
            });
        }
        offset += item_width;
    }
    rows
}

fn draw_legend_rows(svg: &mut String, rows: &[Vec<LegendItem>], font: f64, top: f64, look: &Look) {
    for (row_index, row) in rows.iter().enumerate() {
        #[allow(clippy::cast_precision_loss)]
        let y = top + font * 1.5 * row_index as f64 + font * 0.3;
        for item in row {
            let x = font + item.offset;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{s:.1}" height="{s:.1}" fill="{colour}"/><text x="{tx:.1}" y="{ty:.1}" fill="{fill}">{name}</text>"#,
                s = font * 0.9,
                colour = look.colour(item.index),
                tx = x + font * 1.3,
                ty = y + font * 0.8,
                fill = look.text,
                name = escape(&item.text),
            );
        }
    }
}

fn total_points(chart: &Chart) -> usize {
    chart.series.iter().map(|series| series.points.len()).sum()
}

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
    use crate::render::spec::{ChartStyle, Series};

    fn chart(kind: ChartKind, series: Vec<Series>) -> Chart {
        Chart {
            kind,
            title: Some("Q1 <sales> & \"costs\"".into()),
            x_label: Some("month".into()),
            y_label: Some("EUR".into()),
            series,
            x_scale: XScale::Number,
            style: ChartStyle::default(),
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
        assert_eq!(axis.label(0.03, NumberFormat::Auto), "0.03");
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
