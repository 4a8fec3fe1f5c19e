//! What can be rendered: the wire form of a render spec (what `start_render` accepts, with its
//! JSON schema) and the validated domain form the pipeline runs. A [`RenderSpec`] only exists
//! if it is within every bound below, so the rest of the code never meets an oversized one.
//!
//! Three kinds of spec come in, two go out: a Vega-Lite spec ([`super::vega_lite`]) is
//! translated into our own chart when it is accepted, so the job stores, and the worker draws,
//! a plain chart; nothing downstream knows Vega-Lite exists.
//!
//! Specs are read from JSON by [`RenderSpecInput::from_value`] rather than by serde's derived
//! code alone: a model that sends the wrong shape gets a message naming the place, the shape
//! expected there and a one-line example ([`super::shape`]), not a bare serde type error.

use std::collections::HashMap;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize};

use super::{shape, time, vega_lite};

/// Largest width or height of an output image, in pixels.
pub const MAX_DIMENSION: u32 = 4096;
/// Largest output area, in pixels (e.g. 4096 × 2048): 32 MiB of RGBA while rasterizing.
pub const MAX_PIXELS: u64 = 8 * 1024 * 1024;
/// Largest SVG source accepted, in bytes.
pub const MAX_SVG_BYTES: usize = 1024 * 1024;
/// Most series in one chart.
pub const MAX_SERIES: usize = 16;
/// Most points in one series.
pub const MAX_POINTS_PER_SERIES: usize = 10_000;
/// Most points in one chart, over all series.
pub const MAX_TOTAL_POINTS: usize = 50_000;
/// Most characters in a title, axis label, series name or category label.
pub const MAX_LABEL_CHARS: usize = 200;
/// Most characters in an idempotency key.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 200;

const DEFAULT_WIDTH: u32 = 800;
const DEFAULT_HEIGHT: u32 = 600;

fn default_width() -> u32 {
    DEFAULT_WIDTH
}

fn default_height() -> u32 {
    DEFAULT_HEIGHT
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// What to render. `kind` selects the variant.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RenderSpecInput {
    /// Rasterize an SVG document to a PNG of width × height pixels (the drawing is scaled to
    /// fit, keeping its aspect ratio). External resources are never loaded: images may only
    /// be embedded as data: URLs.
    Svg(SvgInput),
    /// Draw a chart (bar, line, area, scatter, pie, donut) with title, axis labels and legend,
    /// as PNG (default) or SVG. x may be numbers, category labels ("Q1") or ISO dates
    /// ("2024-03-01"). Example: {"kind":"chart","chart":{"type":"bar","series":[{"name":
    /// "sales","points":[["Q1",120],["Q2",130]]}]}}
    Chart(ChartSpecInput),
    /// Draw a Vega-Lite (v5) spec: inline data.values; marks bar, line, area, point, arc;
    /// encodings x, y, color, theta (xOffset for grouped bars); types quantitative, nominal,
    /// ordinal, temporal; aggregate sum, mean, count; title, width, height. Anything else is
    /// refused with an error naming it. Example: {"kind":"vega-lite","vega_lite":{"data":
    /// {"values":[{"q":"Q1","v":120}]},"mark":"bar","encoding":{"x":{"field":"q",
    /// "type":"nominal"},"y":{"field":"v","type":"quantitative"}}}}
    #[serde(rename = "vega-lite")]
    VegaLite(VegaLiteSpecInput),
}

impl<'de> Deserialize<'de> for RenderSpecInput {
    /// Through [`RenderSpecInput::from_value`], so that every way in (the tools' arguments, a
    /// stored job) refuses a wrong shape with the same teaching message.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(deserializer)?;
        Self::from_value(value).map_err(|error| serde::de::Error::custom(error.0))
    }
}

impl RenderSpecInput {
    /// Reads a spec from JSON, checking its shape first ([`shape`]) so that a mistake is
    /// reported where it is, with the shape expected there and an example.
    pub fn from_value(value: serde_json::Value) -> Result<Self, SpecError> {
        let (kind, body) = shape::split_kind(value)?;
        let parsed = match kind {
            shape::Kind::Svg => serde_json::from_value(body).map(Self::Svg),
            shape::Kind::Chart => {
                shape::check_chart_spec(&body)?;
                serde_json::from_value(body).map(Self::Chart)
            }
            shape::Kind::VegaLite => {
                shape::check_vega_lite_spec(&body)?;
                serde_json::from_value(body).map(Self::VegaLite)
            }
        };
        parsed.map_err(|error| SpecError(shape::explain(kind, &error.to_string())))
    }
}

