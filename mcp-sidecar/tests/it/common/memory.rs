//! A process's resident memory, from `/proc/<pid>/status`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

/// Samples the process's resident memory every few milliseconds, keeping the largest value.
pub struct MemorySampler {
    pid: u32,
    peak_sampled_kib: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl MemorySampler {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (peak_in, stop_in) = (peak.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop_in.load(Ordering::SeqCst) {
                if let Some(rss) = proc_status_kib(pid, "VmRSS") {
                    peak_in.fetch_max(rss, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        Self {
            pid,
            peak_sampled_kib: peak,
            stop,
        }
    }

    pub fn rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmRSS").expect("the sidecar process exists")
    }

    /// The largest sample since the last call (or the start), restarting from the current RSS.
    pub fn take_sampled_peak_kib(&self) -> u64 {
        self.peak_sampled_kib.swap(self.rss_kib(), Ordering::SeqCst)
    }

    /// The kernel's high-water mark of resident memory (catches spikes between samples).
    pub fn high_water_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM").expect("the sidecar process exists")
    }
}

impl Drop for MemorySampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}
