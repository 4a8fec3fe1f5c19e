//! What the workspace's integration tests share: a real `redis-server` (or a real six-node
//! Redis Cluster), a fake GCE metadata server, the workspace's binaries as real processes on
//! free loopback ports, temporary directories, and the test tools installed under `.tools/`
//! by `scripts/install-test-tools`.
#![allow(clippy::unwrap_used)] // test set-up: a failure should panic loudly

pub mod conformance;
pub mod metadata_server;
pub mod otlp;
pub mod process;
pub mod redis_cluster;
pub mod redis_server;

use std::path::PathBuf;

/// The workspace root (where `.tools/` and `target/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate sits in the workspace")
        .to_path_buf()
}

/// A directory under the system temp dir, unique to this call.
pub fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{label}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A free TCP port on 127.0.0.1 (free when asked; bind it soon).
///
/// Ports come from [`PORTS`], below Linux's ephemeral range (32768–60999 by default), and
/// each is handed out in turn within a test process. A port picked by binding port 0 is an
/// ephemeral one: between the pick and the server's own bind, any outgoing connection of a
/// test running in parallel could take it as its local port, and the server would fail with
/// "address in use" (the likely cause of a CI failure: an agent that never logged
/// "listening"). Outgoing connections never take ports below the ephemeral range, and the
/// counter keeps two tests of one process from picking the same port.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let span = u32::from(PORTS.end - PORTS.start);
    // Start somewhere different in each process, so that processes running side by side
    // (two `cargo test` runs, a bench next to a test) rarely walk the same ports.
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % span,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..span {
        let offset = NEXT.fetch_add(1, Ordering::Relaxed) % span;
        let port = PORTS.start + u16::try_from(offset).expect("offset < span fits in u16");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORTS:?} on 127.0.0.1")
}

/// Where [`free_port`] picks: below the ephemeral range, above the well-known services.
pub const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Sends `request` as raw bytes on a new connection to `addr` and reads until the server
/// closes it; nothing is normalized on the way. The request is written from another thread,
/// since a server refusing a large body answers (and may close) before it has read all of it,
/// and that answer must still be read. A reset after the answer is not an error here.
pub fn raw_exchange(addr: std::net::SocketAddr, request: Vec<u8>) -> Vec<u8> {
    use std::io::{Read, Write};
    let timeout = Some(std::time::Duration::from_secs(60));
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(timeout).unwrap();
    stream.set_write_timeout(timeout).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let writing = std::thread::spawn(move || {
        let _ = writer.write_all(&request);
    });
    let mut raw = vec![];
    let _ = stream.read_to_end(&mut raw);
    let _ = writing.join();
    raw
}

/// Path to a tool installed by `scripts/install-test-tools`, with a clear failure if missing.
pub fn installed_tool(relative: &str) -> PathBuf {
    let path = workspace_root().join(".tools").join(relative);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-tools (the test command does this)",
        path.display()
    );
    path
}

/// One answer read off a [`KeptAliveConnection`].
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|error| panic!("{error}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 connection kept open across requests, read by hand, so a test can tell
/// whether a server's answer left the connection usable: the next request goes on the very
/// same socket. Requests are written whole (from another thread, so a server that answers
/// before reading all of a large body cannot dead-lock the test), answers are read by
/// `Content-Length` (what the servers here send for JSON).
pub struct KeptAliveConnection {
    stream: std::net::TcpStream,
    /// Bytes read past the previous answer.
    pending: Vec<u8>,
    /// The write in progress; the next one waits for it, so writes stay in order.
    writing: Option<std::thread::JoinHandle<()>>,
}

impl KeptAliveConnection {
    pub fn open(addr: std::net::SocketAddr) -> Self {
        let stream = std::net::TcpStream::connect(addr).unwrap();
        let timeout = Some(std::time::Duration::from_secs(60));
        stream.set_read_timeout(timeout).unwrap();
        stream.set_write_timeout(timeout).unwrap();
        Self {
            stream,
            pending: vec![],
            writing: None,
        }
    }

    /// Writes `request` (raw bytes: one or several pipelined requests).
    pub fn send(&mut self, request: Vec<u8>) {
        use std::io::Write;
        self.finish_writing();
        let mut writer = self.stream.try_clone().unwrap();
        self.writing = Some(std::thread::spawn(move || {
            let _ = writer.write_all(&request);
        }));
    }

    fn finish_writing(&mut self) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.join();
        }
    }

    /// Ends the request stream (a half-close): the server reads end-of-file next.
    pub fn close_write(&mut self) {
        self.finish_writing();
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Reads the next answer; `None` when the server closed (or reset) the connection first.
    pub fn read_response(&mut self) -> Option<RawResponse> {
        use std::io::Read;
        let mut chunk = [0u8; 64 * 1024];
        let head_end = loop {
            if let Some(at) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.pending.extend_from_slice(&chunk[..read]),
            }
        };
        let head = String::from_utf8_lossy(&self.pending[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(key, value)| (key.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(key, _)| key == "content-length")
            .map_or(0, |(_, value)| value.parse().unwrap());
        while self.pending.len() < head_end + length {
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(read) => self.pending.extend_from_slice(&chunk[..read]),
            }
        }
        let body = self.pending[head_end..head_end + length].to_vec();
        self.pending.drain(..head_end + length);
        Some(RawResponse {
            status,
            headers,
            body,
        })
    }

    /// Sends one request and reads its answer.
    pub fn exchange(&mut self, request: Vec<u8>) -> Option<RawResponse> {
        self.send(request);
        self.read_response()
    }

    /// True when the server closes the connection (end-of-stream or a reset) within `wait`.
    pub fn is_closed_by_server(&mut self, wait: std::time::Duration) -> bool {
        use std::io::{ErrorKind, Read};
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut byte = [0u8; 1];
        let closed = match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => false,
            Err(error) => !matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut),
        };
        self.stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        closed
    }
}

/// A raw HTTP/1.1 POST of a JSON `body` to `path` on `host`, with `extra` header lines
/// (`"Name: value"`), keeping the connection alive.
pub fn raw_json_post(host: &str, path: &str, extra: &[&str], body: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\n",
        body.len()
    );
    for line in extra {
        request.push_str(line);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let mut request = request.into_bytes();
    request.extend_from_slice(body);
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        // The kernel's range for ports it picks itself (bind to 0, outgoing connections).
        let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse().ok())
            .unwrap_or(32_768);
        let ports: Vec<u16> = (0..500).map(|_| free_port()).collect();
        let distinct: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "no port is handed out twice");
        for port in &ports {
            assert!(PORTS.contains(port), "{port} is in {PORTS:?}");
            assert!(*port < ephemeral_low, "{port} is below {ephemeral_low}");
        }
        // What it hands out can be bound (nothing was left holding it).
        std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    }
}