/// An SVG document to rasterize.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SvgInput {
    /// The SVG document as text (at most 1 MiB), starting with `<svg` or an XML declaration.
    pub svg: String,
    /// Output width in pixels, 1 to 4096 (default 800); width × height at most 8,388,608.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Output height in pixels, 1 to 4096 (default 600); width × height at most 8,388,608.
    #[serde(default = "default_height")]
    pub height: u32,
}

/// A chart to draw.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartSpecInput {
    /// The chart: type, labels, data series and options.
    pub chart: ChartInput,
    /// Output width in pixels, 1 to 4096 (default 800); width × height at most 8,388,608.
    #[serde(default = "default_width")]
    pub width: u32,
    /// Output height in pixels, 1 to 4096 (default 600); width × height at most 8,388,608.
    #[serde(default = "default_height")]
    pub height: u32,
    /// Output format: "png" (default) or "svg".
    #[serde(default)]
    pub format: ChartFormat,
}

/// A Vega-Lite spec to draw.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VegaLiteSpecInput {
    /// The Vega-Lite spec (a single view, data inline in data.values, at most 50,000 rows).
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub vega_lite: serde_json::Value,
    /// Output width in pixels, 1 to 4096; default: the spec's own width, else 800.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Output height in pixels, 1 to 4096; default: the spec's own height, else 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Output format: "png" (default) or "svg".
    #[serde(default)]
    pub format: ChartFormat,
}

/// Chart output format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChartFormat {
    /// A PNG image.
    #[default]
    Png,
    /// An SVG document (text drawn with the bundled font's family name).
    Svg,
}

/// The kind of chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// Bars: one group per distinct x, one bar per series (or stacked, or horizontal).
    Bar,
    /// Lines through each series' points, in x order.
    Line,
    /// Lines filled down to zero (or stacked on each other).
    Area,
    /// Points only.
    Scatter,
    /// One series of [label, value] slices.
    Pie,
    /// A pie with a hole.
    Donut,
}

impl ChartKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Bar => "bar",
            Self::Line => "line",
            Self::Area => "area",
            Self::Scatter => "scatter",
            Self::Pie => "pie",
            Self::Donut => "donut",
        }
    }

    pub fn is_circular(self) -> bool {
        matches!(self, Self::Pie | Self::Donut)
    }
}

/// How x values are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum XType {
    /// Numbers on a linear axis.
    Number,
    /// Labels, in the order they first appear (numbers become labels too, e.g. years).
    Category,
    /// ISO 8601 dates or date-times ("2024-03-01", "2024-03-01T12:30:00Z"), on a time axis.
    Time,
}

/// How the value axis writes numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NumberFormat {
    /// As many decimals as the ticks need: 2500, 0.25.
    #[default]
    Auto,
    /// Thousands separators: 1,250,000.
    Thousands,
    /// Fractions as percent: 0.25 → 25%.
    Percent,
    /// Compact: 1.2k, 3.4M, 5B.
    Compact,
}

/// Where the legend goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LegendPosition {
    #[default]
    Right,
    Top,
    Bottom,
    /// No legend.
    None,
}

/// Colours of background, text and grid.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Theme {
    #[default]
    Light,
    Dark,
}

/// Series colours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Palette {
    /// Tableau 10 (Vega-Lite's default).
    #[default]
    Default,
    /// Okabe–Ito: told apart by viewers with any common colour-vision deficiency.
    Colorblind,
}

/// A chart's content.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartInput {
    /// "bar", "line", "area", "scatter", "pie" or "donut".
    #[serde(rename = "type")]
    pub kind: ChartKind,
    /// Title drawn above the plot (optional, at most 200 characters).
    #[serde(default)]
    pub title: Option<String>,
    /// Label of the horizontal axis (optional, at most 200 characters).
    #[serde(default)]
    pub x_label: Option<String>,
    /// Label of the vertical axis (optional, at most 200 characters).
    #[serde(default)]
    pub y_label: Option<String>,
    /// The data: 1 to 16 series, at most 10,000 points each and 50,000 in all. A pie or donut
    /// has one series of [label, value] slices.
    pub series: Vec<SeriesInput>,
    /// How x is read: "number", "category" or "time". Default: numbers are numbers; labels
    /// that are all ISO dates ("2024-03-01") are time; other labels are categories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x_type: Option<XType>,
    /// Category charts: the order of the x labels (labels not listed follow in the order they
    /// appear). Default: the order they first appear in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub categories: Option<Vec<String>>,
    /// Bar and area charts: stack the series on each other instead of side by side.
    #[serde(default, skip_serializing_if = "is_default")]
    pub stacked: bool,
    /// Bar charts: bars grow to the right, categories listed top to bottom.
    #[serde(default, skip_serializing_if = "is_default")]
    pub horizontal: bool,
    /// Value-axis numbers: "auto" (default), "thousands" (1,250), "percent" (0.25 → 25%),
    /// "compact" (1.2k, 3.4M).
    #[serde(default, skip_serializing_if = "is_default")]
    pub y_format: NumberFormat,
    /// Lowest value on the value axis (default: from the data; bars start at 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_min: Option<f64>,
    /// Highest value on the value axis (default: from the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y_max: Option<f64>,
    /// Legend: "right" (default), "top", "bottom" or "none".
    #[serde(default, skip_serializing_if = "is_default")]
    pub legend: LegendPosition,
    /// "light" (default) or "dark".
    #[serde(default, skip_serializing_if = "is_default")]
    pub theme: Theme,
    /// "default" (Tableau 10) or "colorblind" (Okabe–Ito, safe for colour-blind viewers).
    #[serde(default, skip_serializing_if = "is_default")]
    pub palette: Palette,
}

