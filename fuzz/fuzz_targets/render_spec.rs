//! `start_render`'s arguments as raw bytes: JSON → spec → stored JSON → worker stages.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mcp_sidecar::render::Renderer;

/// Built once: loading the bundled fonts is the expensive part of a renderer.
static RENDERER: LazyLock<Renderer> = LazyLock::new(Renderer::new);

fuzz_target!(|data: &[u8]| {
    let _ = mcp_sidecar_fuzz::render_spec(&RENDERER, data);
});
