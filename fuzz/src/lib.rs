//! The fuzzing harness: untrusted bytes through the same parsing, validation and render stages
//! a render worker runs, with checks on what comes out.
//!
//! Shared by the libFuzzer targets in `fuzz/fuzz_targets/` (nightly, see `scripts/fuzz`) and by
//! `mcp-sidecar/tests/it/fuzz_regressions.rs`, which includes this file with `#[path]` and replays
//! the seeds and every minimized finding on stable, so the code a finding went through is the
//! code its regression test runs.
//!
//! Invariants (a violation panics, which libFuzzer reports as a crash): no panic, no abort, no
//! stack overflow, no internal pipeline error. Refusals and render errors are fine. When a spec
//! is accepted, the worker must accept its stored JSON again; a chart's SVG must be well-formed
//! XML of the requested size; a PNG must decode to the size it was drawn at.
//!
//! Bounded cost: an input is drawn on at most [`MAX_DRAWN_PIXELS`]. A larger spec is drawn
//! scaled down, aspect ratio kept (see [`bounded`]): the same stages and checks with fewer
//! pixels, so a run stays fast while what the spec bounds already cap (area, and the guard's
//! budgets, which scale with it) is measured by the tests and benchmarks instead.

use std::{panic, thread};

use mcp_sidecar::render::{
    FONT_FAMILY, RenderError, Renderer, Work, chart,
    spec::{Dimensions, OutputKind, RenderSpec, RenderSpecInput, Stage},
};
use resvg::{tiny_skia, usvg::roxmltree};

/// Most pixels an input is drawn on (256 × 256): keeps one input well under a second.
pub const MAX_DRAWN_PIXELS: u64 = 256 * 256;
/// The canvas the `svg` target draws every document on.
pub const SVG_CANVAS: (u32, u32) = (256, 256);
/// Stack of the thread the stages run on: the sidecar's runtime threads' size (its
/// `main.rs` `THREAD_STACK_BYTES`), so a recursion the guard lets through overflows here as it
/// would in production.
pub const RENDER_THREAD_STACK: usize = 8 * 1024 * 1024;

/// What became of one input.
#[derive(Debug)]
pub enum Outcome {
    /// Refused before rendering (not JSON, not a spec, out of bounds), with the tool's message.
    Refused(String),
    /// A stage refused or failed the render, with the error the job would end with.
    Failed(RenderError),
    /// Every stage ran and produced an artifact of this kind and length.
    Rendered { output: OutputKind, bytes: usize },
}

/// `start_render`'s path, then the worker's: JSON arguments → validated spec → the canonical
/// JSON stored with the job → spec again → every stage to the artifact's bytes.
pub fn render_spec(renderer: &Renderer, data: &[u8]) -> Outcome {
    let input: RenderSpecInput = match serde_json::from_slice(data) {
        Ok(input) => input,
        Err(error) => return Outcome::Refused(error.to_string()),
    };
    let submitted = match RenderSpec::try_from(input) {
        Ok(spec) => spec,
        Err(error) => return Outcome::Refused(error.to_string()),
    };
    let stored = submitted.to_json();
    let value: serde_json::Value = serde_json::from_str(&stored)
        .unwrap_or_else(|error| panic!("the stored spec is not JSON ({error}): {stored}"));
    let spec = RenderSpec::from_json(value).unwrap_or_else(|error| {
        panic!("the worker refuses a spec start_render accepted ({error}): {stored}")
    });
    assert_eq!(
        (spec.stages(), spec.size(), spec.output()),
        (submitted.stages(), submitted.size(), submitted.output()),
        "the stored spec renders differently from the submitted one: {stored}"
    );
    // Chart layout at the requested size is cheap (text only); drawing happens below, bounded.
    if let RenderSpec::Chart { chart, size, .. } = &spec {
        check_chart_svg(&chart::chart_svg(chart, *size, FONT_FAMILY), *size);
    }
    run_stages(renderer, bounded(spec))
}

