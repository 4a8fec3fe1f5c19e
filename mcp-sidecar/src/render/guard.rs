//! Checks that keep an untrusted SVG within what the renderer can draw safely and quickly.
//!
//! usvg and resvg trust their input: they recurse over nesting and reference chains (a few
//! hundred nested `<svg>`/`<tspan>` or chained patterns/masks/clips overflow a 2 MiB thread
//! stack and abort the process), lay out each `<text>` in quadratic time, allocate one full
//! layer per isolated group, and tiny-skia can panic on extreme coordinates. Measured on this
//! project's machines, a 9 KB document could take minutes or gigabytes. So before drawing:
//!
//! - [`check_document`] walks the XML (no recursion) and bounds nesting depth, element count,
//!   the number of elements that start reference chains, and text length;
//! - [`check_tree`] walks the parsed tree (no recursion, sub-trees of clips, masks, patterns
//!   and filter images included) and bounds the work resvg will do in device pixels: edge
//!   length, dashes, covered area, filter area, decoded image pixels, pattern tiles, layer
//!   nesting and coordinate range.
//!
//! The budgets are generous for charts, diagrams and icons; each refusal names its limit.

use resvg::{
    tiny_skia,
    usvg::{self, roxmltree},
};

use super::RenderError;

/// Deepest element nesting.
pub const MAX_DEPTH: usize = 128;
/// Most elements.
pub const MAX_ELEMENTS: usize = 50_000;
/// Most `clipPath`, `mask`, `pattern`, `filter` and `marker` elements (each can start a chain
/// of references that usvg follows recursively).
pub const MAX_REFERENCE_CONTAINERS: usize = 64;
/// Most characters in one `<text>` (its layout is quadratic).
pub const MAX_CHARS_PER_TEXT: usize = 4_000;
/// Most characters of text in all.
pub const MAX_TEXT_CHARS: usize = 100_000;

/// Most drawable nodes after `<use>` expansion.
pub const MAX_NODES: usize = 50_000;
/// Most nested isolated layers (opacity, filters, masks, clips, blend modes).
pub const MAX_LAYER_DEPTH: usize = 16;
/// Largest device coordinate, in pixels (tiny-skia panics far beyond it).
pub const MAX_COORDINATE: f32 = 1e6;
/// Total outline length to rasterize, in device pixels (a stroke counts five times).
pub const MAX_EDGE_PIXELS: f64 = 1e7;
/// Most dashes drawn.
pub const MAX_DASHES: f64 = 200_000.0;
/// Total area covered by paths and layers, in device pixels.
pub const MAX_AREA_PIXELS: f64 = 2e8;
/// Filter work: filtered area times filter primitives, in device pixels.
pub const MAX_FILTER_PIXELS: f64 = 3e7;
/// Decoded raster image pixels, summed over every time an image is drawn.
pub const MAX_IMAGE_PIXELS: f64 = 16e6;

fn too_complex(message: String) -> RenderError {
    RenderError::TooComplex(message)
}

