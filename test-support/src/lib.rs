//! What the workspace's integration tests share: a real `redis-server`, the workspace's
//! binaries as real processes on free loopback ports, temporary directories, and the test
//! tools installed under `.tools/` by `scripts/install-test-tools`.
#![allow(clippy::unwrap_used)] // test set-up: a failure should panic loudly

pub mod otlp;
pub mod process;
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
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

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
