//! The job vocabulary shared by the store, the worker and the tools.
//!
//! What callers see of a job (its id, states, status and result) is the wire contract in the
//! `sidecar-contract` crate, which the agent compiles against too; this module adds what only
//! the sidecar knows.

pub use sidecar_contract::{InvalidJobId, JobId, JobResult, JobState, JobStatus};

/// Where a finished job's artifact is, as recorded with the job.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    /// The store's name for the object: `<job_id>.png` in the local store,
    /// `renders/<job_id>.png` in a bucket (`artifacts::file_name`, `gcs::object_name`).
    pub key: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
}
