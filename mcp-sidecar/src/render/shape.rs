//! The shape of a spec, checked on the JSON before serde reads it, so that a wrong shape is
//! answered with where it is, what belongs there and a one-line example: a model corrects
//! `chart.series[0].points[1]: expected [x, y] …; e.g. ["Q1", 120]` at once, while
//! `invalid type: string "Q1", expected f64` leaves it guessing. Only the common mistakes are
//! looked for here; whatever passes is read by serde, whose message then gets the example of
//! its kind appended ([`explain`]).

use serde_json::{Map, Value};

use super::spec::SpecError;

/// The kinds of spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Svg,
    Chart,
    VegaLite,
}

const CHART_EXAMPLE: &str = r#"{"kind": "chart", "chart": {"type": "bar", "title": "Sales", "series": [{"name": "2024", "points": [["Q1", 120], ["Q2", 130]]}]}}"#;
const PIE_EXAMPLE: &str = r#"{"kind": "chart", "chart": {"type": "pie", "series": [{"name": "share", "points": [["Apples", 30], ["Pears", 70]]}]}}"#;
const VEGA_LITE_EXAMPLE: &str = r#"{"kind": "vega-lite", "vega_lite": {"data": {"values": [{"q": "Q1", "v": 120}]}, "mark": "bar", "encoding": {"x": {"field": "q", "type": "nominal"}, "y": {"field": "v", "type": "quantitative"}}}}"#;
const SVG_EXAMPLE: &str = r#"{"kind": "svg", "svg": "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"100\" height=\"100\">…</svg>"}"#;
const POINT_SHAPE: &str = r#"expected [x, y] where x is a number, a category label like "Q1", or an ISO date like "2024-03-01", and y a number; e.g. ["Q1", 120]"#;
const CHART_TYPES: &str = r#""bar", "line", "area", "scatter", "pie" or "donut""#;

fn example(kind: Kind) -> &'static str {
    match kind {
        Kind::Svg => SVG_EXAMPLE,
        Kind::Chart => CHART_EXAMPLE,
        Kind::VegaLite => VEGA_LITE_EXAMPLE,
    }
}

/// A serde message about a spec of `kind`, with that kind's example.
pub fn explain(kind: Kind, message: &str) -> String {
    format!("{message}; e.g. {}", example(kind))
}

fn error(message: String) -> SpecError {
    SpecError(message)
}

/// Takes `kind` out of a spec: which kind it is, and the rest of the object.
pub fn split_kind(value: Value) -> Result<(Kind, Value), SpecError> {
    let Value::Object(mut object) = value else {
        return Err(error(format!(
            "the spec must be a JSON object with a \"kind\" of \"chart\", \"vega-lite\" or \
             \"svg\"; e.g. {CHART_EXAMPLE}"
        )));
    };
    let kind = match object.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(error(format!(
                "kind must be \"chart\", \"vega-lite\" or \"svg\", got {other}; e.g. {CHART_EXAMPLE}"
            )));
        }
        None if object.contains_key("mark") || object.contains_key("$schema") => {
            return Err(error(format!(
                "missing field `kind`: this looks like a Vega-Lite spec; send it as \
                 {{\"kind\": \"vega-lite\", \"vega_lite\": {{…the spec…}}}}, e.g. {VEGA_LITE_EXAMPLE}"
            )));
        }
        None if object.contains_key("series") || object.contains_key("type") => {
            return Err(error(format!(
                "missing field `kind`: a chart goes inside {{\"kind\": \"chart\", \"chart\": \
                 {{…}}}}, e.g. {CHART_EXAMPLE}"
            )));
        }
        None => {
            return Err(error(format!(
                "missing field `kind`: say what to render with \"kind\": \"chart\", \
                 \"vega-lite\" or \"svg\"; e.g. {CHART_EXAMPLE}"
            )));
        }
    };
    let kind = match kind.as_str() {
        "svg" => Kind::Svg,
        "chart" => Kind::Chart,
        "vega-lite" => Kind::VegaLite,
        "vegalite" | "vega_lite" | "vega" | "vl" => {
            return Err(error(format!(
                "unknown variant `{kind}`, expected `chart`, `vega-lite` or `svg`: a Vega-Lite \
                 spec is {VEGA_LITE_EXAMPLE}"
            )));
        }
        "pie" | "donut" => {
            return Err(error(format!(
                "unknown variant `{kind}`, expected `chart`, `vega-lite` or `svg`: a {kind} \
                 chart is {PIE_EXAMPLE}"
            )));
        }
        "bar" | "line" | "area" | "scatter" => {
            return Err(error(format!(
                "unknown variant `{kind}`, expected `chart`, `vega-lite` or `svg`: the chart \
                 type goes in chart.type, e.g. {}",
                CHART_EXAMPLE.replace("\"bar\"", &format!("\"{kind}\""))
            )));
        }
        _ => {
            let shown: String = kind.chars().take(40).collect();
            return Err(error(format!(
                "unknown variant `{shown}`, expected `chart`, `vega-lite` or `svg`; e.g. \
                 {CHART_EXAMPLE}"
            )));
        }
    };
    Ok((kind, Value::Object(object)))
}