/// Structural limits on the XML document, checked before usvg converts it.
pub fn check_document(document: &roxmltree::Document<'_>) -> Result<(), RenderError> {
    let mut depths = vec![0usize; document.descendants().count() + 1];
    let (mut elements, mut containers, mut characters) = (0usize, 0usize, 0usize);
    for node in document.descendants() {
        let depth = node
            .parent()
            .map_or(0, |parent| depths[parent.id().get_usize()] + 1);
        depths[node.id().get_usize()] = depth;
        if depth > MAX_DEPTH {
            return Err(too_complex(format!(
                "elements nested more than {MAX_DEPTH} deep"
            )));
        }
        if node.is_text() {
            characters += node.text().map_or(0, |text| text.chars().count());
            if characters > MAX_TEXT_CHARS {
                return Err(too_complex(format!(
                    "more than {MAX_TEXT_CHARS} characters of text"
                )));
            }
            continue;
        }
        if !node.is_element() {
            continue;
        }
        elements += 1;
        if elements > MAX_ELEMENTS {
            return Err(too_complex(format!("more than {MAX_ELEMENTS} elements")));
        }
        match node.tag_name().name() {
            "clipPath" | "mask" | "pattern" | "filter" | "marker" => {
                containers += 1;
                if containers > MAX_REFERENCE_CONTAINERS {
                    return Err(too_complex(format!(
                        "more than {MAX_REFERENCE_CONTAINERS} clipPath, mask, pattern, filter \
                         and marker elements"
                    )));
                }
            }
            "text" => {
                let length: usize = node
                    .descendants()
                    .filter(roxmltree::Node::is_text)
                    .map(|text| text.text().map_or(0, |t| t.chars().count()))
                    .sum();
                if length > MAX_CHARS_PER_TEXT {
                    return Err(too_complex(format!(
                        "a <text> with {length} characters; at most {MAX_CHARS_PER_TEXT} per <text>"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Running totals of the work a render would do.
#[derive(Default)]
struct Budget {
    nodes: usize,
    edge: f64,
    dashes: f64,
    area: f64,
    filter: f64,
    image: f64,
}

impl Budget {
    fn check(&self) -> Result<(), RenderError> {
        let limits = [
            ("outline length", self.edge, MAX_EDGE_PIXELS),
            ("dashes", self.dashes, MAX_DASHES),
            ("covered area", self.area, MAX_AREA_PIXELS),
            ("filter work", self.filter, MAX_FILTER_PIXELS),
            ("image pixels", self.image, MAX_IMAGE_PIXELS),
        ];
        for (name, value, limit) in limits {
            if value.is_nan() || value > limit {
                return Err(too_complex(format!(
                    "{name} of {value:.2e} device pixels is over the limit of {limit:.1e}"
                )));
            }
        }
        Ok(())
    }
}

/// Work limits on the parsed tree, for drawing it with `transform` onto `width` × `height`.
pub fn check_tree(
    tree: &usvg::Tree,
    transform: tiny_skia::Transform,
    width: u32,
    height: u32,
) -> Result<(), RenderError> {
    let (width, height) = (f64::from(width), f64::from(height));
    // resvg clips layers to [-2w, 3w] × [-2h, 3h].
    let clipped_area = |rect: Option<tiny_skia::Rect>| -> f64 {
        rect.map_or(0.0, |r| {
            let x = (f64::from(r.right()).min(3.0 * width) - f64::from(r.left()).max(-2.0 * width))
                .max(0.0);
            let y = (f64::from(r.bottom()).min(3.0 * height)
                - f64::from(r.top()).max(-2.0 * height))
            .max(0.0);
            x * y
        })
    };
    let largest_tile = 4.0 * width * height;
    let mut budget = Budget::default();

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
            return Err(too_complex(format!(
                "more than {MAX_LAYER_DEPTH} nested layers (opacity, filters, masks, clips)"
            )));
        }
        if group.should_isolate() {
            let area = clipped_area(
                group
                    .abs_layer_bounding_box()
                    .to_rect()
                    .transform(transform),
            );
            let extra =
                usize::from(group.clip_path().is_some()) + usize::from(group.mask().is_some());
            budget.area += area * (1 + extra) as f64;
            let primitives: usize = group.filters().iter().map(|f| f.primitives().len()).sum();
            budget.filter += area * primitives as f64;
        }
        for node in group.children() {
            budget.nodes += 1;
            if budget.nodes > MAX_NODES {
                return Err(too_complex(format!("more than {MAX_NODES} drawable nodes")));
            }
            match node {
                usvg::Node::Group(child) => stack.push((child, depth)),
                usvg::Node::Text(text) => stack.push((text.flattened(), depth)),
                usvg::Node::Image(image) => {
                    budget.image +=
                        f64::from(image.size().width()) * f64::from(image.size().height());
                }
                usvg::Node::Path(path) => {
                    check_path(path, transform, largest_tile, &mut budget, &clipped_area)?;
                }
            }
        }
        budget.check()?;
    }
    budget.check()
}

fn check_path(
    path: &usvg::Path,
    transform: tiny_skia::Transform,
    largest_tile: f64,
    budget: &mut Budget,
    clipped_area: &impl Fn(Option<tiny_skia::Rect>) -> f64,
) -> Result<(), RenderError> {
    let bounds = path.abs_stroke_bounding_box().transform(transform);
    let in_range = bounds.is_some_and(|b| {
        b.left() > -MAX_COORDINATE
            && b.top() > -MAX_COORDINATE
            && b.right() < MAX_COORDINATE
            && b.bottom() < MAX_COORDINATE
    });
    if !in_range {
        return Err(too_complex(format!(
            "a shape reaches beyond ±{MAX_COORDINATE:.0e} pixels"
        )));
    }
    let device = transform.pre_concat(path.abs_transform());
    let (scale_x, scale_y) = device.get_scale();
    let scale = f64::from(scale_x.max(scale_y));
    let length = outline_length(path.data()) * scale;
    if path.fill().is_some() {
        budget.edge += length;
        budget.area += clipped_area(path.abs_bounding_box().transform(transform));
    }
    if let Some(stroke) = path.stroke() {
        budget.edge += 5.0 * length;
        budget.area += clipped_area(bounds);
        if let Some(dashes) = stroke.dasharray() {
            let period = dashes.iter().map(|v| f64::from(*v)).sum::<f64>() * scale;
            budget.dashes += if period > 0.0 {
                length / period
            } else {
                f64::INFINITY
            };
        }
    }
    let paints = [
        path.fill().map(usvg::Fill::paint),
        path.stroke().map(usvg::Stroke::paint),
    ];
    for paint in paints.into_iter().flatten() {
        if let usvg::Paint::Pattern(pattern) = paint {
            let (tile_x, tile_y) = device.pre_concat(pattern.transform()).get_scale();
            let tile = f64::from(pattern.rect().width())
                * f64::from(tile_x)
                * f64::from(pattern.rect().height())
                * f64::from(tile_y);
            if tile.is_nan() || tile > largest_tile {
                return Err(too_complex(format!(
                    "a pattern tile of {tile:.0} pixels; at most 4 × the image"
                )));
            }
        }
    }
    Ok(())
}

/// Length of the path's control polygon (never less than the curve's), in user units.
fn outline_length(path: &tiny_skia::Path) -> f64 {
    use tiny_skia::PathSegment;
    let distance =
        |a: tiny_skia::Point, b: tiny_skia::Point| f64::from(b.x - a.x).hypot(f64::from(b.y - a.y));
    let (mut length, mut last, mut start) =
        (0.0, tiny_skia::Point::zero(), tiny_skia::Point::zero());
    for segment in path.segments() {
        match segment {
            PathSegment::MoveTo(point) => {
                last = point;
                start = point;
            }
            PathSegment::LineTo(point) => {
                length += distance(last, point);
                last = point;
            }
            PathSegment::QuadTo(control, point) => {
                length += distance(last, control) + distance(control, point);
                last = point;
            }
            PathSegment::CubicTo(first, second, point) => {
                length += distance(last, first) + distance(first, second) + distance(second, point);
                last = point;
            }
            PathSegment::Close => {
                length += distance(last, start);
                last = start;
            }
        }
    }
    length
}
