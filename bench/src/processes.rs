//! The real programs a benchmark measures, started on free loopback ports and stopped when
//! dropped: `redis-server` and the release binaries of this workspace.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

/// A free loopback port below the ephemeral range (see [`test_support::free_port`]): the
/// load generators' own connections cannot take it before the server binds it.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(test_support::free_port())
}

/// The workspace's `target/release` directory.
pub fn release_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release")
}

pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    pub fn start() -> anyhow::Result<Self> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?;
        let redis = Self { port, child };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.connection().is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time (user + system, all threads) process `pid` has used so far, in ms. `/proc` counts
/// it in USER_HZ ticks, which Linux fixes at 100 a second for user space: 10 ms resolution.
pub fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces; the fields after its `)` are fixed.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("/proc/pid/stat without a command name")?
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the state (field 3).
    let ticks = |index: usize| -> anyhow::Result<f64> {
        Ok(fields
            .get(index)
            .context("/proc/pid/stat too short")?
            .parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) * 10.0)
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A release binary of this workspace running as its own process.
pub struct Server {
    pub addr: SocketAddr,
    pub child: Child,
}

impl Server {
    /// Starts `binary` with `env` and waits for its JSON "listening" log line.
    pub fn start(binary: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "warn,mcp_sidecar=info,agent=info")
            .envs(env.iter().map(|(key, value)| (*key, value.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<serde_json::Value>(&line)
                    && entry["message"] == "listening"
                    && let Some(addr) = entry["addr"].as_str().and_then(|a| a.parse().ok())
                {
                    let _ = sender.send(addr);
                }
            }
        });
        let addr = receiver
            .recv_timeout(Duration::from_secs(20))
            .with_context(|| format!("{} did not log its address", binary.display()))?;
        Ok(Self { addr, child })
    }

    /// Starts any command that will listen on `addr`, and waits until it accepts connections.
    pub fn start_command(mut command: Command, addr: SocketAddr) -> anyhow::Result<Self> {
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the server")?;
        let server = Self { addr, child };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(addr).is_err() {
            if Instant::now() > deadline {
                bail!("{addr} never accepted connections");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// (resident, peak resident) memory in KiB, from /proc.
    pub fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        memory_kib(self.pid())
    }
}

/// (VmRSS, VmHWM) of a process, in KiB.
pub fn memory_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .with_context(|| format!("{name} in /proc/{pid}/status"))?;
        Ok(line
            .split_whitespace()
            .nth(1)
            .context("a number")?
            .parse()?)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A unique temporary directory, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(label: &str) -> anyhow::Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("bench-{label}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
