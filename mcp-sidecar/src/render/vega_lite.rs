//! A subset of Vega-Lite (v5), translated into our own [`ChartInput`] when a spec is accepted:
//! the grammar language models write most fluently, drawn by the same chart code as every
//! other chart. One view with inline `data.values`; marks bar, line, area, point (and circle),
//! arc; channels x, y, color, theta and xOffset (grouped bars); types quantitative, nominal,
//! ordinal, temporal; aggregates sum, mean, count, min, max; title, width, height; axis and
//! legend titles, axis formats, `scale.domain`, `sort`, `stack`.
//!
//! The rule is: the picture is Vega-Lite's picture, or the spec is refused with a message
//! naming the part that is outside the subset. Defaults follow Vega-Lite: nominal domains are
//! sorted, bars and areas split by color are stacked, quantitative axes include zero, axis
//! titles are the field names. Properties that cannot change a static image (`tooltip`,
//! `$schema`, `description`) are ignored. Nothing is ever fetched: `data.url` is refused.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::spec::{
    ChartInput, ChartKind, LegendPosition, MAX_SERIES, MAX_TOTAL_POINTS, NumberFormat, SeriesInput,
    SpecError, XInput, XType,
};
use super::time;

/// A Vega-Lite spec as one of our charts, with the size it asked for.
#[derive(Debug)]
pub struct Compiled {
    pub chart: ChartInput,
    pub width: Option<u32>,
    pub height: Option<u32>,
}

fn refuse(message: impl Into<String>) -> SpecError {
    SpecError(format!("vega_lite: {}", message.into()))
}

const TOP_LEVEL: [&str; 8] = [
    "$schema",
    "description",
    "title",
    "width",
    "height",
    "data",
    "mark",
    "encoding",
];

/// Why a top-level property is not in the subset, when there is more to say than "no".
fn top_level_reason(key: &str) -> &'static str {
    match key {
        "transform" => {
            "; aggregate with encoding's \"aggregate\" (sum, mean, count, min, max) or send \
             the computed rows"
        }
        "layer" | "hconcat" | "vconcat" | "concat" | "facet" | "repeat" | "spec" => {
            "; only single views are drawn: one mark per spec"
        }
        "params" | "selection" => "; a static image has no interaction",
        "datasets" => "; put the rows in data.values",
        _ => "",
    }
}

/// Translates a Vega-Lite spec, or says which part of it is outside the subset.
pub fn compile(spec: &Value) -> Result<Compiled, SpecError> {
    let Value::Object(spec) = spec else {
        return Err(refuse("expected the spec as a JSON object"));
    };
    for key in spec.keys() {
        if !TOP_LEVEL.contains(&key.as_str()) {
            return Err(refuse(format!(
                "`{}` is not supported{} (supported: {})",
                shown(key),
                top_level_reason(key),
                TOP_LEVEL.join(", ")
            )));
        }
    }
    let rows = rows(spec.get("data"))?;
    let (kind, donut) = mark(spec.get("mark"))?;
    let Some(Value::Object(encoding)) = spec.get("encoding") else {
        return Err(refuse(
            "missing encoding: say which fields go where, e.g. \"encoding\": {\"x\": {\"field\": \
             \"q\", \"type\": \"nominal\"}, \"y\": {\"field\": \"v\", \"type\": \"quantitative\"}}",
        ));
    };
    let channels = Channels::read(encoding)?;
    let title = title(spec.get("title"))?;
    let width = size("width", spec.get("width"))?;
    let height = size("height", spec.get("height"))?;
    let chart = if kind == Mark::Arc {
        arc_chart(&channels, &rows, donut, title)?
    } else {
        xy_chart(kind, &channels, &rows, title)?
    };
    Ok(Compiled {
        chart,
        width,
        height,
    })
}

fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

fn size(name: &str, value: Option<&Value>) -> Result<Option<u32>, SpecError> {
    match value {
        None => Ok(None),
        Some(Value::Number(number)) => number
            .as_f64()
            .filter(|v| *v >= 1.0 && *v <= 4096.0)
            .map(|v| {
                // In 1..=4096 (checked just above).
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let pixels = v.round() as u32;
                Some(pixels)
            })
            .ok_or_else(|| refuse(format!("{name} must be 1 to 4096 pixels"))),
        Some(other) => Err(refuse(format!(
            "{name} {} is not supported; give a number of pixels",
            shown(&other.to_string())
        ))),
    }
}

