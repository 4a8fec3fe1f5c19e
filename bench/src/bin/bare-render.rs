//! The bare side of `bench render-baseline`: the sidecar's own `Renderer` in a process of its
//! own, with the sidecar's allocator (mimalloc, as `mcp-sidecar`'s `main.rs` sets it) and
//! render threads of its stack size, so that the baseline differs from the job path only by
//! what the job path adds (MCP, queue, Redis, digest, upload). The `bench` binary itself keeps
//! the system allocator, which its raw-axum ceiling is measured with.
//!
//! Protocol, driven by `bench render-baseline`: the specs come on stdin as one JSON array on
//! one line; this prints `ready` once they are parsed, renders them when `go` comes on stdin,
//! prints the result as one JSON line, `{"jobs_per_second": …, "bytes": …}`, and exits when
//! stdin closes. The caller reads this process's CPU time at `go` and after the result.

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{
    io::{BufRead, Write},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail};
use mcp_sidecar::{
    THREAD_STACK_BYTES,
    render::{
        Renderer, Work,
        spec::{RenderSpec, Stage},
    },
};
use serde_json::{Value, json};

/// As the worker does: a spec from JSON, then every CPU stage in order; the output's length.
fn render(renderer: &Renderer, value: &Value) -> anyhow::Result<usize> {
    let spec = RenderSpec::from_json(value.clone())?;
    let stages = spec.stages();
    let mut work = Work::Spec(spec);
    for stage in stages.iter().filter(|s| **s != Stage::Uploading) {
        work = renderer.advance(*stage, work)?;
    }
    let Work::Output(output) = work else {
        bail!("the pipeline did not end in output");
    };
    Ok(output.len())
}

fn main() -> anyhow::Result<()> {
    let threads: usize = std::env::args()
        .nth(1)
        .context("usage: bare-render <threads> (specs as a JSON array on stdin)")?
        .parse()
        .context("threads: a number")?;
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let specs: Vec<Value> = serde_json::from_str(&lines.next().context("no specs on stdin")??)?;
    let renderer = Arc::new(Renderer::new());
    // One render first, not counted: one-time setup (fonts, caches, the heap's growth) is
    // done, as it is in a sidecar that has been running.
    if let Some(first) = specs.first() {
        render(&renderer, first)?;
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    if lines.next().context("no go on stdin")?? != "go" {
        bail!("expected go");
    }

    let specs = Arc::new(specs);
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handles = (0..threads)
        .map(|index| {
            let (renderer, specs, next) = (renderer.clone(), specs.clone(), next.clone());
            std::thread::Builder::new()
                .name(format!("bare-{index}"))
                .stack_size(THREAD_STACK_BYTES)
                .spawn(move || -> anyhow::Result<usize> {
                    let mut bytes = 0;
                    loop {
                        let index = next.fetch_add(1, Ordering::Relaxed);
                        let Some(value) = specs.get(index) else {
                            return Ok(bytes);
                        };
                        bytes += render(&renderer, value)?;
                    }
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut bytes = 0;
    for handle in handles {
        bytes += handle
            .join()
            .map_err(|_| anyhow::anyhow!("render thread panicked"))??;
    }
    #[allow(clippy::cast_precision_loss)]
    let rate = specs.len() as f64 / started.elapsed().as_secs_f64();
    writeln!(out, "{}", json!({"jobs_per_second": rate, "bytes": bytes}))?;
    out.flush()?;
    // Until the caller has read this process's CPU time.
    for _ in lines {}
    Ok(())
}