/// The common mistakes in a chart spec's `chart`.
pub fn check_chart_spec(body: &Value) -> Result<(), SpecError> {
    let Some(chart) = body.get("chart") else {
        return Err(error(format!(
            "missing field `chart` (type, title, series); e.g. {CHART_EXAMPLE}"
        )));
    };
    let Value::Object(chart) = chart else {
        return Err(error(format!(
            "chart: expected an object with type and series; e.g. {CHART_EXAMPLE}"
        )));
    };
    match chart.get("type") {
        None => {
            return Err(error(format!(
                "chart.type: missing; one of {CHART_TYPES}; e.g. {CHART_EXAMPLE}"
            )));
        }
        Some(Value::String(kind))
            if matches!(
                kind.as_str(),
                "bar" | "line" | "area" | "scatter" | "pie" | "donut"
            ) => {}
        Some(other) => {
            let shown: String = other.to_string().chars().take(40).collect();
            return Err(error(format!(
                "chart.type: unknown variant `{shown}`, expected one of {CHART_TYPES} (stacked, \
                 grouped and horizontal bars are bar with \"stacked\": true or \"horizontal\": \
                 true)"
            )));
        }
    }
    check_series(chart)
}

fn check_series(chart: &Map<String, Value>) -> Result<(), SpecError> {
    let series_shape =
        r#"a list of series like [{"name": "sales", "points": [["Q1", 120], ["Q2", 130]]}]"#;
    let Some(series) = chart.get("series") else {
        return Err(error(format!(
            "chart.series: missing; expected {series_shape}"
        )));
    };
    let Value::Array(series) = series else {
        return Err(error(format!("chart.series: expected {series_shape}")));
    };
    for (s, one) in series.iter().enumerate() {
        let Value::Object(one) = one else {
            return Err(error(format!(
                "chart.series[{s}]: expected a series like {{\"name\": \"sales\", \"points\": \
                 [[\"Q1\", 120], [\"Q2\", 130]]}}"
            )));
        };
        if !matches!(one.get("name"), Some(Value::String(_))) {
            return Err(error(format!(
                "chart.series[{s}].name: expected the series' name as text, e.g. \"sales\""
            )));
        }
        let Some(Value::Array(points)) = one.get("points") else {
            return Err(error(format!(
                "chart.series[{s}].points: expected a list of [x, y] points, e.g. [[\"Q1\", \
                 120], [\"Q2\", 130]]"
            )));
        };
        for (p, point) in points.iter().enumerate() {
            let path = format!("chart.series[{s}].points[{p}]");
            match point {
                Value::Array(pair) if pair.len() == 2 => {
                    if !matches!(pair[0], Value::Number(_) | Value::String(_))
                        || !pair[1].is_number()
                    {
                        return Err(error(format!("{path}: {POINT_SHAPE}")));
                    }
                }
                Value::Array(other) => {
                    return Err(error(format!(
                        "{path}: invalid length {}, {POINT_SHAPE}",
                        other.len()
                    )));
                }
                _ => return Err(error(format!("{path}: {POINT_SHAPE}"))),
            }
        }
    }
    Ok(())
}

/// The common mistakes around a Vega-Lite spec (what is inside is checked when it is
/// translated, by [`super::vega_lite`]).
pub fn check_vega_lite_spec(body: &Value) -> Result<(), SpecError> {
    match body.get("vega_lite") {
        Some(Value::Object(_)) => Ok(()),
        Some(Value::String(_)) => Err(error(format!(
            "vega_lite: expected the Vega-Lite spec as a JSON object, not as a string; e.g. \
             {VEGA_LITE_EXAMPLE}"
        ))),
        Some(_) => Err(error(format!(
            "vega_lite: expected the Vega-Lite spec as a JSON object; e.g. {VEGA_LITE_EXAMPLE}"
        ))),
        None => Err(error(format!(
            "missing field `vega_lite` (the Vega-Lite spec); e.g. {VEGA_LITE_EXAMPLE}"
        ))),
    }
}
