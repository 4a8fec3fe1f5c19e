//! Charts as a person sees them: each chart type and option is drawn through the render stages
//! to a PNG and compared with a reference image checked in under `tests/fixtures/charts/`, with
//! a small per-pixel tolerance, so a font, layout or colour regression fails a test.
//!
//! The references were looked at by a person once. After an intended change in how charts
//! look, regenerate them with `UPDATE_GOLDEN=1 cargo test -p mcp-sidecar --test it -- charts::`,
//! look at the changed ones, and commit them with the change.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use mcp_sidecar::render::{
    Renderer, Work,
    spec::{RenderSpec, Stage},
};
use resvg::tiny_skia::Pixmap;
use serde_json::{Value, json};

/// A channel may differ by this much (font hinting, float rounding across platforms).
const CHANNEL_TOLERANCE: u8 = 24;
/// At most this share of pixels may differ by more than [`CHANNEL_TOLERANCE`].
const DIFFERING_PIXELS: f64 = 0.002;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/charts")
}

/// Runs every CPU stage, as a worker does, and returns the artifact's bytes.
pub fn render(spec: &RenderSpec) -> Vec<u8> {
    let renderer = Renderer::new();
    let mut work = Work::Spec(spec.clone());
    for stage in spec.stages().iter().filter(|s| **s != Stage::Uploading) {
        work = renderer.advance(*stage, work).unwrap();
    }
    match work {
        Work::Output(bytes) => bytes,
        _ => panic!("the stages end with the artifact's bytes"),
    }
}

