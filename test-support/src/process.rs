//! A workspace binary running as its own process, with its JSON log lines collected.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use serde_json::Value;

/// A running service process; killed when dropped.
pub struct ServiceProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Every JSON log line it has written so far.
    pub logs: Arc<Mutex<Vec<Value>>>,
}

impl ServiceProcess {
    /// Starts `binary` with `env` (JSON logs forced) and waits for its "listening" log line,
    /// which carries the bound address.
    pub fn start(binary: &Path, env: &[(&str, &str)]) -> Self {
        let process = Self::start_until(binary, env, "listening");
        // A bound address never has port 0; 0 means the line had no `addr`.
        assert_ne!(
            process.addr.port(),
            0,
            "the \"listening\" line carries the bound address"
        );
        process
    }

    /// Like [`ServiceProcess::start`], for a process that may listen on nothing: waits for the
    /// log line whose message is `ready`. `addr` is that line's `addr` field, or `0.0.0.0:0`
    /// when it has none.
    pub fn start_until(binary: &Path, env: &[(&str, &str)], ready: &str) -> Self {
        let label = binary
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut child = Command::new(binary)
            .env("LOG_FORMAT", "json")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|error| panic!("{label} starts: {error}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (sender, receiver) = std::sync::mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let collected = logs.clone();
        let prefix = label.clone();
        let ready_message = ready.to_owned();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(entry) = serde_json::from_str::<Value>(&line) {
                    if !sent && entry["message"] == ready_message.as_str() {
                        let addr = entry["addr"]
                            .as_str()
                            .and_then(|a| a.parse().ok())
                            .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0)));
                        let _ = sender.send(addr);
                        sent = true;
                    }
                    collected.lock().unwrap().push(entry);
                }
                // Keep draining so the child never blocks on a full pipe; show it for debugging.
                println!("[{prefix}] {line}");
            }
        });
        let addr: SocketAddr = match receiver.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            // The reader hung up: stdout closed before the line, so the process has ended.
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().expect("the process can be waited on");
                panic!("{label} exited ({status}) before logging \"{ready}\"; its stderr is above")
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{label} did not log \"{ready}\" within 30 s")
            }
        };
        Self { addr, child, logs }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Log lines whose message is `message`.
    pub fn logged(&self, message: &str) -> Vec<Value> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter(|entry| entry["message"] == message)
            .cloned()
            .collect()
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.child.wait().expect("the process exits")
    }

    /// Sends SIGTERM and returns at once (see [`ServiceProcess::wait_exit`]).
    pub fn send_sigterm(&self) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
    }

    /// Waits up to `limit` for the process to exit; `None` if it is still running then.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("the process can be waited on") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, else `target/`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

/// A debug binary of this workspace, built first if a `cargo test -p …` did not build it.
pub fn workspace_binary(name: &str) -> PathBuf {
    let path = target_dir().join("debug").join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--bin", name])
            .current_dir(crate::workspace_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building {name}");
    }
    path
}
