//! Rendering, the CPU stages of a render job: charts become SVG, SVG becomes pixels, pixels
//! become PNG. [`Renderer::advance`] runs one stage on the [`Work`] the stage before produced;
//! which stages a spec goes through is [`spec::RenderSpec::stages`]. The last stage, the upload,
//! is the worker's (`jobs::worker`), which also runs these stages on its render threads
//! (`jobs::pool`).
//!
//! Safety of untrusted SVG, in the order the checks run:
//! 1. the spec bounds (source size, output size in pixels) in [`spec`], checked when the spec
//!    is made, before the job is queued;
//! 2. XML parsing with roxmltree: no DTD at all (so no entity expansion, "billion laughs" and
//!    its quadratic cousins included) and a node budget, [`MAX_SVG_NODES`];
//! 3. [`guard::check_document`]: nesting, element, reference-chain and text limits, before usvg
//!    (which recurses) sees the document;
//! 4. usvg options that resolve nothing outside the document: no resources directory, no
//!    file or URL `href`s, only the bundled font (no system fonts), and embedded `data:`
//!    images only if they are PNG or JPEG whose header declares at most
//!    [`MAX_EMBEDDED_IMAGE_PIXELS`] (a decompression bomb is refused before decoding). The
//!    crate is built without `svgz`, so nothing is ever gunzipped;
//! 5. [`guard::check_tree`]: work budgets in device pixels for the size actually drawn.
//!
//! Charts ([`chart`]) are drawn by us, not sent to us: a chart wanted as SVG is never parsed,
//! and one wanted as PNG is parsed with the options of 4 only (1 bounds its data and size).

pub mod chart;
pub mod guard;
mod shape;
pub mod spec;
pub mod time;
pub mod vega_lite;

use std::sync::Arc;

use resvg::{
    tiny_skia,
    usvg::{self, ImageHrefResolver, ImageKind, fontdb},
};

use self::spec::{Dimensions, RenderSpec, Stage};

/// The family name of the one font all text is drawn with: DejaVu Sans, regular and bold, from
/// the `dejavu` crate, bundled into the binary so a bare container draws text exactly as a
/// laptop does. Charts name it; every other family an SVG names falls back to it.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// Most XML nodes (elements, text, comments, processing instructions) in an SVG document.
pub const MAX_SVG_NODES: usize = 100_000;
/// Largest embedded raster image, by its declared size, in pixels.
pub const MAX_EMBEDDED_IMAGE_PIXELS: u64 = 4_000_000;

/// Why a render stage failed. The job then fails with this message, and is not tried again:
/// the same spec would fail the same way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("the SVG is not valid: {0}")]
    InvalidSvg(String),
    #[error("the SVG is too complex: {0}")]
    TooComplex(String),
    #[error("the SVG has no size (width/height or viewBox) to scale from")]
    NoSize,
    #[error("cannot allocate a {0}×{1} image")]
    Allocation(u32, u32),
    #[error("PNG encoding failed: {0}")]
    Encoding(String),
    #[error("internal error: stage {0} got the wrong input")]
    Pipeline(&'static str),
}

/// What flows between stages.
pub enum Work {
    /// Not started: the validated spec.
    Spec(RenderSpec),
    /// A parsed document and the pixel size to draw it at.
    Document(Box<usvg::Tree>, Dimensions),
    /// Drawn pixels.
    Pixels(tiny_skia::Pixmap),
    /// The artifact's bytes, ready to upload.
    Output(Vec<u8>),
}

/// Holds what every render shares: a font database holding only the bundled font, from which
/// the safe usvg options (4 in the module docs) are made for each document.
pub struct Renderer {
    fonts: Arc<fontdb::Database>,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer").finish_non_exhaustive()
    }
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

impl Renderer {
    /// Loads the bundled font; never looks at the system's fonts.
    pub fn new() -> Self {
        // An empty database never scans the system's fonts.
        let mut fonts = fontdb::Database::new();
        for face in [dejavu::sans::regular(), dejavu::sans::bold()] {
            fonts.load_font_source(fontdb::Source::Binary(Arc::new(face)));
        }
        // usvg falls back to the generic families for unknown names: point them all at ours.
        fonts.set_serif_family(FONT_FAMILY);
        fonts.set_sans_serif_family(FONT_FAMILY);
        fonts.set_monospace_family(FONT_FAMILY);
        fonts.set_cursive_family(FONT_FAMILY);
        fonts.set_fantasy_family(FONT_FAMILY);
        Self {
            fonts: Arc::new(fonts),
        }
    }

