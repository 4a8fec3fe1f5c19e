//! Hostile input against the real `mcp-sidecar` binary, run as its own process with a real
//! redis-server and the local artifact store: one table of attacks, each with the clear
//! outcome it must get (an HTTP status, a JSON-RPC error, a tool error with its `code`, or a
//! job that ends `failed` with its error). After every case the process is still alive,
//! `/healthz` answers and `add` still works. Its memory is sampled throughout; the peak
//! (`VmHWM`) must stay under [`PEAK_RSS_BOUND_MIB`].
//!
//! Requests go over a raw `TcpStream`, so nothing is normalized or refused on the client side
//! (`..` in paths, invalid UTF-8, a foreign Host). `cargo test -p mcp-sidecar --test
//! hostile_input -- --nocapture` prints the table of cases, outcomes and memory.
#![allow(clippy::unwrap_used)] // a test: failures should panic loudly

use std::{
    net::{SocketAddr, TcpListener},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::common::{TEST_SIGNING_KEY, memory::MemorySampler, start_sidecar_process};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// Peak resident memory the sidecar may reach under every case below, in MiB. Measured (debug
/// build, 2 render workers, one case at a time): 214–251 MiB over five runs, always during the
/// heaviest *legitimate* render (a blur on two layers at 4096 × 2048: a 32 MiB canvas plus a
/// layer and filter buffers per group); the hostile cases themselves stay under about 150 MiB.
/// The bound leaves ~50% over the highest measurement for allocator and machine differences
/// and still catches a case whose memory grows with its input (a 1 MiB SVG expanding 1000×).
const PEAK_RSS_BOUND_MIB: u64 = 384;
/// How long a render job may take to reach a terminal state (a debug build on a busy machine).
const JOB_LIMIT: Duration = Duration::from_secs(300);
/// The sidecar's `RENDER_TIMEOUT` here: raised from 60 s so that a debug build on a busy
/// machine cannot turn the heaviest legitimate render (about 25 s here) into a time-out.
const RENDER_TIMEOUT: &str = "240s";
/// The sidecar's default request-body limit (`MCP_MAX_BODY_BYTES`).
const BODY_LIMIT: usize = 4 * 1024 * 1024;
const MIB: usize = 1024 * 1024;

// ---- the table ---------------------------------------------------------------------------

/// What a case sends.
enum Send {
    /// `tools/call` of `tool` with these arguments, as a well-formed POST /mcp.
    Tool(&'static str, Value),
    /// Bytes on the wire, exactly as given.
    Raw(Vec<u8>),
}

/// The clear outcome a case must get.
enum Outcome {
    /// This HTTP status, with the substring in the body.
    Http(u16, &'static str),
    /// This HTTP status and JSON-RPC error code, with the substring in the error message.
    JsonRpcError(u16, i64, &'static str),
    /// A tool result with `isError: true`, this `code`, and the substring in `error`.
    ToolError(&'static str, &'static str),
    /// `start_render` accepts the job, which then ends `failed` with the substring in `error`.
    JobFailed(&'static str),
    /// `start_render` accepts the job, which then ends `succeeded` (the hostile part ignored).
    JobSucceeded,
}

struct Case {
    name: String,
    send: Send,
    expect: Outcome,
}

fn case(name: impl Into<String>, send: Send, expect: Outcome) -> Case {
    Case {
        name: name.into(),
        send,
        expect,
    }
}

fn render(spec: Value) -> Send {
    Send::Tool("start_render", json!({ "spec": spec }))
}

fn svg_spec(svg: impl Into<String>) -> Value {
    json!({"kind": "svg", "svg": svg.into(), "width": 400, "height": 300})
}

/// A string inside every hostile SVG: it must never show up in the sidecar's logs.
const PAYLOAD_MARKER: &str = "hostile-payload-marker-5f0c";

const SVG_OPEN: &str = r#"<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="100" height="100"><!-- hostile-payload-marker-5f0c -->"#;

fn svg(body: &str) -> String {
    format!("{SVG_OPEN}{body}</svg>")
}

fn billion_laughs() -> String {
    let mut dtd = String::from(r#"<!ENTITY lol0 "lol">"#);
    for level in 1..10 {
        let previous = format!("&lol{};", level - 1).repeat(10);
        dtd.push_str(&format!(r#"<!ENTITY lol{level} "{previous}">"#));
    }
    format!(
        r#"<?xml version="1.0"?><!DOCTYPE svg [{dtd}]>{SVG_OPEN}<text y="50">&lol9;</text></svg>"#
    )
}

fn nested_groups(depth: usize) -> String {
    svg(&format!("{}{}", "<g>".repeat(depth), "</g>".repeat(depth)))
}

/// An SVG whose one path's `d` attribute is about `bytes` long, made of `segment`.
fn long_path(bytes: usize, segment: &str, stroke: &str) -> String {
    let d = format!("M1 1{}", segment.repeat(bytes / segment.len()));
    svg(&format!(r#"<path fill="none" stroke="{stroke}" d="{d}"/>"#))
}

fn chained_patterns(count: usize) -> String {
    let mut defs = String::new();
    for i in 0..count {
        defs.push_str(&format!(
            r#"<pattern id="p{i}" width="1" height="1"><rect width="1" height="1" fill="url(#p{})"/></pattern>"#,
            i + 1
        ));
    }
    svg(&format!(
        r#"<defs>{defs}</defs><rect width="10" height="10" fill="url(#p0)"/>"#
    ))
}

/// PNG bytes whose header declares `width` × `height` (what a decompression bomb looks like
/// to anything reading only the header); the pixel data is a stub.
fn png_bomb_header(width: u32, height: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend(width.to_be_bytes());
    png.extend(height.to_be_bytes());
    png.extend([8, 6, 0, 0, 0, 0, 0, 0, 0]);
    png.extend(b"\0\0\0\0IDAT\0\0\0\0\0\0\0\0IEND\xaeB`\x82");
    png
}

/// A real PNG of `side` × `side` opaque pixels.
fn real_png(side: u32) -> Vec<u8> {
    let mut pixmap = resvg::tiny_skia::Pixmap::new(side, side).unwrap();
    pixmap.fill(resvg::tiny_skia::Color::from_rgba8(0, 128, 255, 255));
    pixmap.encode_png().unwrap()
}

fn data_image(png: &[u8]) -> String {
    let encoded = base64::engine::general_purpose::STANDARD.encode(png);
    svg(&format!(
        r#"<image width="100" height="100" href="data:image/png;base64,{encoded}"/>"#
    ))
}

fn chart_at_every_limit() -> Value {
    let series: Vec<Value> = (0..16)
        .map(|s| {
            let points: Vec<[f64; 2]> = (0..3125)
                .map(|i| [f64::from(i), f64::from((i * 7 + s * 13) % 101)])
                .collect();
            json!({"name": "n".repeat(200), "points": points})
        })
        .collect();
    json!({"kind": "chart", "width": 1600, "height": 1200, "format": "png",
           "chart": {"type": "line", "title": "t".repeat(200), "x_label": "x".repeat(200),
                     "y_label": "y".repeat(200), "series": series}})
}

fn heavy_blur_at_the_largest_canvas() -> Value {
    let svg = r#"<svg xmlns="http://www.w3.org/2000/svg" width="4096" height="2048">
        <defs><filter id="b"><feGaussianBlur stdDeviation="120"/></filter></defs>
        <g filter="url(#b)"><rect width="4096" height="2048" fill="teal"/><circle cx="900" cy="900" r="800" fill="orange"/></g>
        <g filter="url(#b)" opacity="0.5"><rect x="100" width="3000" height="1500" fill="navy"/></g></svg>"#;
    json!({"kind": "svg", "svg": svg, "width": 4096, "height": 2048})
}

fn nested_json(depth: usize, open: &str, close: &str) -> String {
    format!("{}{}", open.repeat(depth), close.repeat(depth))
}

/// `tools/call` JSON-RPC body with `arguments` spliced in as raw JSON text.
fn tool_call_body(tool: &str, raw_arguments: &str) -> Vec<u8> {
    format!(
        r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{tool}","arguments":{raw_arguments}}}}}"#
    )
    .into_bytes()
}

/// HMAC-SHA256 over `job \n expires` with `key`, as the local artifact store signs downloads
/// (mcp-sidecar/src/artifacts/local.rs).
fn sign(key: &[u8], job: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap();
    mac.update(job.as_bytes());
    mac.update(b"\n");
    mac.update(expires.to_string().as_bytes());
    hex(&mac.finalize().into_bytes())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Every case. `job` is a finished job with an artifact, `signed` its download path and query.
fn cases(sidecar: &Wire, job: &str, signed: &str, listener_port: u16) -> Vec<Case> {
    use Outcome::*;
    let host = sidecar.host();
    let add = tool_call_body("add", r#"{"a":2,"b":3}"#);
    let mut cases = vec![
        // -- output size --
        case(
            "width 100000",
            render(json!({"kind": "svg", "svg": svg(""), "width": 100_000, "height": 100})),
            ToolError("invalid_arguments", "width must be between 1 and 4096"),
        ),
        case(
            "height 100000",
            render(json!({"kind": "svg", "svg": svg(""), "width": 100, "height": 100_000})),
            ToolError("invalid_arguments", "height must be between 1 and 4096"),
        ),
        case(
            "4096 x 4096 (over the pixel budget)",
            render(json!({"kind": "svg", "svg": svg(""), "width": 4096, "height": 4096})),
            ToolError("invalid_arguments", "more than 8388608 pixels"),
        ),
        case(
            "width x height overflowing u32 (4294967295^2)",
            render(json!({"kind": "svg", "svg": svg(""), "width": u32::MAX, "height": u32::MAX})),
            ToolError("invalid_arguments", "width must be between 1 and 4096"),
        ),
        case(
            "width 2^64 (not a u32)",
            render(json!({"kind": "svg", "svg": svg(""), "width": u64::MAX, "height": 1})),
            ToolError("invalid_arguments", "expected u32"),
        ),
        case(
            "negative height",
            render(json!({"kind": "chart", "height": -1,
                          "chart": {"type": "bar", "series": [{"name": "a", "points": [[0, 1]]}]}})),
            ToolError("invalid_arguments", "expected u32"),
        ),
        case(
            "width 1e400 (a number JSON cannot hold)",
            Send::Raw(sidecar.mcp_post(
                &host,
                &[],
                &tool_call_body(
                    "start_render",
                    &format!(
                        r#"{{"spec":{{"kind":"svg","svg":"{}","width":1e400}}}}"#,
                        svg("").replace('"', "'")
                    ),
                ),
            )),
            JsonRpcError(400, -32700, "not valid JSON"),
        ),
        case(
            "chart with 50,001 points",
            render(
                json!({"kind": "chart", "chart": {"type": "line", "series": [
                {"name": "a", "points": vec![[0, 1]; 10_000]}, {"name": "b", "points": vec![[0, 1]; 10_000]},
                {"name": "c", "points": vec![[0, 1]; 10_000]}, {"name": "d", "points": vec![[0, 1]; 10_000]},
                {"name": "e", "points": vec![[0, 1]; 10_001]}]}}),
            ),
            ToolError("invalid_arguments", "at most 50000"),
        ),
        case(
            "chart at every data limit: 16 x 3,125 points, 200-char labels",
            render(chart_at_every_limit()),
            JobSucceeded,
        ),
        case(
            "heavy blur on two layers at the largest canvas (4096 x 2048)",
            render(heavy_blur_at_the_largest_canvas()),
            JobSucceeded,
        ),
        // -- SVG bombs --
        case(
            "billion laughs (10 levels of entities)",
            render(svg_spec(billion_laughs())),
            JobFailed("DTDs (<!DOCTYPE … [ … ]>) are not accepted"),
        ),
        case(
            "10,000 nested <g>",
            render(svg_spec(nested_groups(10_000))),
            JobFailed("elements nested more than 128 deep"),
        ),
        case(
            "140,000 nested <g> (just under 1 MiB)",
            render(svg_spec(nested_groups(140_000))),
            JobFailed("more than 100000 XML nodes"),
        ),
        case(
            "400 chained pattern references",
            render(svg_spec(chained_patterns(400))),
            JobFailed("more than 64 clipPath, mask, pattern, filter and marker elements"),
        ),
        case(
            "a circle of radius 1e30",
            render(svg_spec(svg(r#"<circle r="1e30"/>"#))),
            JobFailed("a shape reaches beyond"),
        ),
        case(
            "path data of 1,000,000 bytes, zigzag (under the 1 MiB SVG limit)",
            render(svg_spec(long_path(1_000_000, " L99 99 L1 1", "black"))),
            JobFailed("outline length"),
        ),
        case(
            "path data of 1,000,000 bytes, 330,000 tiny segments",
            render(svg_spec(long_path(1_000_000, "h.1", "black"))),
            JobSucceeded,
        ),
        case(
            "path data of 3 MiB (over the 1 MiB SVG limit)",
            render(svg_spec(long_path(3 * MIB, " L99 99 L1 1", "black"))),
            ToolError("invalid_arguments", "the limit is 1048576"),
        ),
        case(
            "path data of 6 MiB (over the 4 MiB body limit)",
            render(svg_spec(long_path(6 * MIB, " L99 99 L1 1", "black"))),
            ToolError(
                "invalid_arguments",
                "exceeds the sidecar's limit of 4194304 bytes",
            ),
        ),
        // -- references outside the document --
        case(
            "href file:///etc/passwd (image, xlink:href, use, feImage)",
            render(svg_spec(svg(
                r##"<rect width="100" height="100" fill="white"/>
                <image href="file:///etc/passwd" width="100" height="100"/>
                <image xlink:href="/etc/passwd" width="100" height="100"/>
                <use href="file:///etc/passwd#x"/>
                <filter id="f"><feImage href="file:///etc/passwd"/></filter>
                <rect width="10" height="10" filter="url(#f)"/>"##,
            ))),
            JobSucceeded,
        ),
        case(
            format!(
                "href http://127.0.0.1:{listener_port}/ (image, use, feImage, @import, stylesheet)"
            ),
            render(svg_spec(format!(
                r##"<?xml-stylesheet href="http://127.0.0.1:{listener_port}/s.css"?>{}"##,
                svg(&format!(
                    r##"<style>@import url("http://127.0.0.1:{listener_port}/i.css");</style>
                    <image href="http://127.0.0.1:{listener_port}/x.png" width="100" height="100"/>
                    <use href="http://127.0.0.1:{listener_port}/o.svg#shape"/>
                    <filter id="f"><feImage href="http://127.0.0.1:{listener_port}/f.png"/></filter>
                    <rect width="10" height="10" filter="url(#f)" fill="url(http://127.0.0.1:{listener_port}/p#p)"/>"##
                ))
            ))),
            JobSucceeded,
        ),
        case(
            "data: PNG declaring 50000 x 50000 (decompression bomb)",
            render(svg_spec(data_image(&png_bomb_header(50_000, 50_000)))),
            JobSucceeded,
        ),
        case(
            "data: PNG of 2000 x 2000 real pixels (at the 4 MP cap)",
            render(svg_spec(data_image(&real_png(2000)))),
            JobSucceeded,
        ),
        case(
            "data: PNG of 2100 x 2100 real pixels (over the 4 MP cap)",
            render(svg_spec(data_image(&real_png(2100)))),
            JobSucceeded,
        ),
        // -- JSON-RPC bodies --
        case(
            "invalid UTF-8 in the JSON-RPC body",
            Send::Raw(sidecar.mcp_post(
                &host,
                &[],
                b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/\xff\xfe\"}",
            )),
            JsonRpcError(400, -32700, "not valid JSON"),
        ),
        case(
            "invalid UTF-8 in a tool argument",
            Send::Raw(
                sidecar.mcp_post(
                    &host,
                    &[],
                    &tool_call_body("echo", "{\"text\":\"caf\u{e9}\"}")
                        .into_iter()
                        .map(|byte| if byte == 0xc3 { 0xff } else { byte })
                        .collect::<Vec<_>>(),
                ),
            ),
            JsonRpcError(400, -32700, "not valid JSON"),
        ),
        case(
            "JSON nesting bomb: 100,000 nested arrays as the body",
            Send::Raw(sidecar.mcp_post(&host, &[], nested_json(100_000, "[", "]").as_bytes())),
            JsonRpcError(400, -32700, "recursion limit exceeded"),
        ),
        case(
            "JSON nesting bomb: 100,000 nested objects in tool arguments",
            Send::Raw(sidecar.mcp_post(
                &host,
                &[],
                &tool_call_body(
                    "echo",
                    &format!(r#"{{"text":{}}}"#, nested_json(100_000, r#"{"a":"#, "}")),
                ),
            )),
            JsonRpcError(400, -32700, "recursion limit exceeded"),
        ),
        case(
            "JSON-RPC batch of 90,000 entries",
            Send::Raw(
                sidecar.mcp_post(
                    &host,
                    &[],
                    format!(
                        "[{}]",
                        vec![r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#; 90_000].join(",")
                    )
                    .as_bytes(),
                ),
            ),
            JsonRpcError(400, -32600, "batches are not supported"),
        ),
        case(
            "body of 5 MiB (over the 4 MiB limit)",
            Send::Raw(sidecar.mcp_post(
                &host,
                &[],
                &tool_call_body("echo", &format!(r#"{{"text":"{}"}}"#, "x".repeat(5 * MIB))),
            )),
            ToolError(
                "invalid_arguments",
                "exceeds the sidecar's limit of 4194304 bytes",
            ),
        ),
        case(
            "Content-Length claiming 64 GiB, then 5 MiB sent",
            Send::Raw({
                let mut request = format!(
                    "POST /mcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
                     Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
                     Content-Length: {}\r\n\r\n",
                    64u64 << 30
                )
                .into_bytes();
                request.extend(vec![b' '; BODY_LIMIT + MIB]);
                request
            }),
            JsonRpcError(413, -32600, "exceeds the limit of 4194304 bytes"),
        ),
        // -- Host and Origin (DNS rebinding) --
        case(
            "Host: evil.example.com",
            Send::Raw(sidecar.mcp_post("evil.example.com", &[], &add)),
            Http(403, "Host header is not allowed"),
        ),
        case(
            "Host: 127.0.0.1.nip.io:<port>",
            Send::Raw(sidecar.mcp_post(
                &format!("127.0.0.1.nip.io:{}", sidecar.addr.port()),
                &[],
                &add,
            )),
            Http(403, "Host header is not allowed"),
        ),
        case(
            "Origin: http://evil.example.com",
            Send::Raw(sidecar.mcp_post(&host, &[("Origin", "http://evil.example.com")], &add)),
            Http(403, "Origin header is not allowed"),
        ),
        case(
            "Origin: null",
            Send::Raw(sidecar.mcp_post(&host, &[("Origin", "null")], &add)),
            Http(403, "Origin header is not allowed"),
        ),
        case(
            "Origin: not-a-url",
            Send::Raw(sidecar.mcp_post(&host, &[("Origin", "not-a-url")], &add)),
            Http(403, "Invalid Origin header"),
        ),
    ];

    // -- job ids that try to leave the job namespace, in every tool that takes one --
    let long_id = "../".repeat(MIB / 3);
    for tool in ["get_render_status", "get_render_result", "cancel_render"] {
        for id in [
            "../../etc/passwd",
            "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/etc/passwd",
            // 32 characters, like a real id.
            "../../../../../../../../etc/pass",
            "0123456789ABCDEF0123456789ABCDEF",
            long_id.as_str(),
        ] {
            let shown: String = id.chars().take(40).collect();
            cases.push(case(
                format!(
                    "{tool} job_id {shown}{}",
                    if id.len() > 40 { "… (1 MiB)" } else { "" }
                ),
                Send::Tool(tool, json!({ "job_id": id })),
                ToolError("invalid_arguments", "is not a job id"),
            ));
        }
    }

    // -- /files paths and signatures --
    let (path, query) = signed.split_once('?').unwrap();
    let mut fields = query.split('&').map(|pair| pair.split_once('=').unwrap());
    let (_, expires) = fields.next().unwrap();
    let (_, signature) = fields.next().unwrap();
    let expires: u64 = expires.parse().unwrap();
    let flipped = {
        let mut bytes = signature.as_bytes().to_vec();
        bytes[0] = if bytes[0] == b'0' { b'1' } else { b'0' };
        String::from_utf8(bytes).unwrap()
    };
    let key = TEST_SIGNING_KEY.as_bytes();
    let past = unix_now() - 60;
    let future = unix_now() + 600;
    let get = |target: String| Send::Raw(sidecar.get(&host, &target));
    let downloads = [
        (
            "control: the job's own signed URL",
            signed.to_owned(),
            Http(200, "PNG"),
        ),
        (
            "control: a URL signed here with the key, future expiry",
            format!(
                "/files/{job}?expires={future}&signature={}",
                sign(key, job, future)
            ),
            Http(200, "PNG"),
        ),
        (
            "forged signature (one hex digit changed)",
            format!("{path}?expires={expires}&signature={flipped}"),
            Http(403, "invalid or has expired"),
        ),
        (
            "signature made with another key",
            format!(
                "{path}?expires={future}&signature={}",
                sign(b"someone-elses-key-0123456789", job, future)
            ),
            Http(403, "invalid or has expired"),
        ),
        (
            "valid signature with a later expiry swapped in",
            format!("{path}?expires={}&signature={signature}", expires + 86_400),
            Http(403, "invalid or has expired"),
        ),
        (
            "expired: a valid HMAC with an expiry in the past",
            format!(
                "/files/{job}?expires={past}&signature={}",
                sign(key, job, past)
            ),
            Http(403, "invalid or has expired"),
        ),
        (
            "signature of 1,000 hex digits",
            format!("{path}?expires={expires}&signature={}", "ab".repeat(500)),
            Http(403, "invalid or has expired"),
        ),
        (
            "signature of 100,000 hex digits (hyper refuses the URI)",
            format!("{path}?expires={expires}&signature={}", "ab".repeat(50_000)),
            Http(414, ""),
        ),
        (
            "no signature",
            path.to_owned(),
            Http(403, "invalid or has expired"),
        ),
        (
            "/files/../../etc/passwd",
            "/files/../../etc/passwd".to_owned(),
            Http(404, "not found"),
        ),
        (
            "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd, signed",
            format!(
                "/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd?expires={future}&signature={}",
                sign(key, "../../etc/passwd", future)
            ),
            Http(404, "no such artifact"),
        ),
        (
            "/files/..%2F..%2F..%2Fetc%2Fpasswd",
            "/files/..%2F..%2F..%2Fetc%2Fpasswd".to_owned(),
            Http(404, "no such artifact"),
        ),
        (
            "/files/%2Fetc%2Fpasswd (absolute path), signed",
            format!(
                "/files/%2Fetc%2Fpasswd?expires={future}&signature={}",
                sign(key, "/etc/passwd", future)
            ),
            Http(404, "no such artifact"),
        ),
        (
            "/files//etc/passwd",
            "/files//etc/passwd".to_owned(),
            Http(404, "not found"),
        ),
        (
            "/files/{job}.png (the file name, not the id), signed",
            format!(
                "/files/{job}.png?expires={future}&signature={}",
                sign(key, &format!("{job}.png"), future)
            ),
            Http(404, "no such artifact"),
        ),
        (
            "/files/{job}%00.png, signed",
            format!(
                "/files/{job}%00.png?expires={future}&signature={}",
                sign(key, &format!("{job}\0.png"), future)
            ),
            Http(404, "no such artifact"),
        ),
    ];
    for (name, target, expect) in downloads {
        cases.push(case(name, get(target), expect));
    }
    cases
}

// ---- raw HTTP ----------------------------------------------------------------------------

/// Where the sidecar listens, and how raw requests to it are written.
struct Wire {
    addr: SocketAddr,
}

impl Wire {
    fn host(&self) -> String {
        self.addr.to_string()
    }

    fn mcp_post(&self, host: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut head = format!(
            "POST /mcp HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n\
             Content-Length: {}\r\n",
            body.len()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        request
    }

    fn get(&self, host: &str, target: &str) -> Vec<u8> {
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").into_bytes()
    }

    /// Sends `request` and reads the whole reply.
    fn exchange(&self, request: Vec<u8>) -> Reply {
        Reply::parse(&test_support::raw_exchange(self.addr, request))
    }

    fn tool(&self, tool: &str, arguments: &Value) -> Reply {
        let body = tool_call_body(tool, &arguments.to_string());
        self.exchange(self.mcp_post(&self.host(), &[], &body))
    }
}

struct Reply {
    status: u16,
    /// Status line and headers, lowercased.
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|window| window == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP reply: {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = raw[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        Self { status, head, body }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("JSON reply ({error}): {}", self.text()))
    }

    /// The tool result of a `tools/call` reply.
    fn tool_result(&self) -> Value {
        assert_eq!(self.status, 200, "{}", self.text());
        let reply = self.json();
        reply["result"].clone()
    }
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&body[..end])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[end + 2..end + 2 + size]);
        body = &body[end + 2 + size + 2..];
    }
    out
}

fn shorten(text: &str, limit: usize) -> String {
    let text = text.replace(['\n', '|'], " ");
    if text.chars().count() > limit {
        format!("{}…", text.chars().take(limit).collect::<String>())
    } else {
        text
    }
}

// ---- observers ---------------------------------------------------------------------------

/// A listener that counts the connections made to it: any fetch of an `http://` href in an SVG
/// would show up here.
struct ConnectionCounter {
    port: u16,
    connections: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl ConnectionCounter {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, stop_in) = (connections.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_in.load(Ordering::SeqCst) {
                if listener.accept().is_ok() {
                    count.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            port,
            connections,
            stop,
        }
    }

    fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

// ---- running a case ----------------------------------------------------------------------

/// Follows a job to its terminal status.
fn wait_terminal(wire: &Wire, job: &str) -> Value {
    let deadline = Instant::now() + JOB_LIMIT;
    loop {
        let status = wire.tool("get_render_status", &json!({ "job_id": job }));
        let status = status.tool_result()["structuredContent"].clone();
        if matches!(
            status["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        ) {
            return status;
        }
        assert!(Instant::now() < deadline, "job {job} still {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the case, asserts its outcome and returns a one-line description of what happened.
fn run(wire: &Wire, case: &Case) -> String {
    let started = Instant::now();
    let reply = match &case.send {
        Send::Tool(tool, arguments) => wire.tool(tool, arguments),
        Send::Raw(request) => wire.exchange(request.clone()),
    };
    let name = &case.name;
    let observed = match case.expect {
        Outcome::Http(status, needle) => {
            let text = reply.text();
            assert_eq!(reply.status, status, "{name}: {}", shorten(&text, 500));
            assert!(
                text.contains(needle),
                "{name}: `{needle}` in {}",
                shorten(&text, 500)
            );
            assert!(!text.contains("root:"), "{name}: no file contents leak");
            let shown = if status == 200 {
                format!("{} bytes", reply.body.len())
            } else {
                text
            };
            format!("HTTP {status}: {shown}")
        }
        Outcome::JsonRpcError(status, code, needle) => {
            assert_eq!(
                reply.status,
                status,
                "{name}: {}",
                shorten(&reply.text(), 500)
            );
            let error = reply.json()["error"].clone();
            assert_eq!(error["code"], code, "{name}: {error}");
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains(needle), "{name}: `{needle}` in {message}");
            format!("HTTP {status}, JSON-RPC {code}: {message}")
        }
        Outcome::ToolError(code, needle) => {
            let result = reply.tool_result();
            assert_eq!(result["isError"], true, "{name}: {result}");
            let content = &result["structuredContent"];
            assert_eq!(content["code"], code, "{name}: {content}");
            let message = content["error"].as_str().unwrap();
            assert!(message.contains(needle), "{name}: `{needle}` in {message}");
            assert!(message.len() < 400, "{name}: a bounded message: {message}");
            format!("tool error {code}: {message}")
        }
        Outcome::JobFailed(_) | Outcome::JobSucceeded => {
            let result = reply.tool_result();
            assert_eq!(result["isError"], false, "{name}: {result}");
            let job = result["structuredContent"]["job_id"].as_str().unwrap();
            let status = wait_terminal(wire, job);
            match case.expect {
                Outcome::JobFailed(needle) => {
                    assert_eq!(status["state"], "failed", "{name}: {status}");
                    let error = status["error"].as_str().unwrap();
                    assert!(error.contains(needle), "{name}: `{needle}` in {error}");
                    format!("job failed: {error}")
                }
                _ => {
                    assert_eq!(status["state"], "succeeded", "{name}: {status}");
                    format!("job succeeded ({})", status["message"].as_str().unwrap())
                }
            }
        }
    };
    format!("{observed} [{:.1}s]", started.elapsed().as_secs_f64())
}

/// The sidecar is alive and serving: `/healthz` is 200 and `add` works.
fn assert_still_serving(wire: &Wire, after: &str) {
    let health = wire.exchange(wire.get(&wire.host(), "/healthz"));
    assert_eq!(health.status, 200, "after {after}: /healthz");
    let sum = wire.tool("add", &json!({"a": 2, "b": 3})).tool_result();
    assert_eq!(
        sum["structuredContent"],
        json!({"sum": 5}),
        "after {after}: add"
    );
}

#[test]
fn hostile_input_gets_clear_refusals_and_the_sidecar_stays_up_within_its_memory_bound() {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    assert!(
        SVG_OPEN.contains(PAYLOAD_MARKER),
        "every svg() carries the marker"
    );
    let counter = ConnectionCounter::start();
    let sidecar = start_sidecar_process(&[("RENDER_TIMEOUT", RENDER_TIMEOUT)]);
    let wire = Wire { addr: sidecar.addr };
    let memory = MemorySampler::start(sidecar.process.pid());
    assert_still_serving(&wire, "start");
    let baseline_kib = memory.rss_kib();
    memory.take_sampled_peak_kib();

    // A finished job with an artifact, for the download cases.
    let started = wire
        .tool(
            "start_render",
            &json!({"spec": {"kind": "svg", "svg": svg(r#"<rect width="50" height="50"/>"#),
                             "width": 64, "height": 64}}),
        )
        .tool_result();
    let job = started["structuredContent"]["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(wait_terminal(&wire, &job)["state"], "succeeded");
    let result = wire
        .tool("get_render_result", &json!({ "job_id": job }))
        .tool_result();
    let url = result["structuredContent"]["url"].as_str().unwrap();
    let signed = url
        .strip_prefix(&format!("http://{}", sidecar.addr))
        .unwrap();

    // Whatever a downloaded artifact contains, a browser opening it runs nothing.
    let download = wire.exchange(wire.get(&wire.host(), signed));
    assert_eq!(download.status, 200);
    for header in [
        "content-security-policy: default-src 'none'; style-src 'unsafe-inline'; sandbox",
        "x-content-type-options: nosniff",
    ] {
        assert!(download.head.contains(header), "{}", download.head);
    }

    let cases = cases(&wire, &job, signed, counter.port);
    let mut rows = vec![];
    for case in &cases {
        let outcome = run(&wire, case);
        assert_still_serving(&wire, &case.name);
        assert_eq!(
            counter.count(),
            0,
            "{}: something connected to the listener",
            case.name
        );
        let during_mib = memory.take_sampled_peak_kib() / 1024;
        let after_mib = memory.rss_kib() / 1024;
        rows.push(format!(
            "| {} | {} | {during_mib} | {after_mib} |",
            shorten(&case.name, 70),
            shorten(&outcome, 110)
        ));
    }

    // Late fetches (a worker still running something) would show up now.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(counter.count(), 0, "nothing ever connected to the listener");
    // Logs carry ids and errors, never payloads or the signing key.
    for line in sidecar.process.logs.lock().unwrap().iter() {
        let line = line.to_string();
        assert!(
            !line.contains(PAYLOAD_MARKER),
            "payload in a log line: {line}"
        );
        assert!(
            !line.contains(TEST_SIGNING_KEY),
            "signing key in a log line"
        );
    }
    let peak_mib = memory.high_water_kib() / 1024;
    println!("\n| case | outcome | RSS peak during (MiB) | RSS after (MiB) |\n|---|---|---|---|");
    for row in &rows {
        println!("{row}");
    }
    println!(
        "\n{} cases; sidecar RSS: {} MiB at start, peak {peak_mib} MiB (VmHWM), bound \
         {PEAK_RSS_BOUND_MIB} MiB",
        cases.len(),
        baseline_kib / 1024
    );
    assert!(
        peak_mib < PEAK_RSS_BOUND_MIB,
        "peak RSS {peak_mib} MiB is over the bound of {PEAK_RSS_BOUND_MIB} MiB"
    );
}