/// Any bytes as an SVG document (invalid UTF-8 replaced, as JSON transport would have to),
/// drawn on a [`SVG_CANVAS`] through the worker's stages: parsing (XML, guard, usvg, guard),
/// rasterizing, encoding.
pub fn render_svg(renderer: &Renderer, data: &[u8]) -> Outcome {
    let (width, height) = SVG_CANVAS;
    // The spec's own checks (size in bytes, "<svg" somewhere) are left out so that every input
    // reaches the parser; `render_spec` covers them.
    let spec = RenderSpec::Svg {
        svg: String::from_utf8_lossy(data).into_owned(),
        size: Dimensions::new(width, height).expect("the canvas is within the bounds"),
    };
    run_stages(renderer, spec)
}

/// `spec` with its size scaled down to at most [`MAX_DRAWN_PIXELS`], aspect ratio kept.
pub fn bounded(spec: RenderSpec) -> RenderSpec {
    let size = spec.size();
    let area = u64::from(size.width()) * u64::from(size.height());
    if area <= MAX_DRAWN_PIXELS {
        return spec;
    }
    #[allow(clippy::cast_precision_loss)] // both are at most 2^23
    let scale = (MAX_DRAWN_PIXELS as f64 / area as f64).sqrt();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // in 0..=4096
    let shrink = |side: u32| ((f64::from(side) * scale) as u32).max(1);
    let size = Dimensions::new(shrink(size.width()), shrink(size.height()))
        .expect("smaller than a valid size");
    match spec {
        RenderSpec::Svg { svg, .. } => RenderSpec::Svg { svg, size },
        RenderSpec::Chart { chart, format, .. } => RenderSpec::Chart {
            chart,
            size,
            format,
        },
    }
}

/// Runs every CPU stage as the worker does (each on a render thread; here all on one) and
/// checks the artifact; uploading is the artifact store's business.
fn run_stages(renderer: &Renderer, spec: RenderSpec) -> Outcome {
    let (stages, size, output) = (spec.stages(), spec.size(), spec.output());
    assert_eq!(
        stages.last(),
        Some(&Stage::Uploading),
        "every pipeline ends with the upload"
    );
    let result = on_render_thread(|| {
        let mut work = Work::Spec(spec);
        for stage in &stages[..stages.len() - 1] {
            work = renderer.advance(*stage, work)?;
        }
        match work {
            Work::Output(bytes) => Ok(bytes),
            _ => panic!("the stages before the upload must end with the artifact's bytes"),
        }
    });
    match result {
        Ok(bytes) => {
            check_artifact(output, &bytes, size);
            Outcome::Rendered {
                output,
                bytes: bytes.len(),
            }
        }
        Err(RenderError::Pipeline(stage)) => {
            panic!("internal error: stage {stage} got the wrong input")
        }
        Err(error) => Outcome::Failed(error),
    }
}

/// Runs `work` on a thread with the production stack size; its panic becomes the caller's.
fn on_render_thread<T: Send>(work: impl FnOnce() -> T + Send) -> T {
    thread::scope(|scope| {
        let thread = thread::Builder::new()
            .name("render".to_owned())
            .stack_size(RENDER_THREAD_STACK)
            .spawn_scoped(scope, work)
            .expect("a render thread starts");
        thread
            .join()
            .unwrap_or_else(|payload| panic::resume_unwind(payload))
    })
}

fn check_artifact(output: OutputKind, bytes: &[u8], size: Dimensions) {
    match output {
        OutputKind::Png => {
            let pixmap = tiny_skia::Pixmap::decode_png(bytes).expect("the PNG decodes");
            assert_eq!(
                (pixmap.width(), pixmap.height()),
                (size.width(), size.height()),
                "the PNG has the size it was drawn at"
            );
        }
        OutputKind::Svg => {
            let svg = std::str::from_utf8(bytes).expect("the chart SVG is UTF-8");
            check_chart_svg(svg, size);
        }
    }
}

/// A chart's SVG is well-formed XML (user text cannot break out of its element) whose root
/// is an `<svg>` of the requested size.
fn check_chart_svg(svg: &str, size: Dimensions) {
    let document = roxmltree::Document::parse(svg)
        .unwrap_or_else(|error| panic!("the chart SVG is not well-formed ({error}): {svg}"));
    let root = document.root_element();
    let (width, height) = (size.width().to_string(), size.height().to_string());
    assert_eq!(
        (
            root.tag_name().name(),
            root.attribute("width"),
            root.attribute("height")
        ),
        ("svg", Some(width.as_str()), Some(height.as_str())),
        "the chart SVG's root"
    );
}