/// One named data series.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesInput {
    /// Legend name (1 to 200 characters).
    pub name: String,
    /// Points as [x, y] pairs (at least one): x a number, a label like "Q1" or an ISO date
    /// like "2024-03-01"; y a finite number. E.g. [["Q1", 120], ["Q2", 130]].
    pub points: Vec<(XInput, f64)>,
}

/// An x value as sent: a number, or text (a category label or an ISO date).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum XInput {
    Number(f64),
    Text(String),
}

/// Output size in pixels, within [`MAX_DIMENSION`] and [`MAX_PIXELS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dimensions {
    width: u32,
    height: u32,
}

impl Dimensions {
    pub fn new(width: u32, height: u32) -> Result<Self, SpecError> {
        for (name, value) in [("width", width), ("height", height)] {
            if value == 0 || value > MAX_DIMENSION {
                return Err(SpecError(format!(
                    "{name} must be between 1 and {MAX_DIMENSION} pixels, got {value}"
                )));
            }
        }
        if u64::from(width) * u64::from(height) > MAX_PIXELS {
            return Err(SpecError(format!(
                "{width}×{height} is more than {MAX_PIXELS} pixels"
            )));
        }
        Ok(Self { width, height })
    }

    pub fn width(self) -> u32 {
        self.width
    }

    pub fn height(self) -> u32 {
        self.height
    }
}

/// A validated chart. Every point's x is a plain number whatever the chart's x is: the number
/// itself, a category's index into [`XScale::Category`], or milliseconds since the Unix epoch
/// (UTC) for [`XScale::Time`], so drawing numeric charts costs what it always did.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub kind: ChartKind,
    pub title: Option<String>,
    pub x_label: Option<String>,
    pub y_label: Option<String>,
    pub series: Vec<Series>,
    pub x_scale: XScale,
    pub style: ChartStyle,
}

/// What x values mean.
#[derive(Debug, Clone, PartialEq)]
pub enum XScale {
    Number,
    /// The labels, in first-appearance order; x is an index into them.
    Category(Vec<String>),
    /// x is milliseconds since the epoch; `dates_only` when no value had a time of day.
    Time {
        dates_only: bool,
    },
}

/// A chart's options, each with its no-surprise default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChartStyle {
    pub stacked: bool,
    pub horizontal: bool,
    pub y_format: NumberFormat,
    pub y_min: Option<f64>,
    pub y_max: Option<f64>,
    pub legend: LegendPosition,
    pub theme: Theme,
    pub palette: Palette,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A render spec that is within every bound.
#[derive(Debug, Clone, PartialEq)]
pub enum RenderSpec {
    Svg {
        svg: String,
        size: Dimensions,
    },
    Chart {
        chart: Chart,
        size: Dimensions,
        format: ChartFormat,
    },
}

/// Why a spec was refused; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid render spec: {0}")]
pub struct SpecError(pub String);

/// A title, axis label or name: at most [`MAX_LABEL_CHARS`]; blank means none.
pub(crate) fn label(name: &str, value: Option<String>) -> Result<Option<String>, SpecError> {
    match value {
        Some(text) if text.chars().count() > MAX_LABEL_CHARS => Err(SpecError(format!(
            "{name} is longer than {MAX_LABEL_CHARS} characters"
        ))),
        Some(text) if text.trim().is_empty() => Ok(None),
        other => Ok(other),
    }
}

impl TryFrom<RenderSpecInput> for RenderSpec {
    type Error = SpecError;