    fn options(&self) -> usvg::Options<'static> {
        usvg::Options {
            resources_dir: None,
            font_family: FONT_FAMILY.to_owned(),
            fontdb: self.fonts.clone(),
            image_href_resolver: ImageHrefResolver {
                // File paths, file:, http(s): and other documents are never resolved.
                resolve_string: Box::new(|_href, _options| None),
                resolve_data: Box::new(|_mime, data, _options| embedded_image(data)),
            },
            ..usvg::Options::default()
        }
    }

    /// Runs one CPU stage of the pipeline on the work the stage before produced. A chart wanted
    /// as SVG is done after [`Stage::Charting`]. A stage given work it does not take (including
    /// [`Stage::Uploading`], which is the worker's) is a [`RenderError::Pipeline`] error.
    pub fn advance(&self, stage: Stage, work: Work) -> Result<Work, RenderError> {
        match (stage, work) {
            (
                Stage::Charting,
                Work::Spec(RenderSpec::Chart {
                    chart,
                    size,
                    format,
                }),
            ) => {
                let svg = chart::chart_svg(&chart, size, FONT_FAMILY);
                match format {
                    spec::ChartFormat::Svg => Ok(Work::Output(svg.into_bytes())),
                    spec::ChartFormat::Png => {
                        let tree = usvg::Tree::from_str(&svg, &self.options())
                            .map_err(|error| RenderError::InvalidSvg(error.to_string()))?;
                        Ok(Work::Document(Box::new(tree), size))
                    }
                }
            }
            (Stage::Parsing, Work::Spec(RenderSpec::Svg { svg, size })) => {
                let tree = self.parse_untrusted(&svg, size)?;
                Ok(Work::Document(Box::new(tree), size))
            }
            (Stage::Rasterizing, Work::Document(tree, size)) => {
                rasterize(&tree, size).map(Work::Pixels)
            }
            (Stage::Encoding, Work::Pixels(pixmap)) => encode_png(pixmap)
                .map(Work::Output)
                .map_err(|error| RenderError::Encoding(error.to_string())),
            (stage, _) => Err(RenderError::Pipeline(stage.name())),
        }
    }

    /// Parses an SVG from outside for drawing at `size`, with checks 2 to 5 of the module docs
    /// (1, the spec bounds, held when its spec was made).
    pub fn parse_untrusted(&self, svg: &str, size: Dimensions) -> Result<usvg::Tree, RenderError> {
        let xml_options = usvg::roxmltree::ParsingOptions {
            allow_dtd: false,
            nodes_limit: u32::try_from(MAX_SVG_NODES).unwrap_or(u32::MAX),
            ..usvg::roxmltree::ParsingOptions::default()
        };
        let document =
            usvg::roxmltree::Document::parse_with_options(svg, xml_options).map_err(|error| {
                match error {
                    usvg::roxmltree::Error::NodesLimitReached => {
                        RenderError::TooComplex(format!("more than {MAX_SVG_NODES} XML nodes"))
                    }
                    usvg::roxmltree::Error::DtdDetected => RenderError::InvalidSvg(
                        "DTDs (<!DOCTYPE … [ … ]>) are not accepted; remove the DOCTYPE".to_owned(),
                    ),
                    other => RenderError::InvalidSvg(other.to_string()),
                }
            })?;
        guard::check_document(&document)?;
        let tree = usvg::Tree::from_xmltree(&document, &self.options())
            .map_err(|error| RenderError::InvalidSvg(error.to_string()))?;
        guard::check_tree(&tree, fit(&tree, size)?, size.width(), size.height())?;
        Ok(tree)
    }
}

/// Accepts an embedded `data:` image only if it is a PNG or JPEG whose header declares a
/// bounded size; anything else (GIF, WebP, nested SVG, oversized) is left out of the drawing.
fn embedded_image(data: Arc<Vec<u8>>) -> Option<ImageKind> {
    let kind = imagesize::image_type(&data).ok()?;
    let size = imagesize::blob_size(&data).ok()?;
    let pixels = (size.width as u64).checked_mul(size.height as u64)?;
    if pixels == 0 || pixels > MAX_EMBEDDED_IMAGE_PIXELS {
        return None;
    }
    match kind {
        imagesize::ImageType::Png => Some(ImageKind::PNG(data)),
        imagesize::ImageType::Jpeg => Some(ImageKind::JPEG(data)),
        _ => None,
    }
}

