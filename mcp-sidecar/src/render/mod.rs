//! Rendering: charts become SVG, SVG becomes pixels, pixels become PNG.
//!
//! Safety of untrusted SVG, in the order the checks run:
//! 1. the spec bounds (source size, output pixels) in [`spec`];
//! 2. XML parsing with roxmltree: no DTD at all (so no entity expansion, "billion laughs"
//!    included) and a node budget;
//! 3. an iterative nesting-depth check before usvg sees the document, because usvg and resvg
//!    walk the tree recursively and a deep enough document would overflow the thread's stack;
//! 4. usvg options that resolve nothing outside the document: no resources directory, no
//!    file or URL `href`s, only the bundled font (no system fonts), and embedded `data:`
//!    images only if they are PNG or JPEG whose header declares at most
//!    [`MAX_EMBEDDED_IMAGE_PIXELS`] (a decompression bomb is refused before decoding);
//! 5. a walk of the parsed tree bounding node count, isolated-layer depth (each layer is a
//!    full-size pixmap while rendering) and filtered groups.
//!
//! Charts take the same path but skip 2–3's limits: their SVG is ours.

pub mod chart;
pub mod spec;

use std::sync::Arc;

use resvg::{
    tiny_skia,
    usvg::{self, ImageHrefResolver, ImageKind, fontdb},
};

use self::spec::{Dimensions, RenderSpec, Stage};

/// The family name of the font every text is drawn with (DejaVu Sans, from the `dejavu`
/// crate, regular and bold, bundled into the binary so a bare container renders text exactly as a laptop does).
/// Its family name, used by the chart SVG and as the fallback for every other family.
pub const FONT_FAMILY: &str = "DejaVu Sans";

/// Most XML nodes (elements, text, comments) in an SVG document.
pub const MAX_SVG_NODES: usize = 200_000;
/// Deepest element nesting accepted in an SVG document.
pub const MAX_SVG_DEPTH: usize = 128;
/// Most nodes in the parsed render tree (after `<use>` expansion).
pub const MAX_TREE_NODES: usize = 100_000;
/// Most nested isolated layers (groups with opacity, filters, masks or clips).
pub const MAX_LAYER_DEPTH: usize = 16;
/// Most groups with filters.
pub const MAX_FILTERED_GROUPS: usize = 32;
/// Largest embedded raster image, by its declared size, in pixels.
pub const MAX_EMBEDDED_IMAGE_PIXELS: u64 = 4_000_000;

/// Why a render failed. Deterministic: the same spec fails the same way, so it is not retried.
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

/// Holds what every render shares: the font database and the safe usvg options.
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

    /// Runs one CPU stage of the pipeline.
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
                let tree = self.parse_untrusted(&svg)?;
                Ok(Work::Document(Box::new(tree), size))
            }
            (Stage::Rasterizing, Work::Document(tree, size)) => {
                rasterize(&tree, size).map(Work::Pixels)
            }
            (Stage::Encoding, Work::Pixels(pixmap)) => pixmap
                .encode_png()
                .map(Work::Output)
                .map_err(|error| RenderError::Encoding(error.to_string())),
            (stage, _) => Err(RenderError::Pipeline(stage.name())),
        }
    }

    /// Parses an SVG from outside with every check in the module docs.
    pub fn parse_untrusted(&self, svg: &str) -> Result<usvg::Tree, RenderError> {
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
        check_depth(&document)?;
        let tree = usvg::Tree::from_xmltree(&document, &self.options())
            .map_err(|error| RenderError::InvalidSvg(error.to_string()))?;
        check_tree(&tree)?;
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

/// Refuses documents nested deeper than [`MAX_SVG_DEPTH`], without recursing.
fn check_depth(document: &usvg::roxmltree::Document<'_>) -> Result<(), RenderError> {
    let mut stack = vec![(document.root(), 0usize)];
    while let Some((node, depth)) = stack.pop() {
        if depth > MAX_SVG_DEPTH {
            return Err(RenderError::TooComplex(format!(
                "elements nested more than {MAX_SVG_DEPTH} deep"
            )));
        }
        stack.extend(
            node.children()
                .filter(|child| child.is_element())
                .map(|child| (child, depth + 1)),
        );
    }
    Ok(())
}

/// Bounds on the parsed tree that resvg itself does not enforce, walked without recursion
/// (clip paths, masks, patterns and filter images included: they render as layers too).
fn check_tree(tree: &usvg::Tree) -> Result<(), RenderError> {
    let mut nodes = 0usize;
    let mut filtered = 0usize;
    let mut stack: Vec<(&usvg::Group, usize)> = vec![(tree.root(), 0)];
    stack.extend(tree.clip_paths().iter().map(|clip| (clip.root(), 1)));
    stack.extend(tree.masks().iter().map(|mask| (mask.root(), 1)));
    stack.extend(tree.patterns().iter().map(|pattern| (pattern.root(), 1)));
    for filter in tree.filters() {
        for primitive in filter.primitives() {
            if let usvg::filter::Kind::Image(image) = primitive.kind() {
                stack.push((image.root(), 1));
            }
        }
    }
    while let Some((group, depth)) = stack.pop() {
        let depth = depth + usize::from(group.should_isolate());
        if depth > MAX_LAYER_DEPTH {
            return Err(RenderError::TooComplex(format!(
                "more than {MAX_LAYER_DEPTH} nested layers (opacity, filters, masks, clips)"
            )));
        }
        if !group.filters().is_empty() {
            filtered += 1;
            if filtered > MAX_FILTERED_GROUPS {
                return Err(RenderError::TooComplex(format!(
                    "more than {MAX_FILTERED_GROUPS} filtered groups"
                )));
            }
        }
        for node in group.children() {
            nodes += 1;
            if nodes > MAX_TREE_NODES {
                return Err(RenderError::TooComplex(format!(
                    "more than {MAX_TREE_NODES} drawable nodes"
                )));
            }
            match node {
                usvg::Node::Group(child) => stack.push((child, depth)),
                usvg::Node::Text(text) => stack.push((text.flattened(), depth)),
                _ => {}
            }
        }
    }
    Ok(())
}

/// Draws `tree` scaled to fit `size` (aspect ratio kept, centred) on a transparent canvas.
fn rasterize(tree: &usvg::Tree, size: Dimensions) -> Result<tiny_skia::Pixmap, RenderError> {
    let (width, height) = (size.width(), size.height());
    let mut pixmap =
        tiny_skia::Pixmap::new(width, height).ok_or(RenderError::Allocation(width, height))?;
    let own = tree.size();
    if !(own.width() > 0.0 && own.height() > 0.0) {
        return Err(RenderError::NoSize);
    }
    // Dimensions are at most 4096, exactly representable as f32.
    #[allow(clippy::cast_precision_loss)]
    let (target_width, target_height) = (width as f32, height as f32);
    let scale = (target_width / own.width()).min(target_height / own.height());
    let transform = tiny_skia::Transform::from_row(
        scale,
        0.0,
        0.0,
        scale,
        (target_width - own.width() * scale) / 2.0,
        (target_height - own.height() * scale) / 2.0,
    );
    resvg::render(tree, transform, &mut pixmap.as_mut());
    Ok(pixmap)
}