fn title(value: Option<&Value>) -> Result<Option<String>, SpecError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(Value::Array(lines)) => Ok(Some(
            lines
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        )),
        Some(Value::Object(object)) => {
            if let Some(key) = object.keys().find(|key| key.as_str() != "text") {
                return Err(refuse(format!(
                    "title.{} is not supported (only title.text)",
                    shown(key)
                )));
            }
            title(object.get("text"))
        }
        Some(_) => Err(refuse("title must be text")),
    }
}

/// The rows of inline data.
fn rows(data: Option<&Value>) -> Result<Vec<Map<String, Value>>, SpecError> {
    let Some(Value::Object(data)) = data else {
        return Err(refuse(
            "missing data: put the rows inline, e.g. \"data\": {\"values\": [{\"q\": \"Q1\", \
             \"v\": 120}]}",
        ));
    };
    if data.contains_key("url") {
        return Err(refuse(
            "data.url is not supported: rendering never fetches URLs or reads files; put the \
             rows in data.values",
        ));
    }
    if let Some(key) = data.keys().find(|key| key.as_str() != "values") {
        return Err(refuse(format!(
            "data.{} is not supported; only inline data.values",
            shown(key)
        )));
    }
    let Some(Value::Array(values)) = data.get("values") else {
        return Err(refuse(
            "data.values must be a list of rows, e.g. [{\"q\": \"Q1\", \"v\": 120}]",
        ));
    };
    if values.len() > MAX_TOTAL_POINTS {
        return Err(refuse(format!(
            "data.values has {} rows; at most {MAX_TOTAL_POINTS}",
            values.len()
        )));
    }
    values
        .iter()
        .enumerate()
        .map(|(index, row)| match row {
            Value::Object(row) => Ok(row.clone()),
            _ => Err(refuse(format!(
                "data.values[{index}] must be an object like {{\"q\": \"Q1\", \"v\": 120}}"
            ))),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Bar,
    Line,
    Area,
    Point,
    Arc,
}

const MARK_PROPERTIES: [&str; 7] = [
    "type",
    "tooltip",
    "point",
    "innerRadius",
    "outerRadius",
    "clip",
    "interpolate",
];

/// The mark, and for arcs whether it has a hole (a donut).
fn mark(value: Option<&Value>) -> Result<(Mark, bool), SpecError> {
    let (name, properties) = match value {
        Some(Value::String(name)) => (name.as_str(), None),
        Some(Value::Object(object)) => match object.get("type") {
            Some(Value::String(name)) => (name.as_str(), Some(object)),
            _ => return Err(refuse("mark.type must name the mark, e.g. \"bar\"")),
        },
        None => return Err(refuse("missing mark: one of bar, line, area, point, arc")),
        Some(_) => {
            return Err(refuse(
                "mark must be a name like \"bar\" or {\"type\": \"bar\"}",
            ));
        }
    };
    let mark = match name {
        "bar" => Mark::Bar,
        "line" => Mark::Line,
        "area" => Mark::Area,
        "point" | "circle" => Mark::Point,
        "arc" => Mark::Arc,
        "image" => {
            return Err(refuse(
                "mark \"image\" is not supported: rendering never loads images from URLs",
            ));
        }
        other => {
            return Err(refuse(format!(
                "mark \"{}\" is not supported; use bar, line, area, point or arc",
                shown(other)
            )));
        }
    };
    let mut donut = false;
    for (key, value) in properties.into_iter().flatten() {
        if !MARK_PROPERTIES.contains(&key.as_str()) {
            return Err(refuse(format!(
                "mark.{} is not supported (supported: {})",
                shown(key),
                MARK_PROPERTIES.join(", ")
            )));
        }
        match key.as_str() {
            "interpolate" if value.as_str() != Some("linear") => {
                return Err(refuse(
                    "mark.interpolate other than \"linear\" is not supported",
                ));
            }
            "innerRadius" => donut = value.as_f64().is_some_and(|r| r > 0.0),
            _ => {}
        }
    }
    if donut && mark != Mark::Arc {
        return Err(refuse("mark.innerRadius applies to arc marks"));
    }
    Ok((mark, donut))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldType {
    Quantitative,
    Nominal,
    Ordinal,
    Temporal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Mean,
    Count,
    Min,
    Max,
}

/// How a channel's categories are ordered.
#[derive(Debug, Clone, PartialEq)]
enum Sort {
    Ascending,
    Descending,
    /// Data order (`"sort": null`).
    None,
    Listed(Vec<String>),
    /// By the measure's total, ascending or descending (`"y"`, `"-y"`, …).
    ByValue {
        descending: bool,
    },
}

/// One encoding channel.
#[derive(Debug, Clone)]
struct Channel {
    name: &'static str,
    field: Option<String>,
    kind: FieldType,
    aggregate: Option<Aggregate>,
    /// The axis or legend title: None for the default, Some(None) when switched off.
    title: Option<Option<String>>,
    format: Option<NumberFormat>,
    domain: Option<(f64, f64)>,
    zero: bool,
    sort: Sort,
    /// `stack`: None for the default, Some(false) for null/false, Some(true) for "zero"/true.
    stack: Option<bool>,
    legend: Option<LegendPosition>,
}

const CHANNEL_PROPERTIES: [&str; 10] = [
    "field",
    "type",
    "aggregate",
    "title",
    "axis",
    "legend",
    "scale",
    "sort",
    "stack",
    "timeUnit",
];

impl Channel {
    fn read(name: &'static str, value: &Value) -> Result<Self, SpecError> {
        let Value::Object(object) = value else {
            return Err(refuse(format!(
                "encoding.{name} must be an object like {{\"field\": \"sales\", \"type\": \
                 \"quantitative\"}}"
            )));
        };
        for key in object.keys() {
            if !CHANNEL_PROPERTIES.contains(&key.as_str()) {
                let hint = match key.as_str() {
                    "value" | "datum" => "; constant channels are not supported",
                    "bin" => "; send the binned counts as rows instead",
                    _ => "",
                };
                return Err(refuse(format!(
                    "encoding.{name}.{} is not supported{hint}",
                    shown(key)
                )));
            }
        }
        if object.contains_key("timeUnit") {
            return Err(refuse(format!(
                "encoding.{name}.timeUnit is not supported; send dates at the precision to draw \
                 (e.g. \"2024-03-01\") with \"type\": \"temporal\", or labels with \"type\": \
                 \"ordinal\""
            )));
        }
        let field = match object.get("field") {
            None => None,
            Some(Value::String(field)) => Some(field.clone()),
            Some(_) => return Err(refuse(format!("encoding.{name}.field must be text"))),
        };
        let aggregate = match object.get("aggregate") {
            None => None,
            Some(Value::String(op)) => Some(match op.as_str() {
                "sum" => Aggregate::Sum,
                "mean" | "average" => Aggregate::Mean,
                "count" => Aggregate::Count,
                "min" => Aggregate::Min,
                "max" => Aggregate::Max,
                other => {
                    return Err(refuse(format!(
                        "encoding.{name}.aggregate \"{}\" is not supported; use sum, mean, \
                         count, min or max",
                        shown(other)
                    )));
                }
            }),
            Some(_) => {
                return Err(refuse(format!(
                    "encoding.{name}.aggregate must be a name like \"sum\""
                )));
            }
        };
        if field.is_none() && aggregate != Some(Aggregate::Count) {
            return Err(refuse(format!(
                "encoding.{name} needs a field (or \"aggregate\": \"count\")"
            )));
        }
        let kind = match object.get("type").and_then(Value::as_str) {
            Some("quantitative") => FieldType::Quantitative,
            Some("nominal") => FieldType::Nominal,
            Some("ordinal") => FieldType::Ordinal,
            Some("temporal") => FieldType::Temporal,
            None if aggregate == Some(Aggregate::Count) => FieldType::Quantitative,
            None => {
                return Err(refuse(format!(
                    "encoding.{name}.type is missing: quantitative, nominal, ordinal or temporal"
                )));
            }
            Some(other) => {
                return Err(refuse(format!(
                    "encoding.{name}.type \"{}\" is not supported; use quantitative, nominal, \
                     ordinal or temporal",
                    shown(other)
                )));
            }
        };
        let mut channel = Self {
            name,
            field,
            kind,
            aggregate,
            title: None,
            format: None,
            domain: None,
            zero: true,
            sort: Sort::Ascending,
            stack: None,
            legend: None,
        };
        if let Some(title) = object.get("title") {
            channel.title = Some(title_text(name, "title", title)?);
        }
        channel.read_axis(object.get("axis"))?;
        channel.read_legend(object.get("legend"))?;
        channel.read_scale(object.get("scale"))?;
        channel.read_sort(object.get("sort"))?;
        channel.stack = match object.get("stack") {
            None => None,
            Some(Value::Null | Value::Bool(false)) => Some(false),
            Some(Value::Bool(true)) => Some(true),
            Some(Value::String(mode)) if mode == "zero" => Some(true),
            Some(other) => {
                return Err(refuse(format!(
                    "encoding.{name}.stack {} is not supported; leave it out (stacked) or null",
                    shown(&other.to_string())
                )));
            }
        };
        Ok(channel)
    }

    fn read_axis(&mut self, axis: Option<&Value>) -> Result<(), SpecError> {
        let name = self.name;
        match axis {
            None => Ok(()),
            Some(Value::Null) => Err(refuse(format!(
                "encoding.{name}.axis null (no axis) is not supported"
            ))),
            Some(Value::Object(axis)) => {
                for (key, value) in axis {
                    match key.as_str() {
                        "title" => self.title = Some(title_text(name, "axis.title", value)?),
                        "format" => self.format = Some(number_format(name, value)?),
                        // Labels stay horizontal (overlapping ones are thinned out instead).
                        "labelAngle" | "grid" | "tickCount" => {}
                        other => {
                            return Err(refuse(format!(
                                "encoding.{name}.axis.{} is not supported (supported: title, \
                                 format)",
                                shown(other)
                            )));
                        }
                    }
                }
                Ok(())
            }
            Some(_) => Err(refuse(format!("encoding.{name}.axis must be an object"))),
        }
    }

    fn read_legend(&mut self, legend: Option<&Value>) -> Result<(), SpecError> {
        let name = self.name;
        match legend {
            None => Ok(()),
            Some(Value::Null) => {
                self.legend = Some(LegendPosition::None);
                Ok(())
            }
            Some(Value::Object(legend)) => {
                for (key, value) in legend {
                    match (key.as_str(), value.as_str()) {
                        // Legends are drawn without a title.
                        ("title", _) => {}
                        ("orient", Some("right")) => self.legend = Some(LegendPosition::Right),
                        ("orient", Some("top")) => self.legend = Some(LegendPosition::Top),
                        ("orient", Some("bottom")) => self.legend = Some(LegendPosition::Bottom),
                        ("orient", Some("none")) => self.legend = Some(LegendPosition::None),
                        ("orient", _) => {
                            return Err(refuse(format!(
                                "encoding.{name}.legend.orient must be right, top, bottom or none"
                            )));
                        }
                        (other, _) => {
                            return Err(refuse(format!(
                                "encoding.{name}.legend.{} is not supported (supported: orient)",
                                shown(other)
                            )));
                        }
                    }
                }
                Ok(())
            }
            Some(_) => Err(refuse(format!(
                "encoding.{name}.legend must be an object or null"
            ))),
        }
    }

    fn read_scale(&mut self, scale: Option<&Value>) -> Result<(), SpecError> {
        let name = self.name;
        let Some(scale) = scale else {
            return Ok(());
        };
        let Value::Object(scale) = scale else {
            return Err(refuse(format!("encoding.{name}.scale must be an object")));
        };
        for (key, value) in scale {
            match key.as_str() {
                "zero" => self.zero = value.as_bool().unwrap_or(true),
                "domain" => {
                    let bounds = value.as_array().and_then(|pair| match pair.as_slice() {
                        [low, high] => Some((low.as_f64()?, high.as_f64()?)),
                        _ => None,
                    });
                    match bounds {
                        Some((low, high)) if self.kind == FieldType::Quantitative && low < high => {
                            self.domain = Some((low, high));
                        }
                        _ => {
                            return Err(refuse(format!(
                                "encoding.{name}.scale.domain is supported only as [min, max] \
                                 of a quantitative field"
                            )));
                        }
                    }
                }
                other => {
                    return Err(refuse(format!(
                        "encoding.{name}.scale.{} is not supported (supported: domain, zero)",
                        shown(other)
                    )));
                }
            }
        }
        Ok(())
    }

    fn read_sort(&mut self, sort: Option<&Value>) -> Result<(), SpecError> {
        let name = self.name;
        self.sort = match sort {
            None => Sort::Ascending,
            Some(Value::Null) => Sort::None,
            Some(Value::String(order)) => match order.as_str() {
                "ascending" => Sort::Ascending,
                "descending" => Sort::Descending,
                "x" | "y" | "theta" => Sort::ByValue { descending: false },
                "-x" | "-y" | "-theta" => Sort::ByValue { descending: true },
                other => {
                    return Err(refuse(format!(
                        "encoding.{name}.sort \"{}\" is not supported",
                        shown(other)
                    )));
                }
            },
            Some(Value::Array(values)) => Sort::Listed(values.iter().map(label_of).collect()),
            Some(_) => {
                return Err(refuse(format!(
                    "encoding.{name}.sort is supported as \"ascending\", \"descending\", \"-y\", \
                     null or a list of values"
                )));
            }
        };
        Ok(())
    }

    fn is_discrete(&self) -> bool {
        matches!(self.kind, FieldType::Nominal | FieldType::Ordinal)
    }

    /// The default axis title Vega-Lite writes: the field, or "Sum of field", "Count of Records".
    fn axis_title(&self) -> Option<String> {
        if let Some(title) = &self.title {
            return title.clone();
        }
        let field = self.field.clone().unwrap_or_default();
        Some(match self.aggregate {
            None => field,
            Some(Aggregate::Count) => "Count of Records".to_owned(),
            Some(Aggregate::Sum) => format!("Sum of {field}"),
            Some(Aggregate::Mean) => format!("Average of {field}"),
            Some(Aggregate::Min) => format!("Min of {field}"),
            Some(Aggregate::Max) => format!("Max of {field}"),
        })
    }
}

fn title_text(channel: &str, key: &str, value: &Value) -> Result<Option<String>, SpecError> {
    match value {
        Value::Null => Ok(None),
        Value::String(text) => Ok(Some(text.clone())),
        _ => Err(refuse(format!(
            "encoding.{channel}.{key} must be text or null"
        ))),
    }
}

/// A d3-format string as one of our number formats.
fn number_format(channel: &str, value: &Value) -> Result<NumberFormat, SpecError> {
    let format = value.as_str().unwrap_or_default();
    if format.contains('%') {
        Ok(NumberFormat::Percent)
    } else if format.ends_with('s') {
        Ok(NumberFormat::Compact)
    } else if format.starts_with(',') {
        Ok(NumberFormat::Thousands)
    } else if format.is_empty() || format == "d" || format == "~g" {
        Ok(NumberFormat::Auto)
    } else {
        Err(refuse(format!(
            "encoding.{channel}.axis.format {} is not supported; use \",\" (thousands), \
             \".0%\" (percent) or \"~s\" (compact)",
            shown(&value.to_string())
        )))
    }
}

/// The channels of the encoding.
struct Channels {
    x: Option<Channel>,
    y: Option<Channel>,
    color: Option<Channel>,
    theta: Option<Channel>,
    x_offset: Option<Channel>,
}

impl Channels {
    fn read(encoding: &Map<String, Value>) -> Result<Self, SpecError> {
        let mut channels = Self {
            x: None,
            y: None,
            color: None,
            theta: None,
            x_offset: None,
        };
        for (key, value) in encoding {
            match key.as_str() {
                "x" => channels.x = Some(Channel::read("x", value)?),
                "y" => channels.y = Some(Channel::read("y", value)?),
                "color" => channels.color = Some(Channel::read("color", value)?),
                "theta" => channels.theta = Some(Channel::read("theta", value)?),
                "xOffset" => channels.x_offset = Some(Channel::read("xOffset", value)?),
                // A static image shows no tooltips.
                "tooltip" => {}
                "fill" => {
                    return Err(refuse("encoding.fill is not supported; use encoding.color"));
                }
                other => {
                    return Err(refuse(format!(
                        "encoding.{} is not supported (supported: x, y, color, theta, xOffset)",
                        shown(other)
                    )));
                }
            }
        }
        if let Some(color) = &channels.color
            && !color.is_discrete()
        {
            return Err(refuse(
                "encoding.color must be nominal or ordinal (a continuous color scale is not \
                 supported)",
            ));
        }
        Ok(channels)
    }
}

/// A cell's value as a category label: text as it is, numbers and booleans as JSON writes them.
fn label_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// A cell's value as a number: JSON numbers, and numeric text (as Vega-Lite's parser reads it).
fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok().filter(|v: &f64| v.is_finite()),
        _ => None,
    }
}

/// Reads the measure of `row` for `channel`: None when the row has no usable value (Vega-Lite
/// drops such rows), an error when the value is of the wrong kind.
fn measure(
    channel: &Channel,
    row: &Map<String, Value>,
    index: usize,
) -> Result<Option<f64>, SpecError> {
    let Some(field) = &channel.field else {
        return Ok(Some(1.0));
    };
    match row.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(value) if channel.aggregate == Some(Aggregate::Count) => {
            let _ = value;
            Ok(Some(1.0))
        }
        Some(value) => number_of(value).map(Some).ok_or_else(|| {
            refuse(format!(
                "data.values[{index}].{}: expected a number for the quantitative field, got {}",
                shown(field),
                shown(&value.to_string())
            ))
        }),
    }
}