    fn try_from(input: RenderSpecInput) -> Result<Self, SpecError> {
        match input {
            RenderSpecInput::Svg(SvgInput { svg, width, height }) => {
                if svg.len() > MAX_SVG_BYTES {
                    return Err(SpecError(format!(
                        "the svg is {} bytes; the limit is {MAX_SVG_BYTES}",
                        svg.len()
                    )));
                }
                if !svg.contains("<svg") {
                    return Err(SpecError(
                        "`svg` does not contain an <svg> element".to_owned(),
                    ));
                }
                Ok(Self::Svg {
                    svg,
                    size: Dimensions::new(width, height)?,
                })
            }
            RenderSpecInput::Chart(ChartSpecInput {
                chart,
                width,
                height,
                format,
            }) => Ok(Self::Chart {
                chart: Chart::try_from(chart)?,
                size: Dimensions::new(width, height)?,
                format,
            }),
            RenderSpecInput::VegaLite(VegaLiteSpecInput {
                vega_lite,
                width,
                height,
                format,
            }) => {
                let compiled = vega_lite::compile(&vega_lite)?;
                let width = width.or(compiled.width).unwrap_or(DEFAULT_WIDTH);
                let height = height.or(compiled.height).unwrap_or(DEFAULT_HEIGHT);
                Ok(Self::Chart {
                    chart: Chart::try_from(compiled.chart)?,
                    size: Dimensions::new(width, height)?,
                    format,
                })
            }
        }
    }
}

/// Where a point is, for messages: `chart.series[1].points[3]`.
fn point_path(series: usize, point: usize) -> String {
    format!("chart.series[{series}].points[{point}]")
}

/// Reads every x as `x_type` (or the type the values imply) and returns the scale and each
/// series' x as numbers.
fn resolve_x(
    kind: ChartKind,
    x_type: Option<XType>,
    categories: Option<Vec<String>>,
    series: &[SeriesInput],
) -> Result<(XScale, Vec<Vec<f64>>), SpecError> {
    let all = || series.iter().flat_map(|s| s.points.iter().map(|p| &p.0));
    if x_type.is_none() && !kind.is_circular() {
        // Numbers and labels mixed: most likely a slip, so say where rather than guess.
        let first_is_number = matches!(all().next(), Some(XInput::Number(_)));
        for (s, input) in series.iter().enumerate() {
            for (p, (x, _)) in input.points.iter().enumerate() {
                match (x, first_is_number) {
                    (XInput::Text(text), true) => {
                        return Err(SpecError(format!(
                            "{}: x is the label {:?} but earlier points have numbers; use                              numbers for every x, or labels for every x (e.g. [\"Q1\", 120]),                              or set \"x_type\": \"category\"",
                            point_path(s, p),
                            text.chars().take(40).collect::<String>()
                        )));
                    }
                    (XInput::Number(number), false) => {
                        return Err(SpecError(format!(
                            "{}: x is the number {number} but earlier points have labels; use                              labels for every x (e.g. [\"Q1\", 120]), or set \"x_type\":                              \"category\"",
                            point_path(s, p)
                        )));
                    }
                    _ => {}
                }
            }
        }
    }
    let x_type = match x_type {
        Some(x_type) => x_type,
        None if kind.is_circular() => {
            if let Some((s, p)) = series.iter().enumerate().find_map(|(s, input)| {
                let p = input
                    .points
                    .iter()
                    .position(|(x, _)| matches!(x, XInput::Number(_)))?;
                Some((s, p))
            }) {
                return Err(SpecError(format!(
                    "{}: a {} slice is [label, value] with a text label, e.g. [\"Apples\", 30]",
                    point_path(s, p),
                    kind.name()
                )));
            }
            XType::Category
        }
        None if categories.is_some() => XType::Category,
        None if all().all(|x| matches!(x, XInput::Number(_))) => XType::Number,
        None if all().all(|x| matches!(x, XInput::Text(t) if time::looks_like_date(t))) => {
            XType::Time
        }
        None => XType::Category,
    };
    if kind.is_circular() && x_type != XType::Category {
        return Err(SpecError(format!(
            "a {} chart's slices are [label, value] points, e.g. [\"Apples\", 30]; x_type must be \
             \"category\"",
            kind.name()
        )));
    }
    let mut xs = Vec::with_capacity(series.len());
    match x_type {
        XType::Number => {
            for (s, input) in series.iter().enumerate() {
                let mut row = Vec::with_capacity(input.points.len());
                for (p, (x, _)) in input.points.iter().enumerate() {
                    match x {
                        XInput::Number(x) => row.push(*x),
                        XInput::Text(text) => {
                            return Err(SpecError(format!(
                                "{}: x is the label {text:?} but this chart's x is numbers; \
                                 use numbers for every x, or labels for every x (e.g. \
                                 [\"Q1\", 120])",
                                point_path(s, p)
                            )));
                        }
                    }
                }
                xs.push(row);
            }
            Ok((XScale::Number, xs))
        }
        XType::Time => {
            let mut dates_only = true;
            for (s, input) in series.iter().enumerate() {
                let mut row = Vec::with_capacity(input.points.len());
                for (p, (x, _)) in input.points.iter().enumerate() {
                    let parsed = match x {
                        XInput::Text(text) => time::parse(text),
                        XInput::Number(_) => None,
                    };
                    let Some((millis, has_time)) = parsed else {
                        return Err(SpecError(format!(
                            "{}: x must be an ISO 8601 date or date-time on a time axis, like \
                             \"2024-03-01\" or \"2024-03-01T14:30:00Z\"; got {}",
                            point_path(s, p),
                            describe_x(x)
                        )));
                    };
                    dates_only &= !has_time;
                    // Within ±2^53, so exact as f64 (years 1 to 9999 are ±2.6e14 ms).
                    #[allow(clippy::cast_precision_loss)]
                    row.push(millis as f64);
                }
                xs.push(row);
            }
            Ok((XScale::Time { dates_only }, xs))
        }
        XType::Category => {
            let mut labels: Vec<String> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let listed = categories.unwrap_or_default();
            if listed.len() > MAX_TOTAL_POINTS {
                return Err(SpecError(format!(
                    "categories lists {} labels; at most {MAX_TOTAL_POINTS}",
                    listed.len()
                )));
            }
            for text in listed {
                let text = text.trim().to_owned();
                if text.chars().count() > MAX_LABEL_CHARS {
                    return Err(SpecError(format!(
                        "categories: a label is longer than {MAX_LABEL_CHARS} characters"
                    )));
                }
                let next = labels.len();
                if *index.entry(text.clone()).or_insert(next) == next {
                    labels.push(text);
                }
            }
            for (s, input) in series.iter().enumerate() {
                let mut row = Vec::with_capacity(input.points.len());
                for (p, (x, _)) in input.points.iter().enumerate() {
                    let text = match x {
                        XInput::Text(text) => text.trim().to_owned(),
                        XInput::Number(number) => number.to_string(),
                    };
                    if text.chars().count() > MAX_LABEL_CHARS {
                        return Err(SpecError(format!(
                            "{}: the label is longer than {MAX_LABEL_CHARS} characters",
                            point_path(s, p)
                        )));
                    }
                    let next = labels.len();
                    let at = *index.entry(text.clone()).or_insert(next);
                    if at == next {
                        labels.push(text);
                    }
                    #[allow(clippy::cast_precision_loss)] // at most MAX_TOTAL_POINTS
                    row.push(at as f64);
                }
                xs.push(row);
            }
            Ok((XScale::Category(labels), xs))
        }
    }
}

