//! Several real `mcp-sidecar` processes sharing one real Redis, key prefix and artifact
//! directory, with raw reads of the job records for assertions.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{SidecarProcess, redis_server::RedisServer, start_sidecar_process_with, temp_dir};

pub struct Cluster {
    pub redis: Arc<RedisServer>,
    pub artifact_dir: PathBuf,
    pub prefix: String,
    /// Settings every sidecar of the cluster gets (before the per-sidecar ones).
    pub env: Vec<(String, String)>,
}

impl Cluster {
    /// A cluster on its own redis-server (without persistence) with a 2 s lease.
    pub fn new() -> Self {
        Self::on(Arc::new(RedisServer::start()), &[("JOB_LEASE", "2s")])
    }

    /// A cluster on `redis`, with `env` for every sidecar.
    pub fn on(redis: Arc<RedisServer>, env: &[(&str, &str)]) -> Self {
        let artifact_dir = temp_dir("shared-artifacts");
        let mut all = vec![
            ("REDIS_URL".to_owned(), redis.url()),
            (
                "REDIS_KEY_PREFIX".to_owned(),
                format!("c{}:", uuid::Uuid::new_v4().simple()),
            ),
            (
                "ARTIFACT_DIR".to_owned(),
                artifact_dir.to_str().unwrap().to_owned(),
            ),
        ];
        all.extend(
            env.iter()
                .map(|(key, value)| ((*key).to_owned(), (*value).to_owned())),
        );
        let prefix = all[1].1.clone();
        Self {
            redis,
            artifact_dir,
            prefix,
            env: all,
        }
    }

    /// A sidecar process with `workers` render workers (and `extra` settings).
    pub fn sidecar(&self, workers: &str, extra: &[(&str, &str)]) -> SidecarProcess {
        let mut env: Vec<(&str, &str)> = self
            .env
            .iter()
            .map(|(key, value)| (key.as_str(), value.as_str()))
            .collect();
        env.push(("RENDER_WORKERS", workers));
        start_sidecar_process_with(&env, extra)
    }

    /// Artifact files in the shared directory (temporary files included, so a leftover
    /// would show).
    pub fn artifacts(&self) -> Vec<String> {
        std::fs::read_dir(&self.artifact_dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// `fields` of each job's record, read straight from Redis in one pipeline (missing
    /// fields are empty strings).
    pub fn fields(&self, jobs: &[String], fields: &[&str]) -> Vec<Vec<String>> {
        let mut raw = self.redis.connection();
        let mut pipe = redis::pipe();
        for job in jobs {
            pipe.cmd("HMGET")
                .arg(format!("{}job:{job}", self.prefix))
                .arg(fields);
        }
        let rows: Vec<Vec<Option<String>>> = pipe.query(&mut raw).unwrap();
        rows.into_iter()
            .map(|row| row.into_iter().map(Option::unwrap_or_default).collect())
            .collect()
    }

    /// Each job's `state` field.
    pub fn states(&self, jobs: &[String]) -> Vec<(String, String)> {
        jobs.iter()
            .cloned()
            .zip(
                self.fields(jobs, &["state"])
                    .into_iter()
                    .map(|mut row| row.remove(0)),
            )
            .collect()
    }

    /// Waits until every job is terminal (`succeeded` or `failed`) and returns the final
    /// states. It fails only when progress stops: no job finished for `stall`. A wall-clock
    /// limit fails a slow or shared machine that is still finishing jobs steadily; a stall
    /// (nothing finishing while jobs remain) is the fault these tests look for.
    pub async fn wait_finished(&self, jobs: &[String], stall: Duration) -> Vec<(String, String)> {
        let mut finished_before = 0;
        let mut progressed_at = Instant::now();
        loop {
            let states = self.states(jobs);
            let count = |wanted: &[&str]| {
                states
                    .iter()
                    .filter(|(_, state)| wanted.contains(&state.as_str()))
                    .count()
            };
            let finished = count(&["succeeded", "failed"]);
            if finished == jobs.len() {
                return states;
            }
            if finished > finished_before {
                (finished_before, progressed_at) = (finished, Instant::now());
            }
            assert!(
                progressed_at.elapsed() < stall,
                "no job finished for {stall:?}: {finished} of {} finished, {} queued, {} running",
                jobs.len(),
                count(&["queued"]),
                count(&["running"]),
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Each job's `attempts` field.
    pub fn attempts(&self, jobs: &[String]) -> HashMap<String, u32> {
        jobs.iter()
            .cloned()
            .zip(
                self.fields(jobs, &["attempts"])
                    .into_iter()
                    .map(|row| row[0].parse().unwrap_or(0)),
            )
            .collect()
    }

    /// Entries in the shared work queue (queued or in progress).
    pub fn queue_length(&self) -> usize {
        redis::cmd("XLEN")
            .arg(format!("{}queue", self.prefix))
            .query(&mut self.redis.connection())
            .unwrap()
    }
}

/// Job ids the processes logged as succeeded (a process killed right after recording a
/// success may not have logged it).
pub fn logged_successes(processes: &[&SidecarProcess]) -> Vec<String> {
    processes
        .iter()
        .flat_map(|process| process.logged("render job succeeded"))
        .filter_map(|entry| entry["job_id"].as_str().map(str::to_owned))
        .collect()
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.artifact_dir);
    }
}