/// Reads the x value of `row` for a dimension channel: a label, a time, or a number.
fn dimension(
    channel: &Channel,
    row: &Map<String, Value>,
    index: usize,
) -> Result<Option<XInput>, SpecError> {
    let Some(field) = &channel.field else {
        return Err(refuse(format!("encoding.{} needs a field", channel.name)));
    };
    let Some(value) = row.get(field).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let wrong = |expected: &str| {
        refuse(format!(
            "data.values[{index}].{}: expected {expected}, got {}",
            shown(field),
            shown(&value.to_string())
        ))
    };
    match channel.kind {
        FieldType::Nominal | FieldType::Ordinal => Ok(Some(XInput::Text(label_of(value)))),
        FieldType::Quantitative => number_of(value)
            .map(|v| Some(XInput::Number(v)))
            .ok_or_else(|| wrong("a number")),
        FieldType::Temporal => match value {
            Value::String(text) if time::parse(text).is_some() => {
                Ok(Some(XInput::Text(text.trim().to_owned())))
            }
            // Vega-Lite reads numbers as milliseconds since the epoch.
            Value::Number(number) => number
                .as_i64()
                .map(|millis| Some(XInput::Text(time::format_iso(millis, false))))
                .ok_or_else(|| wrong("an ISO 8601 date like \"2024-03-01\"")),
            _ => Err(wrong("an ISO 8601 date like \"2024-03-01\"")),
        },
    }
}