fn describe_x(x: &XInput) -> String {
    match x {
        XInput::Number(number) => format!("the number {number}"),
        XInput::Text(text) => format!("{:?}", text.chars().take(40).collect::<String>()),
    }
}

impl TryFrom<ChartInput> for Chart {
    type Error = SpecError;

    fn try_from(input: ChartInput) -> Result<Self, SpecError> {
        if input.series.is_empty() {
            return Err(SpecError("a chart needs at least one series".to_owned()));
        }
        if input.series.len() > MAX_SERIES {
            return Err(SpecError(format!(
                "{} series; a chart may have at most {MAX_SERIES}",
                input.series.len()
            )));
        }
        let total: usize = input.series.iter().map(|series| series.points.len()).sum();
        if total > MAX_TOTAL_POINTS {
            return Err(SpecError(format!(
                "{total} points in all; a chart may have at most {MAX_TOTAL_POINTS}"
            )));
        }
        let kind = input.kind;
        if kind.is_circular() && input.series.len() != 1 {
            return Err(SpecError(format!(
                "a {} chart has exactly one series, whose points are the slices, e.g. \
                 [{{\"name\": \"share\", \"points\": [[\"Apples\", 30], [\"Pears\", 20]]}}]; \
                 got {}",
                kind.name(),
                input.series.len()
            )));
        }
        if input.stacked && !matches!(kind, ChartKind::Bar | ChartKind::Area) {
            return Err(SpecError(format!(
                "stacked applies to bar and area charts, not {}",
                kind.name()
            )));
        }
        if input.horizontal && kind != ChartKind::Bar {
            return Err(SpecError(format!(
                "horizontal applies to bar charts, not {}",
                kind.name()
            )));
        }
        if kind.is_circular() && (input.y_min.is_some() || input.y_max.is_some()) {
            return Err(SpecError(format!(
                "y_min and y_max do not apply to a {} chart",
                kind.name()
            )));
        }
        for (name, value) in [("y_min", input.y_min), ("y_max", input.y_max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                return Err(SpecError(format!("{name} must be a finite number")));
            }
        }
        if let (Some(low), Some(high)) = (input.y_min, input.y_max)
            && low >= high
        {
            return Err(SpecError(format!(
                "y_min ({low}) must be less than y_max ({high})"
            )));
        }
        for (index, series) in input.series.iter().enumerate() {
            let name = series.name.trim();
            if name.is_empty() {
                return Err(SpecError(format!("series {index} has an empty name")));
            }
            if name.chars().count() > MAX_LABEL_CHARS {
                return Err(SpecError(format!(
                    "series {index}'s name is longer than {MAX_LABEL_CHARS} characters"
                )));
            }
            if series.points.is_empty() {
                return Err(SpecError(format!("series `{name}` has no points")));
            }
            if series.points.len() > MAX_POINTS_PER_SERIES {
                return Err(SpecError(format!(
                    "series `{name}` has {} points; the limit is {MAX_POINTS_PER_SERIES}",
                    series.points.len()
                )));
            }
            // serde_json never produces NaN or infinity, but the type allows them.
            if let Some((x, y)) = series
                .points
                .iter()
                .find(|(x, y)| !y.is_finite() || matches!(x, XInput::Number(x) if !x.is_finite()))
            {
                return Err(SpecError(format!(
                    "series `{name}` has a point that is not finite: [{}, {y}]",
                    describe_x(x)
                )));
            }
            if kind.is_circular()
                && let Some(p) = series.points.iter().position(|(_, y)| *y < 0.0)
            {
                return Err(SpecError(format!(
                    "{}: a slice cannot be negative",
                    point_path(index, p)
                )));
            }
        }
        if kind.is_circular() && input.series[0].points.iter().all(|(_, y)| *y == 0.0) {
            return Err(SpecError(
                "every slice is 0; a pie needs at least one positive value".to_owned(),
            ));
        }
        if input.categories.is_some() && input.x_type.is_some_and(|t| t != XType::Category) {
            return Err(SpecError(
                "categories apply only when x is categories (x_type \"category\")".to_owned(),
            ));
        }
        let (x_scale, xs) = resolve_x(kind, input.x_type, input.categories, &input.series)?;
        let series = input
            .series
            .into_iter()
            .zip(xs)
            .map(|(series, xs)| Series {
                name: series.name.trim().to_owned(),
                points: xs
                    .into_iter()
                    .zip(series.points)
                    .map(|(x, (_, y))| (x, y))
                    .collect(),
            })
            .collect();
        Ok(Self {
            kind,
            title: label("title", input.title)?,
            x_label: label("x_label", input.x_label)?,
            y_label: label("y_label", input.y_label)?,
            series,
            x_scale,
            style: ChartStyle {
                stacked: input.stacked,
                horizontal: input.horizontal,
                y_format: input.y_format,
                y_min: input.y_min,
                y_max: input.y_max,
                legend: input.legend,
                theme: input.theme,
                palette: input.palette,
            },
        })
    }
}

