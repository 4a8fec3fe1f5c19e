//! The job vocabulary shared by the store, the worker and the tools.

use std::{fmt, str::FromStr};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A render job's id: 32 lowercase hex digits (a UUIDv7, so ids sort by creation time).
///
/// Parsing is strict, so an id can go into a Redis key or a file name without escaping:
/// nothing that is not 32 hex digits (`../`, `/`, `%2e`, whitespace) is ever a `JobId`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub const LEN: usize = 32;

    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job id: job ids are 32 lowercase hex digits, as start_render returned")]
pub struct InvalidJobId(String);

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() == Self::LEN
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            // Keep error messages bounded whatever was sent.
            let shown: String = text.chars().take(64).collect();
            Err(InvalidJobId(shown))
        }
    }
}

/// The four states of the job contract. `Succeeded` and `Failed` are terminal: once a job
/// reaches one it never changes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

impl FromStr for JobState {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "queued" => Ok(Self::Queued),
            "running" => Ok(Self::Running),
            "succeeded" => Ok(Self::Succeeded),
            "failed" => Ok(Self::Failed),
            other => Err(format!("unknown job state `{other}`")),
        }
    }
}

/// The error a cancelled job ends with.
pub const CANCELLED: &str = "cancelled";

/// What `get_render_status` (and `cancel_render`) return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobStatus {
    /// The job's id.
    pub job_id: String,
    /// queued, running, succeeded or failed. succeeded and failed are final.
    pub state: JobState,
    /// The pipeline stage in progress (1-based); 0 while queued; equals total_stages on success.
    pub stage: u32,
    /// How many stages this job's pipeline has.
    pub total_stages: u32,
    /// Progress in words, e.g. "[2/4] rasterizing".
    pub message: String,
    /// Why the job failed ("cancelled" when it was cancelled). Present only when failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// What `get_render_result` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobResult {
    /// The job's id.
    pub job_id: String,
    /// True only once the job has succeeded and its artifact can be downloaded.
    pub ready: bool,
    /// The job's state (see get_render_status).
    pub state: JobState,
    /// A time-limited download URL for the artifact (signed). Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    /// When the URL stops working, RFC 3339 UTC. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<String>,
    /// The artifact's media type: image/png or image/svg+xml. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    /// The artifact's size in bytes. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    /// Hex SHA-256 of the artifact, to check a download. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Why the job failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// Where a finished job's artifact is, as recorded with the job.
#[derive(Debug, Clone, PartialEq)]
pub struct ArtifactRecord {
    /// The store's name for the object, e.g. `renders/<job_id>.png`.
    pub key: String,
    pub content_type: String,
    pub bytes: u64,
    pub sha256: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_strict_hex_and_nothing_else() {
        let id = JobId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<JobId>(), Ok(id.clone()));
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcde/",
            "0123456789abcdef0123456789abcdef0",
            "%2e%2e%2f",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_succeeded_and_failed_are_terminal() {
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::Succeeded.is_terminal());
        assert!(JobState::Failed.is_terminal());
    }
}