/// Sums, means, counts, mins or maxes values per key, keeping the keys' first-seen order.
struct Groups<K> {
    keys: Vec<K>,
    index: HashMap<K, usize>,
    values: Vec<(f64, usize, f64, f64)>,
}

impl<K: std::hash::Hash + Eq + Clone> Groups<K> {
    fn new() -> Self {
        Self {
            keys: Vec::new(),
            index: HashMap::new(),
            values: Vec::new(),
        }
    }

    fn add(&mut self, key: K, value: f64) {
        let next = self.keys.len();
        let at = *self.index.entry(key.clone()).or_insert(next);
        if at == next {
            self.keys.push(key);
            self.values.push((0.0, 0, f64::INFINITY, f64::NEG_INFINITY));
        }
        let entry = &mut self.values[at];
        entry.0 += value;
        entry.1 += 1;
        entry.2 = entry.2.min(value);
        entry.3 = entry.3.max(value);
    }

    fn result(&self, at: usize, aggregate: Aggregate) -> f64 {
        let (sum, count, min, max) = self.values[at];
        #[allow(clippy::cast_precision_loss)] // at most MAX_TOTAL_POINTS
        match aggregate {
            Aggregate::Sum => sum,
            Aggregate::Mean => sum / count.max(1) as f64,
            Aggregate::Count => count as f64,
            Aggregate::Min => min,
            Aggregate::Max => max,
        }
    }
}