impl Chart {
    /// The wire form of x value `x` (what the spec said, in canonical form).
    fn x_input(&self, x: f64) -> XInput {
        match &self.x_scale {
            XScale::Number => XInput::Number(x),
            XScale::Category(labels) => {
                // Indexes were made from `labels`' positions, so they are in range.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let label = labels.get(x as usize).cloned().unwrap_or_default();
                XInput::Text(label)
            }
            XScale::Time { dates_only } => {
                #[allow(clippy::cast_possible_truncation)] // made from an i64
                XInput::Text(time::format_iso(x as i64, *dates_only))
            }
        }
    }
}

impl From<&RenderSpec> for RenderSpecInput {
    /// The canonical wire form of a validated spec (what is stored with the job).
    fn from(spec: &RenderSpec) -> Self {
        match spec {
            RenderSpec::Svg { svg, size } => Self::Svg(SvgInput {
                svg: svg.clone(),
                width: size.width,
                height: size.height,
            }),
            RenderSpec::Chart {
                chart,
                size,
                format,
            } => Self::Chart(ChartSpecInput {
                chart: ChartInput {
                    kind: chart.kind,
                    title: chart.title.clone(),
                    x_label: chart.x_label.clone(),
                    y_label: chart.y_label.clone(),
                    series: chart
                        .series
                        .iter()
                        .map(|series| SeriesInput {
                            name: series.name.clone(),
                            points: series
                                .points
                                .iter()
                                .map(|(x, y)| (chart.x_input(*x), *y))
                                .collect(),
                        })
                        .collect(),
                    categories: match &chart.x_scale {
                        XScale::Category(labels) => Some(labels.clone()),
                        _ => None,
                    },
                    x_type: match chart.x_scale {
                        XScale::Number => None,
                        XScale::Category(_) => Some(XType::Category),
                        XScale::Time { .. } => Some(XType::Time),
                    },
                    stacked: chart.style.stacked,
                    horizontal: chart.style.horizontal,
                    y_format: chart.style.y_format,
                    y_min: chart.style.y_min,
                    y_max: chart.style.y_max,
                    legend: chart.style.legend,
                    theme: chart.style.theme,
                    palette: chart.style.palette,
                },
                width: size.width,
                height: size.height,
                format: *format,
            }),
        }
    }
}

/// What a finished render produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    Png,
    Svg,
}