/// Renders `spec` and compares it with `<name>.png`, or writes that file under UPDATE_GOLDEN.
fn assert_matches_golden(name: &str, spec: Value) {
    let spec = RenderSpec::from_json(spec).unwrap_or_else(|error| panic!("{name}: {error}"));
    let png = render(&spec);
    let path = fixtures().join(format!("{name}.png"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(fixtures()).unwrap();
        std::fs::write(&path, &png).unwrap();
        return;
    }
    let expected = Pixmap::load_png(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    let actual = Pixmap::decode_png(&png).unwrap();
    assert_eq!(
        (actual.width(), actual.height()),
        (expected.width(), expected.height()),
        "{name}: size"
    );
    let differing = actual
        .pixels()
        .iter()
        .zip(expected.pixels())
        .filter(|(a, e)| {
            let channels = |p: &resvg::tiny_skia::PremultipliedColorU8| {
                [p.red(), p.green(), p.blue(), p.alpha()]
            };
            channels(a)
                .iter()
                .zip(channels(e))
                .any(|(a, e)| a.abs_diff(e) > CHANNEL_TOLERANCE)
        })
        .count();
    #[allow(clippy::cast_precision_loss)]
    let share = differing as f64 / actual.pixels().len() as f64;
    if share > DIFFERING_PIXELS {
        let actual_path = std::env::temp_dir().join(format!("{name}.actual.png"));
        std::fs::write(&actual_path, &png).unwrap();
        panic!(
            "{name}: {differing} pixels ({:.2}%) differ from {}; this render is at {}",
            share * 100.0,
            path.display(),
            actual_path.display()
        );
    }
}

fn chart(chart: Value) -> Value {
    json!({"kind": "chart", "width": 400, "height": 260, "chart": chart})
}

/// Renders `spec` as SVG and compares it byte for byte with `<name>.svg` (or writes it under
/// UPDATE_GOLDEN): for specs whose drawing must not change at all.
fn assert_same_svg(name: &str, mut spec: Value) {
    spec["format"] = json!("svg");
    let spec = RenderSpec::from_json(spec).unwrap_or_else(|error| panic!("{name}: {error}"));
    let svg = String::from_utf8(render(&spec)).unwrap();
    let path = fixtures().join(format!("{name}.svg"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &svg).unwrap();
        return;
    }
    assert_eq!(svg, std::fs::read_to_string(&path).unwrap(), "{name}");
}

/// Specs that existed before categorical, time and the other chart types: they must keep
/// drawing exactly as they did.
#[test]
fn bar_and_line_charts_over_numbers_draw_as_they_always_did() {
    let bar = chart(
        json!({"type": "bar", "title": "Sales", "x_label": "year", "y_label": "units",
        "series": [{"name": "north", "points": [[2021, 5], [2022, 7.5], [2023, -2]]},
                   {"name": "south", "points": [[2021, 3], [2023, 4]]}]}),
    );
    let line = chart(json!({"type": "line", "title": "Temperature",
        "series": [{"name": "a", "points": [[0, 1], [1, 3], [2, 2.5], [3, 4]]},
                   {"name": "b", "points": [[0, 2], [1.5, 1], [3, 0.5]]}]}));
    assert_matches_golden("legacy_bar", bar.clone());
    assert_matches_golden("legacy_line", line.clone());
    assert_same_svg("legacy_bar", bar);
    assert_same_svg("legacy_line", line);
}

fn quarters(name: &str, values: [f64; 4]) -> Value {
    json!({"name": name, "points": [["Q1", values[0]], ["Q2", values[1]], ["Q3", values[2]], ["Q4", values[3]]]})
}

/// Every chart type and option, each against its reference image.
#[test]
fn each_chart_type_and_option_draws_as_its_reference() {
    let two = json!([
        quarters("2024", [120.0, 135.0, 150.0, 160.0]),
        quarters("2025", [130.0, 149.0, 171.0, 190.0])
    ]);
    let cases = [
        (
            "bar_categories",
            json!({"type": "bar", "title": "Revenue by quarter", "y_label": "EUR k", "series": two}),
        ),
        (
            "bar_stacked",
            json!({"type": "bar", "stacked": true, "title": "Stacked", "series": two}),
        ),
        (
            "bar_horizontal",
            json!({"type": "bar", "horizontal": true, "title": "Horizontal", "x_label": "quarter", "y_label": "EUR k", "series": two}),
        ),
        (
            "bar_dates",
            json!({"type": "bar", "title": "Monthly signups", "y_format": "thousands",
            "series": [{"name": "signups", "points": [["2024-01-01", 1200], ["2024-02-01", 2400], ["2024-03-01", 1800], ["2024-04-01", 3100]]}]}),
        ),
        (
            "line_time",
            json!({"type": "line", "title": "Daily visitors", "y_format": "compact",
            "series": [{"name": "web", "points": [["2024-03-01", 12000], ["2024-03-09", 18500], ["2024-03-17", 15200], ["2024-03-25", 24800], ["2024-04-02", 30100], ["2024-04-10", 27400]]},
                       {"name": "app", "points": [["2024-03-01", 8000], ["2024-03-17", 9100], ["2024-04-10", 21000]]}]}),
        ),
        (
            "line_categories_percent",
            json!({"type": "line", "title": "Conversion", "y_format": "percent", "y_min": 0, "y_max": 0.5,
            "series": [quarters("rate", [0.12, 0.18, 0.25, 0.31])]}),
        ),
        (
            "area_stacked",
            json!({"type": "area", "stacked": true, "title": "Traffic mix", "legend": "bottom",
            "series": [{"name": "search", "points": [[1, 3], [2, 4], [3, 6], [4, 5]]},
                       {"name": "direct", "points": [[1, 2], [2, 2], [3, 3], [4, 4]]},
                       {"name": "social", "points": [[1, 1], [2, 2], [3, 1], [4, 2]]}]}),
        ),
        (
            "area",
            json!({"type": "area", "title": "Area", "legend": "none", "series": [{"name": "a", "points": [[0, 1], [1, 3], [2, 2], [3, 4]]}]}),
        ),
        (
            "scatter",
            json!({"type": "scatter", "title": "Height vs weight", "x_label": "cm", "y_label": "kg",
            "series": [{"name": "group a", "points": [[160, 55], [165, 61], [170, 66], [175, 70], [180, 79]]},
                       {"name": "group b", "points": [[158, 50], [168, 58], [172, 62], [185, 88]]}]}),
        ),
        (
            "pie",
            json!({"type": "pie", "title": "Market share",
            "series": [{"name": "share", "points": [["Alpha", 45], ["Beta", 25], ["Gamma", 20], ["Delta", 10]]}]}),
        ),
        (
            "donut_dark_colorblind",
            json!({"type": "donut", "title": "Donut, dark, colour-blind safe", "theme": "dark", "palette": "colorblind", "legend": "bottom",
            "series": [{"name": "share", "points": [["Alpha", 45], ["Beta", 25], ["Gamma", 20], ["Delta", 10]]}]}),
        ),
        (
            "bar_dark_legend_top",
            json!({"type": "bar", "title": "Dark theme", "theme": "dark", "legend": "top", "palette": "colorblind", "series": two}),
        ),
    ];
    for (name, spec) in cases {
        assert_matches_golden(name, chart(spec));
    }
}

/// What should become of a Vega-Lite spec.
enum Expect {
    /// Rendered, as a chart of this type.
    Drawn(&'static str),
    /// Refused, with a message containing this.
    Refused(&'static str),
}

fn vega_lite(spec: Value) -> Value {
    json!({"kind": "vega-lite", "width": 400, "height": 260, "vega_lite": spec})
}

fn sales_rows() -> Value {
    json!([
        {"quarter": "Q1", "region": "north", "sales": 120}, {"quarter": "Q1", "region": "south", "sales": 90},
        {"quarter": "Q2", "region": "north", "sales": 135}, {"quarter": "Q2", "region": "south", "sales": 110},
        {"quarter": "Q3", "region": "north", "sales": 150}, {"quarter": "Q3", "region": "south", "sales": 95},
        {"quarter": "Q4", "region": "north", "sales": 160}, {"quarter": "Q4", "region": "south", "sales": 130}
    ])
}

/// Vega-Lite specs written the way language models write them, each drawn or refused with a
/// reason naming the unsupported part. The names starting `readme_` are the README's pictures.
fn vega_lite_table() -> Vec<(&'static str, Value, Expect)> {
    let schema = "https://vega.github.io/schema/vega-lite/v5.json";
    let q = |field: &str| json!({"field": field, "type": "quantitative"});
    let n = |field: &str| json!({"field": field, "type": "nominal"});
    let t = |field: &str| json!({"field": field, "type": "temporal"});
    let dates = json!([
        {"date": "2024-01-01", "price": 101.5, "symbol": "AAA"}, {"date": "2024-02-01", "price": 108.2, "symbol": "AAA"},
        {"date": "2024-03-01", "price": 104.9, "symbol": "AAA"}, {"date": "2024-04-01", "price": 119.3, "symbol": "AAA"},
        {"date": "2024-01-01", "price": 88.0, "symbol": "BBB"}, {"date": "2024-02-01", "price": 92.4, "symbol": "BBB"},
        {"date": "2024-03-01", "price": 99.1, "symbol": "BBB"}, {"date": "2024-04-01", "price": 97.6, "symbol": "BBB"}
    ]);
    let shares = json!([{"category": "Rent", "value": 1200}, {"category": "Food", "value": 450},
                        {"category": "Transport", "value": 200}, {"category": "Other", "value": 350}]);
    vec![
        (
            "bar",
            json!({"$schema": schema, "description": "Sales per quarter", "data": {"values": [
            {"quarter": "Q1", "sales": 120}, {"quarter": "Q2", "sales": 130}, {"quarter": "Q3", "sales": 155}]},
            "mark": "bar", "encoding": {"x": n("quarter"), "y": q("sales")}}),
            Expect::Drawn("bar"),
        ),
        (
            "readme_grouped_bar",
            json!({"$schema": schema, "title": "Sales by quarter and region",
            "data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": {"field": "quarter", "type": "ordinal", "title": "Quarter"},
                         "y": {"field": "sales", "type": "quantitative", "title": "Sales (k€)"},
                         "xOffset": n("region"), "color": n("region")}}),
            Expect::Drawn("bar"),
        ),
        (
            "stacked_bar",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": n("quarter"), "y": {"aggregate": "sum", "field": "sales", "type": "quantitative"}, "color": n("region")}}),
            Expect::Drawn("bar"),
        ),
        (
            "horizontal_bar",
            json!({"data": {"values": [{"lang": "Rust", "stars": 98}, {"lang": "Go", "stars": 120}, {"lang": "Zig", "stars": 35}]},
            "mark": {"type": "bar", "tooltip": true}, "encoding": {"y": {"field": "lang", "type": "nominal", "sort": "-x"}, "x": q("stars")}}),
            Expect::Drawn("bar"),
        ),
        (
            "readme_line_over_dates",
            json!({"$schema": schema, "title": "Closing price", "width": 400, "height": 260,
            "data": {"values": dates}, "mark": {"type": "line", "point": true},
            "encoding": {"x": {"field": "date", "type": "temporal", "title": "Month"}, "y": {"field": "price", "type": "quantitative", "scale": {"zero": false}}, "color": n("symbol")}}),
            Expect::Drawn("line"),
        ),
        (
            "line_datetime",
            json!({"data": {"values": [{"t": "2024-03-01T08:00:00Z", "v": 3}, {"t": "2024-03-01T12:00:00Z", "v": 7}, {"t": "2024-03-01T16:30:00Z", "v": 5}]},
            "mark": "line", "encoding": {"x": t("t"), "y": q("v")}}),
            Expect::Drawn("line"),
        ),
        (
            "area",
            json!({"data": {"values": dates}, "mark": "area",
            "encoding": {"x": t("date"), "y": q("price"), "color": n("symbol")}}),
            Expect::Drawn("area"),
        ),
        (
            "scatter",
            json!({"data": {"values": [{"h": 160, "w": 55}, {"h": 170, "w": 66}, {"h": 180, "w": 79}, {"h": 175, "w": 70}]},
            "mark": "point", "encoding": {"x": q("h"), "y": q("w")}}),
            Expect::Drawn("scatter"),
        ),
        (
            "scatter_circle_color",
            json!({"data": {"values": [{"x": 1, "y": 2, "g": "a"}, {"x": 2, "y": 3, "g": "b"}]},
            "mark": "circle", "encoding": {"x": q("x"), "y": q("y"), "color": n("g")}}),
            Expect::Drawn("scatter"),
        ),
        (
            "pie",
            json!({"$schema": schema, "data": {"values": shares}, "mark": "arc",
            "encoding": {"theta": q("value"), "color": n("category")}}),
            Expect::Drawn("pie"),
        ),
        (
            "readme_donut",
            json!({"$schema": schema, "title": "Monthly budget", "data": {"values": shares},
            "mark": {"type": "arc", "innerRadius": 50}, "encoding": {"theta": q("value"), "color": {"field": "category", "type": "nominal", "sort": null}}}),
            Expect::Drawn("donut"),
        ),
        (
            "aggregate_count",
            json!({"data": {"values": [{"fruit": "apple"}, {"fruit": "pear"}, {"fruit": "apple"}, {"fruit": "fig"}, {"fruit": "apple"}]},
            "mark": "bar", "encoding": {"x": n("fruit"), "y": {"aggregate": "count", "type": "quantitative"}}}),
            Expect::Drawn("bar"),
        ),
        (
            "aggregate_mean",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": n("region"), "y": {"aggregate": "mean", "field": "sales", "type": "quantitative", "axis": {"format": ",.0f"}}}}),
            Expect::Drawn("bar"),
        ),
        (
            "percent_axis",
            json!({"data": {"values": [{"m": "Jan", "r": 0.12}, {"m": "Feb", "r": 0.2}]}, "mark": "line",
            "encoding": {"x": {"field": "m", "type": "ordinal", "sort": null}, "y": {"field": "r", "type": "quantitative", "axis": {"format": ".0%"}}}}),
            Expect::Drawn("line"),
        ),
        (
            "data_url",
            json!({"data": {"url": "https://example.com/data.csv"}, "mark": "bar",
            "encoding": {"x": n("a"), "y": q("b")}}),
            Expect::Refused("data.url is not supported"),
        ),
        (
            "data_url_local_file",
            json!({"data": {"url": "file:///etc/passwd"}, "mark": "point",
            "encoding": {"x": q("a"), "y": q("b")}}),
            Expect::Refused("never fetches URLs or reads files"),
        ),
        (
            "transform",
            json!({"data": {"values": sales_rows()}, "transform": [{"filter": "datum.sales > 100"}], "mark": "bar",
            "encoding": {"x": n("quarter"), "y": q("sales")}}),
            Expect::Refused("`transform` is not supported"),
        ),
        (
            "layer",
            json!({"data": {"values": sales_rows()}, "layer": [{"mark": "bar"}, {"mark": "rule"}]}),
            Expect::Refused("`layer` is not supported"),
        ),
        (
            "facet",
            json!({"data": {"values": sales_rows()}, "facet": {"field": "region"}, "spec": {"mark": "bar"}}),
            Expect::Refused("`facet` is not supported"),
        ),
        (
            "image_mark",
            json!({"data": {"values": [{"u": "http://x/y.png"}]}, "mark": "image",
            "encoding": {"x": q("a"), "y": q("b")}}),
            Expect::Refused("mark \"image\" is not supported"),
        ),
        (
            "rect_mark",
            json!({"data": {"values": sales_rows()}, "mark": "rect",
            "encoding": {"x": n("quarter"), "y": n("region")}}),
            Expect::Refused("mark \"rect\" is not supported"),
        ),
        (
            "time_unit",
            json!({"data": {"values": dates}, "mark": "line",
            "encoding": {"x": {"field": "date", "type": "temporal", "timeUnit": "yearmonth"}, "y": q("price")}}),
            Expect::Refused("encoding.x.timeUnit is not supported"),
        ),
        (
            "size_channel",
            json!({"data": {"values": sales_rows()}, "mark": "point",
            "encoding": {"x": q("sales"), "y": q("sales"), "size": q("sales")}}),
            Expect::Refused("encoding.size is not supported"),
        ),
        (
            "bin",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": {"field": "sales", "type": "quantitative", "bin": true}, "y": {"aggregate": "count"}}}),
            Expect::Refused("encoding.x.bin is not supported"),
        ),
        (
            "median",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": n("region"), "y": {"aggregate": "median", "field": "sales", "type": "quantitative"}}}),
            Expect::Refused("aggregate \"median\" is not supported"),
        ),
        (
            "config",
            json!({"data": {"values": sales_rows()}, "mark": "bar", "config": {"view": {"stroke": null}},
            "encoding": {"x": n("quarter"), "y": q("sales")}}),
            Expect::Refused("`config` is not supported"),
        ),
        (
            "quantitative_color",
            json!({"data": {"values": sales_rows()}, "mark": "point",
            "encoding": {"x": n("quarter"), "y": q("sales"), "color": q("sales")}}),
            Expect::Refused("encoding.color must be nominal or ordinal"),
        ),
        (
            "layered_bars",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": n("quarter"), "y": {"field": "sales", "type": "quantitative", "stack": null}, "color": n("region")}}),
            Expect::Refused("stack null"),
        ),
        (
            "wrong_field",
            json!({"data": {"values": sales_rows()}, "mark": "bar",
            "encoding": {"x": n("month"), "y": q("sales")}}),
            Expect::Refused("check the field names"),
        ),
        (
            "text_in_number_field",
            json!({"data": {"values": [{"q": "Q1", "v": "a lot"}]}, "mark": "bar",
            "encoding": {"x": n("q"), "y": q("v")}}),
            Expect::Refused("data.values[0].v: expected a number"),
        ),
        (
            "not_a_date",
            json!({"data": {"values": [{"d": "March 1st", "v": 1}]}, "mark": "line",
            "encoding": {"x": t("d"), "y": q("v")}}),
            Expect::Refused("expected an ISO 8601 date"),
        ),
    ]
}

#[test]
fn vega_lite_specs_as_models_write_them_are_drawn_or_refused_by_name() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/charts");
    let table = vega_lite_table();
    assert!(table.len() >= 20);
    for (name, spec, expect) in table {
        let result = RenderSpec::from_json(vega_lite(spec));
        match (expect, result) {
            (Expect::Drawn(kind), Ok(spec)) => {
                let RenderSpec::Chart { chart, .. } = &spec else {
                    panic!("{name}: a Vega-Lite spec becomes a chart")
                };
                assert_eq!(chart.kind.name(), kind, "{name}");
                let png = render(&spec);
                let pixmap = Pixmap::decode_png(&png).unwrap();
                assert_eq!((pixmap.width(), pixmap.height()), (400, 260), "{name}");
                if let Some(picture) = name.strip_prefix("readme_") {
                    let path = docs.join(format!("{picture}.png"));
                    if update {
                        std::fs::create_dir_all(&docs).unwrap();
                        std::fs::write(&path, &png).unwrap();
                    }
                    assert!(path.exists(), "{}: the README's picture", path.display());
                }
            }
            (Expect::Drawn(_), Err(error)) => panic!("{name}: refused: {error}"),
            (Expect::Refused(reason), Ok(_)) => {
                panic!("{name}: drawn, expected refusal `{reason}`")
            }
            (Expect::Refused(reason), Err(error)) => {
                assert!(
                    error.to_string().contains(reason),
                    "{name}: `{error}` lacks `{reason}`"
                );
            }
        }
    }
}

/// The exact message a model gets for the shapes that used to fail with serde type errors.
#[test]
fn wrong_shapes_are_answered_with_the_expected_shape_and_an_example() {
    let error = RenderSpec::from_json(chart(json!({"type": "bar",
        "series": [{"name": "a", "points": [["Q1", 120], {"x": "Q2", "y": 130}]}]})))
    .unwrap_err()
    .to_string();
    assert!(
        error.contains(r#"chart.series[0].points[1]: expected [x, y] where x is a number, a category label like "Q1", or an ISO date like "2024-03-01", and y a number; e.g. ["Q1", 120]"#),
        "{error}"
    );
    let error = RenderSpec::from_json(json!({"kind": "pie"}))
        .unwrap_err()
        .to_string();
    assert!(error.contains(r#"{"type": "pie""#), "{error}");
    let quarters = RenderSpec::from_json(chart(json!({"type": "bar",
        "series": [{"name": "a", "points": [["Q1", 120], ["Q2", 130]]}]})));
    assert!(quarters.is_ok(), "the issue's first example now draws");
}