/// Orders `labels` as `sort` says; `totals` gives each label's measure for value sorts.
fn order_labels(labels: &mut [String], sort: &Sort, totals: &HashMap<String, f64>) {
    match sort {
        Sort::None => {}
        Sort::Ascending => labels.sort_by(|a, b| natural(a, b)),
        Sort::Descending => labels.sort_by(|a, b| natural(b, a)),
        Sort::ByValue { descending } => {
            let total = |label: &String| totals.get(label).copied().unwrap_or(0.0);
            labels.sort_by(|a, b| {
                let order = total(a).total_cmp(&total(b));
                if *descending { order.reverse() } else { order }
            });
        }
        Sort::Listed(listed) => {
            let position =
                |label: &String| listed.iter().position(|l| l == label).unwrap_or(usize::MAX);
            // Stable: labels not listed keep their order, after the listed ones.
            labels.sort_by_key(position);
        }
    }
}

/// Numbers in numeric order, text in text order (numbers first), as Vega-Lite sorts a domain.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<f64>(), b.parse::<f64>()) {
        (Ok(a), Ok(b)) => a.total_cmp(&b),
        (Ok(_), Err(_)) => std::cmp::Ordering::Less,
        (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

fn base_chart(kind: ChartKind, title: Option<String>) -> ChartInput {
    ChartInput {
        kind,
        title,
        x_label: None,
        y_label: None,
        series: Vec::new(),
        x_type: None,
        categories: None,
        stacked: false,
        horizontal: false,
        y_format: NumberFormat::Auto,
        y_min: None,
        y_max: None,
        legend: LegendPosition::Right,
        theme: super::spec::Theme::Light,
        palette: super::spec::Palette::Default,
    }
}

fn arc_chart(
    channels: &Channels,
    rows: &[Map<String, Value>],
    donut: bool,
    title: Option<String>,
) -> Result<ChartInput, SpecError> {
    for (name, present) in [("x", channels.x.is_some()), ("y", channels.y.is_some())] {
        if present {
            return Err(refuse(format!(
                "encoding.{name} does not apply to arc marks; use theta (the value) and color \
                 (the slices)"
            )));
        }
    }
    let (Some(theta), Some(color)) = (&channels.theta, &channels.color) else {
        return Err(refuse(
            "an arc mark needs theta (the value) and color (the slices), e.g. \"theta\": \
             {\"field\": \"v\", \"type\": \"quantitative\"}, \"color\": {\"field\": \"k\", \
             \"type\": \"nominal\"}",
        ));
    };
    if theta.kind != FieldType::Quantitative {
        return Err(refuse("encoding.theta must be quantitative"));
    }
    let mut groups = Groups::new();
    for (index, row) in rows.iter().enumerate() {
        let Some(slice) = dimension(color, row, index)? else {
            continue;
        };
        let Some(value) = measure(theta, row, index)? else {
            continue;
        };
        let XInput::Text(label) = slice else {
            continue;
        };
        groups.add(label, value);
    }
    let aggregate = theta.aggregate.unwrap_or(Aggregate::Sum);
    let totals: HashMap<String, f64> = groups
        .keys
        .iter()
        .enumerate()
        .map(|(at, key)| (key.clone(), groups.result(at, aggregate)))
        .collect();
    let mut labels = groups.keys.clone();
    order_labels(&mut labels, &color.sort, &totals);
    let mut chart = base_chart(
        if donut {
            ChartKind::Donut
        } else {
            ChartKind::Pie
        },
        title,
    );
    chart.legend = color.legend.unwrap_or_default();
    chart.series = vec![SeriesInput {
        name: theta.axis_title().unwrap_or_else(|| "value".to_owned()),
        points: labels
            .into_iter()
            .map(|label| {
                let value = totals.get(&label).copied().unwrap_or(0.0);
                (XInput::Text(label), value)
            })
            .collect(),
    }];
    if chart.series[0].points.is_empty() {
        return Err(refuse(
            "no row of data.values has both the theta and the color field",
        ));
    }
    Ok(chart)
}

fn xy_chart(
    mark: Mark,
    channels: &Channels,
    rows: &[Map<String, Value>],
    title: Option<String>,
) -> Result<ChartInput, SpecError> {
    if channels.theta.is_some() {
        return Err(refuse("encoding.theta applies to arc marks only"));
    }
    let (Some(x), Some(y)) = (&channels.x, &channels.y) else {
        return Err(refuse(
            "this mark needs both x and y encodings, e.g. \"x\": {\"field\": \"q\", \"type\": \
             \"nominal\"}, \"y\": {\"field\": \"v\", \"type\": \"quantitative\"}",
        ));
    };
    // The measure is the quantitative channel; with two, y (the usual case).
    let horizontal = x.kind == FieldType::Quantitative && y.kind != FieldType::Quantitative;
    let (dimension_channel, measure_channel) = if horizontal { (y, x) } else { (x, y) };
    if measure_channel.kind != FieldType::Quantitative {
        return Err(refuse(
            "one of x and y must be quantitative (the value to draw)",
        ));
    }
    if horizontal && mark != Mark::Bar {
        return Err(refuse(
            "a quantitative x with a nominal or temporal y is supported for bar marks only",
        ));
    }
    if dimension_channel.aggregate.is_some() {
        return Err(refuse(format!(
            "encoding.{}.aggregate: only the quantitative channel may be aggregated",
            dimension_channel.name
        )));
    }
    let kind = match mark {
        Mark::Bar => ChartKind::Bar,
        Mark::Line => ChartKind::Line,
        Mark::Area => ChartKind::Area,
        Mark::Point | Mark::Arc => ChartKind::Scatter,
    };
    let color = channels.color.as_ref();
    if let Some(offset) = &channels.x_offset
        && (mark != Mark::Bar || color.and_then(|c| c.field.as_ref()) != offset.field.as_ref())
    {
        return Err(refuse(
            "encoding.xOffset is supported for grouped bars, with the same field as color",
        ));
    }
    // Vega-Lite stacks bars and areas split by color unless told not to.
    let stack = measure_channel.stack;
    let stacked = color.is_some()
        && matches!(mark, Mark::Bar | Mark::Area)
        && channels.x_offset.is_none()
        && stack != Some(false);
    if mark == Mark::Bar && color.is_some() && channels.x_offset.is_none() && stack == Some(false) {
        return Err(refuse(format!(
            "encoding.{}.stack null (overlapping bars) is not supported; leave it out for \
             stacked bars, or add \"xOffset\": {{\"field\": …}} (the color field) for grouped bars",
            measure_channel.name
        )));
    }
    // Bars and areas add up rows at the same place; lines and points draw every row, unless
    // the spec asks for an aggregate.
    let aggregate = measure_channel.aggregate.or(match mark {
        Mark::Bar | Mark::Area => Some(Aggregate::Sum),
        _ => None,
    });

    let mut groups: Groups<(String, XKey)> = Groups::new();
    let mut raw: Vec<(String, XInput, f64)> = Vec::new();
    let mut series_order: Vec<String> = Vec::new();
    let mut dimension_order: Vec<String> = Vec::new();
    let mut seen_dimension: HashMap<String, ()> = HashMap::new();
    let mut totals: HashMap<String, f64> = HashMap::new();
    let default_series = measure_channel
        .axis_title()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "value".to_owned());
    for (index, row) in rows.iter().enumerate() {
        let Some(at) = dimension(dimension_channel, row, index)? else {
            continue;
        };
        let Some(value) = measure(measure_channel, row, index)? else {
            continue;
        };
        let series = match color {
            Some(color) => match dimension(color, row, index)? {
                Some(XInput::Text(name)) => name,
                _ => continue,
            },
            None => default_series.clone(),
        };
        if !series_order.contains(&series) {
            if series_order.len() == MAX_SERIES {
                return Err(refuse(format!(
                    "the color field has more than {MAX_SERIES} values; at most {MAX_SERIES} \
                     series can be told apart"
                )));
            }
            series_order.push(series.clone());
        }
        let key = XKey::of(&at);
        if let XInput::Text(label) = &at
            && seen_dimension.insert(label.clone(), ()).is_none()
        {
            dimension_order.push(label.clone());
        }
        if let XInput::Text(label) = &at {
            *totals.entry(label.clone()).or_insert(0.0) += value;
        }
        match aggregate {
            Some(_) => groups.add((series, key), value),
            None => raw.push((series, at, value)),
        }
    }
    if series_order.is_empty() {
        return Err(refuse(
            "no row of data.values has both the x and the y field (check the field names)",
        ));
    }
    if let Some(color) = color {
        let no_totals = HashMap::new();
        order_labels(&mut series_order, &color.sort, &no_totals);
    }
    let mut chart = base_chart(kind, title);
    let mut points: HashMap<String, Vec<(XInput, f64)>> = HashMap::new();
    match aggregate {
        Some(aggregate) => {
            for (at, (series, key)) in groups.keys.iter().enumerate() {
                points
                    .entry(series.clone())
                    .or_default()
                    .push((key.input(), groups.result(at, aggregate)));
            }
        }
        None => {
            for (series, at, value) in raw {
                points.entry(series).or_default().push((at, value));
            }
        }
    }
    chart.series = series_order
        .iter()
        .map(|name| SeriesInput {
            name: name.clone(),
            points: points.remove(name).unwrap_or_default(),
        })
        .collect();
    chart.x_type = Some(match dimension_channel.kind {
        FieldType::Quantitative => XType::Number,
        FieldType::Temporal => XType::Time,
        FieldType::Nominal | FieldType::Ordinal => XType::Category,
    });
    if dimension_channel.is_discrete() {
        order_labels(&mut dimension_order, &dimension_channel.sort, &totals);
        chart.categories = Some(dimension_order);
    }
    chart.stacked = stacked;
    chart.horizontal = horizontal;
    chart.x_label = dimension_channel.axis_title();
    chart.y_label = measure_channel.axis_title();
    chart.y_format = measure_channel.format.unwrap_or_default();
    chart.legend = match color {
        None => LegendPosition::None,
        Some(color) => color.legend.unwrap_or_default(),
    };
    if let Some((low, high)) = measure_channel.domain {
        chart.y_min = Some(low);
        chart.y_max = Some(high);
    } else if measure_channel.zero && matches!(mark, Mark::Line | Mark::Point) {
        // Vega-Lite's quantitative scales include zero unless told otherwise (bars and areas
        // always do here).
        let values = chart
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1));
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(v), h.max(v))
        });
        if low >= 0.0 && high > 0.0 {
            chart.y_min = Some(0.0);
        } else if high <= 0.0 && low < 0.0 {
            chart.y_max = Some(0.0);
        }
    }
    Ok(chart)
}

/// An x value as a map key (f64 is not `Hash`; its bits are, and data values are never NaN).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum XKey {
    Number(u64),
    Text(String),
}

impl XKey {
    fn of(x: &XInput) -> Self {
        match x {
            XInput::Number(number) => Self::Number(number.to_bits()),
            XInput::Text(text) => Self::Text(text.clone()),
        }
    }

    fn input(&self) -> XInput {
        match self {
            Self::Number(bits) => XInput::Number(f64::from_bits(*bits)),
            Self::Text(text) => XInput::Text(text.clone()),
        }
    }
}