/// The transform that draws `tree` scaled to fit `size`, aspect ratio kept, centred.
fn fit(tree: &usvg::Tree, size: Dimensions) -> Result<tiny_skia::Transform, RenderError> {
    let own = tree.size();
    if !(own.width() > 0.0 && own.height() > 0.0) {
        return Err(RenderError::NoSize);
    }
    // Dimensions are at most 4096, exactly representable as f32.
    #[allow(clippy::cast_precision_loss)]
    let (width, height) = (size.width() as f32, size.height() as f32);
    let scale = (width / own.width()).min(height / own.height());
    Ok(tiny_skia::Transform::from_row(
        scale,
        0.0,
        0.0,
        scale,
        (width - own.width() * scale) / 2.0,
        (height - own.height() * scale) / 2.0,
    ))
}

/// The PNG of `pixmap`: 8-bit RGBA, straight alpha, adaptive row filters, DEFLATE level 3.
/// tiny-skia's own `encode_png` copies the pixmap first and uses `png`'s `Balanced` level (6),
/// whose DEFLATE was half of a chart's drawing time. Measured on the bench's charts (one
/// thread and two, `bench/RESULTS.md`): level 3 renders the standard chart ≈ 1.3× as fast for
/// 0.7% more bytes; `Fast` (fdeflate) 2.1× as fast but 55% more bytes, which cost more to
/// store and to send than the CPU they save.
fn encode_png(pixmap: tiny_skia::Pixmap) -> Result<Vec<u8>, png::EncodingError> {
    let (width, height) = (pixmap.width(), pixmap.height());
    let rgba = pixmap.take_demultiplied();
    let mut png = Vec::new();
    let mut encoder = png::Encoder::new(&mut png, width, height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_filter(png::Filter::Adaptive);
    encoder.set_deflate_compression(png::DeflateCompression::Level(3));
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&rgba)?;
    writer.finish()?;
    Ok(png)
}