impl OutputKind {
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Svg => "image/svg+xml",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Svg => "svg",
        }
    }

    pub fn from_extension(extension: &str) -> Option<Self> {
        match extension {
            "png" => Some(Self::Png),
            "svg" => Some(Self::Svg),
            _ => None,
        }
    }
}

/// A step of a render pipeline; its name is what status messages show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Chart data → SVG document.
    Charting,
    /// SVG text → checked document tree.
    Parsing,
    /// Document tree → pixels.
    Rasterizing,
    /// Pixels → PNG bytes.
    Encoding,
    /// Bytes → artifact store.
    Uploading,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Charting => "charting",
            Self::Parsing => "parsing",
            Self::Rasterizing => "rasterizing",
            Self::Encoding => "encoding",
            Self::Uploading => "uploading",
        }
    }
}

impl RenderSpec {
    /// The pipeline's steps, in order. `total_stages` is its length.
    pub fn stages(&self) -> &'static [Stage] {
        match self {
            Self::Svg { .. } => &[
                Stage::Parsing,
                Stage::Rasterizing,
                Stage::Encoding,
                Stage::Uploading,
            ],
            Self::Chart {
                format: ChartFormat::Png,
                ..
            } => &[
                Stage::Charting,
                Stage::Rasterizing,
                Stage::Encoding,
                Stage::Uploading,
            ],
            Self::Chart {
                format: ChartFormat::Svg,
                ..
            } => &[Stage::Charting, Stage::Uploading],
        }
    }

    pub fn output(&self) -> OutputKind {
        match self {
            Self::Chart {
                format: ChartFormat::Svg,
                ..
            } => OutputKind::Svg,
            _ => OutputKind::Png,
        }
    }

    pub fn size(&self) -> Dimensions {
        match self {
            Self::Svg { size, .. } | Self::Chart { size, .. } => *size,
        }
    }

    /// Parses and validates a spec from JSON.
    pub fn from_json(value: serde_json::Value) -> Result<Self, SpecError> {
        let input: RenderSpecInput =
            serde_json::from_value(value).map_err(|error| SpecError(error.to_string()))?;
        Self::try_from(input)
    }

    /// The canonical JSON stored with a job.
    pub fn to_json(&self) -> String {
        // Serializing plain data (strings, finite numbers) cannot fail.
        serde_json::to_string(&RenderSpecInput::from(self)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chart(series: serde_json::Value) -> serde_json::Value {
        json!({"kind": "chart", "chart": {"type": "bar", "series": series}})
    }

    #[test]
    fn a_valid_chart_round_trips_through_its_stored_json() {
        let spec = RenderSpec::from_json(json!({
            "kind": "chart", "width": 640, "height": 480, "format": "svg",
            "chart": {"type": "line", "title": "Sales", "x_label": "month", "y_label": "€",
                      "series": [{"name": "2025", "points": [[1, 2.5], [2, 3]]}]}
        }))
        .unwrap();
        assert_eq!(spec.stages().len(), 2);
        assert_eq!(spec.output(), OutputKind::Svg);
        let again = RenderSpec::from_json(serde_json::from_str(&spec.to_json()).unwrap()).unwrap();
        assert_eq!(again, spec);
    }

    #[test]
    fn defaults_are_800_by_600_png() {
        let spec =
            RenderSpec::from_json(chart(json!([{"name": "a", "points": [[0, 1]]}]))).unwrap();
        assert_eq!(spec.size(), Dimensions::new(800, 600).unwrap());
        assert_eq!(spec.output(), OutputKind::Png);
        assert_eq!(spec.stages().len(), 4);
    }

    #[test]
    fn every_bound_is_enforced_with_a_message_naming_it() {
        let too_many_series: Vec<_> = (0..17)
            .map(|i| json!({"name": format!("s{i}"), "points": [[0, 1]]}))
            .collect();
        let long_series = json!([{"name": "a", "points": vec![[0, 1]; 10_001]}]);
        let cases = [
            (json!({"kind": "svg", "svg": "<svg/>", "width": 0}), "width"),
            (
                json!({"kind": "svg", "svg": "<svg/>", "width": 5000}),
                "width",
            ),
            (
                json!({"kind": "svg", "svg": "<svg/>", "height": 4097}),
                "height",
            ),
            (json!({"kind": "svg", "svg": "hello"}), "<svg>"),
            (
                json!({"kind": "svg", "svg": format!("<svg>{}</svg>", " ".repeat(MAX_SVG_BYTES))}),
                "limit",
            ),
            (json!({"kind": "pie"}), "unknown variant"),
            (
                json!({"kind": "svg", "svg": "<svg/>", "colour": "red"}),
                "unknown field",
            ),
            (chart(json!([])), "at least one series"),
            (chart(json!(too_many_series)), "at most 16"),
            (chart(long_series), "10000"),
            (
                chart(json!([{"name": " ", "points": [[0, 1]]}])),
                "empty name",
            ),
            (chart(json!([{"name": "a", "points": []}])), "no points"),
            (
                chart(json!([{"name": "a", "points": [[0, "x"]]}])),
                "chart.series[0].points[0]: expected [x, y]",
            ),
            (
                chart(json!([{"name": "a", "points": [[0, 1], ["Q2", 1]]}])),
                "chart.series[0].points[1]: x is the label \"Q2\"",
            ),
            (
                chart(json!([{"name": "a", "points": [[0, 1, 2]]}])),
                "invalid length 3, expected [x, y]",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "line", "x_type": "time",
                    "series": [{"name": "a", "points": [["March 1", 1]]}]}}),
                "ISO 8601",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "pie",
                    "series": [{"name": "a", "points": [["A", 1]]}, {"name": "b", "points": [["A", 1]]}]}}),
                "exactly one series",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "pie",
                    "series": [{"name": "a", "points": [["A", -1]]}]}}),
                "cannot be negative",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "line", "stacked": true,
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "stacked applies to bar and area",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "bar", "y_min": 5, "y_max": 1,
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "y_min (5) must be less than y_max (1)",
            ),
            (json!({"kind": "bar"}), "chart.type"),
            (json!({"series": []}), "missing field `kind`"),
            (
                json!({"kind": "chart", "chart": {"type": "histogram", "series": []}}),
                "unknown variant `\"histogram\"`",
            ),
            (
                json!({"kind": "vega-lite", "vega_lite": "{}"}),
                "not as a string",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "bar", "title": "t".repeat(201),
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "title",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "pie",
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "a pie slice is [label, value]",
            ),
        ];
        for (input, expected) in cases {
            let error = RenderSpec::from_json(input.clone()).unwrap_err();
            assert!(error.to_string().contains(expected), "{input}: {error}");
        }
    }

    #[test]
    fn categories_and_dates_round_trip_through_the_stored_json() {
        let cases = [
            json!({"kind": "chart", "chart": {"type": "bar", "stacked": true,
                "series": [{"name": "a", "points": [["Q2", 1], ["Q1", 2]]},
                           {"name": "b", "points": [["Q3", 1], ["Q1", 2]]}]}}),
            json!({"kind": "chart", "chart": {"type": "line", "y_format": "compact",
                "series": [{"name": "a", "points": [["2024-03-01", 1], ["2024-01-01T10:00:00Z", 2]]}]}}),
            json!({"kind": "chart", "chart": {"type": "donut", "theme": "dark", "palette": "colorblind",
                "legend": "bottom", "series": [{"name": "a", "points": [["x", 1], ["y", 2]]}]}}),
            json!({"kind": "chart", "chart": {"type": "bar", "x_type": "category", "categories": ["2023"],
                "series": [{"name": "a", "points": [[2024, 1], [2023, 2]]}]}}),
        ];
        for input in cases {
            let spec = RenderSpec::from_json(input.clone()).unwrap();
            let again =
                RenderSpec::from_json(serde_json::from_str(&spec.to_json()).unwrap()).unwrap();
            assert_eq!(again, spec, "{input}");
        }
        let RenderSpec::Chart { chart, .. } = RenderSpec::from_json(json!({"kind": "chart",
            "chart": {"type": "bar", "series": [{"name": "a", "points": [["Q2", 1], ["Q1", 2]]},
                                                  {"name": "b", "points": [["Q3", 1]]}]}}))
        .unwrap() else {
            panic!("a chart")
        };
        assert_eq!(
            chart.x_scale,
            XScale::Category(vec!["Q2".into(), "Q1".into(), "Q3".into()]),
            "labels keep the order they first appear in"
        );
        assert_eq!(chart.series[1].points, [(2.0, 1.0)]);
    }

    #[test]
    fn a_legacy_spec_is_stored_exactly_as_before() {
        let spec = RenderSpec::from_json(
            json!({"kind": "chart", "chart": {"type": "bar", "series": [{"name": "a", "points": [[1, 2.5]]}]}}),
        )
        .unwrap();
        assert_eq!(
            spec.to_json(),
            r#"{"kind":"chart","chart":{"type":"bar","title":null,"x_label":null,"y_label":null,"series":[{"name":"a","points":[[1.0,2.5]]}]},"width":800,"height":600,"format":"png"}"#
        );
    }

    #[test]
    fn the_pixel_budget_bounds_the_area() {
        assert!(Dimensions::new(4096, 2048).is_ok());
        assert!(Dimensions::new(1, 4096).is_ok());
        let error = Dimensions::new(4096, 4096).unwrap_err();
        assert!(error.to_string().contains("pixels"), "{error}");
    }
}
