//! What can be rendered: the wire form of a render spec (what `start_render` accepts, with its
//! JSON schema) and the validated domain form the pipeline runs. A [`RenderSpec`] only exists
//! if it is within every bound below, so the rest of the code never meets an oversized one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
/// Most characters in a title, axis label or series name.
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

/// What to render. `kind` selects the variant.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum RenderSpecInput {
    /// Rasterize an SVG document to a PNG of width × height pixels (the drawing is scaled to
    /// fit, keeping its aspect ratio). External resources are never loaded: images may only
    /// be embedded as data: URLs.
    Svg(SvgInput),
    /// Draw a bar or line chart with title, axis labels and legend, as PNG (default) or SVG.
    Chart(ChartSpecInput),
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
    /// The chart: type, labels and data series.
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

/// Bar or line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChartKind {
    /// Grouped bars: one group per distinct x value, one bar per series.
    Bar,
    /// Lines through each series' points, in x order.
    Line,
}

/// A chart's content.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ChartInput {
    /// "bar" or "line".
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
    /// The data: 1 to 16 series, at most 10,000 points each and 50,000 in all.
    pub series: Vec<SeriesInput>,
}

/// One named data series.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesInput {
    /// Legend name (1 to 200 characters).
    pub name: String,
    /// Points as [x, y] pairs of finite numbers (at least one).
    pub points: Vec<[f64; 2]>,
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

/// A validated chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub kind: ChartKind,
    pub title: Option<String>,
    pub x_label: Option<String>,
    pub y_label: Option<String>,
    pub series: Vec<Series>,
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

fn label(name: &str, value: Option<String>) -> Result<Option<String>, SpecError> {
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
        }
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
        let series = input
            .series
            .into_iter()
            .enumerate()
            .map(|(index, series)| {
                let name = series.name.trim().to_owned();
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
                if let Some([x, y]) = series
                    .points
                    .iter()
                    .find(|[x, y]| !x.is_finite() || !y.is_finite())
                {
                    return Err(SpecError(format!(
                        "series `{name}` has a point that is not finite: [{x}, {y}]"
                    )));
                }
                Ok(Series {
                    name,
                    points: series.points.iter().map(|[x, y]| (*x, *y)).collect(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            kind: input.kind,
            title: label("title", input.title)?,
            x_label: label("x_label", input.x_label)?,
            y_label: label("y_label", input.y_label)?,
            series,
        })
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
                            points: series.points.iter().map(|(x, y)| [*x, *y]).collect(),
                        })
                        .collect(),
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
                "invalid type",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "bar", "title": "t".repeat(201),
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "title",
            ),
            (
                json!({"kind": "chart", "chart": {"type": "pie",
                    "series": [{"name": "a", "points": [[0, 1]]}]}}),
                "unknown variant",
            ),
        ];
        for (input, expected) in cases {
            let error = RenderSpec::from_json(input.clone()).unwrap_err();
            assert!(error.to_string().contains(expected), "{input}: {error}");
        }
    }

    #[test]
    fn the_pixel_budget_bounds_the_area() {
        assert!(Dimensions::new(4096, 2048).is_ok());
        assert!(Dimensions::new(1, 4096).is_ok());
        let error = Dimensions::new(4096, 4096).unwrap_err();
        assert!(error.to_string().contains("pixels"), "{error}");
    }
}