/// Draws `tree` to fit `size` on a transparent canvas.
fn rasterize(tree: &usvg::Tree, size: Dimensions) -> Result<tiny_skia::Pixmap, RenderError> {
    let (width, height) = (size.width(), size.height());
    let mut pixmap =
        tiny_skia::Pixmap::new(width, height).ok_or(RenderError::Allocation(width, height))?;
    resvg::render(tree, fit(tree, size)?, &mut pixmap.as_mut());
    Ok(pixmap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(svg: &str) -> Result<usvg::Tree, RenderError> {
        Renderer::new().parse_untrusted(svg, Dimensions::new(800, 600).unwrap())
    }

    fn nested(open: &str, close: &str, depth: usize) -> String {
        format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">{}{}</svg>"#,
            open.repeat(depth),
            close.repeat(depth)
        )
    }

    /// A PNG header claiming `width` × `height` pixels (what a decompression bomb looks like
    /// to anything that reads only the header).
    fn png_header(width: u32, height: u32) -> Vec<u8> {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        png.extend(width.to_be_bytes());
        png.extend(height.to_be_bytes());
        png.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
        png
    }

    #[test]
    fn the_png_holds_the_pixels_tiny_skias_own_encoder_would() {
        // Opaque and half-transparent shapes, so demultiplying alpha is part of the check.
        let svg = r##"<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">
            <rect width="40" height="30" fill="#1f77b4"/>
            <circle cx="40" cy="28" r="18" fill="#d62728" fill-opacity="0.4"/>
            <path d="M0 47 L63 0" stroke="#2ca02c" stroke-width="3" stroke-opacity="0.7"/>
        </svg>"##;
        let tree = Renderer::new()
            .parse_untrusted(svg, Dimensions::new(64, 48).unwrap())
            .unwrap();
        let pixmap = rasterize(&tree, Dimensions::new(64, 48).unwrap()).unwrap();
        let theirs = tiny_skia::Pixmap::decode_png(&pixmap.encode_png().unwrap()).unwrap();
        let ours = tiny_skia::Pixmap::decode_png(&encode_png(pixmap).unwrap()).unwrap();
        assert_eq!((ours.width(), ours.height()), (64, 48));
        assert!(
            theirs
                .pixels()
                .iter()
                .any(|p| p.alpha() != 0 && p.alpha() != 255)
        );
        assert_eq!(ours.data(), theirs.data());
    }

    #[test]
    fn hostile_documents_are_refused_before_they_can_hurt() {
        let laughs = r#"<!DOCTYPE svg [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><svg xmlns="http://www.w3.org/2000/svg"><text>&b;</text></svg>"#;
        let mut patterns = String::from(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><defs>"#,
        );
        for i in 0..400 {
            patterns.push_str(&format!(
                r#"<pattern id="p{i}" width="1" height="1"><rect width="1" height="1" fill="url(#p{})"/></pattern>"#,
                i + 1
            ));
        }
        patterns.push_str(r#"</defs><rect width="10" height="10" fill="url(#p0)"/></svg>"#);
        let cases: Vec<(String, &str)> = vec![
            (laughs.to_owned(), "DTD"),
            (nested("<svg>", "</svg>", 1000), "nested more than 128"),
            (nested("<g>", "</g>", 200), "nested more than 128"),
            (nested(r#"<text><tspan>"#, "</tspan></text>", 90), "nested more than 128"),
            (patterns, "more than 64"),
            (nested(r#"<g opacity="0.5">"#, "</g>", 40), "nested layers"),
            (
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><circle r="1e10"/></svg>"#.into(),
                "beyond",
            ),
            (
                format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><text>{}</text></svg>"#, "x".repeat(5000)),
                "characters",
            ),
            (
                format!(
                    r#"<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><path stroke="black" d="M0 0{}"/></svg>"#,
                    " L100 100 L0 0".repeat(20_000)
                ),
                "outline length",
            ),
            ("<svg xmlns='http://www.w3.org/2000/svg'><g></svg>".into(), "not valid"),
        ];
        for (svg, expected) in cases {
            let error = parse(&svg).map(|_| ()).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "expected `{expected}` in `{error}`"
            );
        }
    }

    #[test]
    fn embedded_images_are_accepted_only_when_small_png_or_jpeg() {
        assert!(
            embedded_image(Arc::new(png_header(50_000, 50_000))).is_none(),
            "bomb"
        );
        assert!(
            embedded_image(Arc::new(png_header(0, 10))).is_none(),
            "empty"
        );
        assert!(
            embedded_image(Arc::new(b"GIF89a\x01\0\x01\0".to_vec())).is_none(),
            "gif"
        );
        assert!(
            embedded_image(Arc::new(b"<svg/>".to_vec())).is_none(),
            "nested svg"
        );
        assert!(embedded_image(Arc::new(png_header(100, 100))).is_some());
    }

    #[test]
    fn text_in_any_font_family_draws_with_the_bundled_font() {
        let renderer = Renderer::new();
        let size = Dimensions::new(200, 60).unwrap();
        for family in ["Comic Sans MS", "monospace", "serif", "dejavu sans"] {
            let svg = format!(
                r#"<svg xmlns="http://www.w3.org/2000/svg" width="200" height="60"><text x="5" y="40" font-size="30" font-family="{family}">Hello</text></svg>"#
            );
            let tree = renderer.parse_untrusted(&svg, size).unwrap();
            let pixmap = rasterize(&tree, size).unwrap();
            let inked = pixmap.pixels().iter().filter(|p| p.alpha() > 0).count();
            assert!(inked > 300, "{family}: {inked} pixels");
        }
    }

    #[test]
    fn a_chart_runs_through_every_stage_to_png_bytes() {
        let spec = RenderSpec::from_json(serde_json::json!({
            "kind": "chart", "width": 320, "height": 200,
            "chart": {"type": "line", "series": [{"name": "a", "points": [[0, 1], [1, 3]]}]}
        }))
        .unwrap();
        let renderer = Renderer::new();
        let mut work = Work::Spec(spec.clone());
        for stage in spec.stages().iter().filter(|s| **s != Stage::Uploading) {
            work = renderer.advance(*stage, work).unwrap();
        }
        let Work::Output(png) = work else {
            panic!("PNG bytes at the end")
        };
        let decoded = tiny_skia::Pixmap::decode_png(&png).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (320, 200));
    }
}
