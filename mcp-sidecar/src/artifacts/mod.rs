//! Where finished renders go, behind one interface: `local` files served by the sidecar, or a
//! `gcs` bucket. Both create an artifact at most once per job and hand out expiring URLs.
//!
//! A job's artifact is named after the job and its type, `{job_id}.{png|svg}` ([`file_name`]):
//! the local store keeps it under that name in its directory, the gcs store as
//! `renders/{job_id}.{png|svg}` in its bucket. [`ArtifactStore::key`] is the name recorded with
//! the job; its extension gives the type back when a download URL is signed.

pub mod gcs;
pub mod local;

use std::time::{Duration, SystemTime};

use crate::{
    jobs::model::{ArtifactRecord, JobId},
    render::spec::OutputKind,
};

/// Whether `put` created the artifact or found it already there (from an earlier attempt of
/// the same job, which rendered the same bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Created,
    AlreadyExisted,
}

/// Why an artifact-store operation failed; the message says what failed and where.
///
/// Nothing retries on the strength of this error: the gcs client retries transient failures
/// itself (bounded), and a job whose upload still fails ends failed with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ArtifactError(String);

impl ArtifactError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The name of a job's artifact of type `kind`: `{job_id}.{png|svg}`.
pub fn file_name(job: &JobId, kind: OutputKind) -> String {
    format!("{job}.{}", kind.extension())
}

/// The type of the artifact a recorded name (either store's) names, from its extension.
fn kind_of(key: &str) -> Option<OutputKind> {
    key.rsplit_once('.')
        .and_then(|(_, extension)| OutputKind::from_extension(extension))
}

/// A download URL and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub url: String,
    pub expires_at: SystemTime,
}

#[derive(Debug, Clone)]
pub enum ArtifactStore {
    Local(local::LocalStore),
    Gcs(Box<gcs::GcsStore>),
}

impl ArtifactStore {
    /// The name the store gives a job's artifact (recorded with the job).
    pub fn key(&self, job: &JobId, kind: OutputKind) -> String {
        match self {
            Self::Local(_) => file_name(job, kind),
            Self::Gcs(_) => gcs::object_name(job, kind),
        }
    }

    /// Stores a job's artifact unless it is already stored.
    pub async fn put(
        &self,
        job: &JobId,
        kind: OutputKind,
        bytes: bytes::Bytes,
    ) -> Result<Placed, ArtifactError> {
        match self {
            Self::Local(store) => {
                let store = store.clone();
                let job = job.clone();
                tokio::task::spawn_blocking(move || store.put(&job, kind, &bytes))
                    .await
                    .map_err(|error| ArtifactError::new(format!("write task: {error}")))?
            }
            Self::Gcs(store) => store.put(job, kind, bytes).await,
        }
    }

    /// A URL that downloads the artifact of `record` for `ttl`.
    pub async fn signed_url(
        &self,
        job: &JobId,
        record: &ArtifactRecord,
        ttl: Duration,
    ) -> Result<SignedUrl, ArtifactError> {
        let kind = kind_of(&record.key).ok_or_else(|| {
            ArtifactError::new(format!("artifact `{}` has no known type", record.key))
        })?;
        match self {
            Self::Local(store) => Ok(store.signed_url(job, ttl)),
            Self::Gcs(store) => store.signed_url(job, kind, ttl).await,
        }
    }

    /// The bytes of the artifact of `record`, if there are at most `max` of them.
    pub async fn read(
        &self,
        job: &JobId,
        record: &ArtifactRecord,
        max: u64,
    ) -> Result<bytes::Bytes, ArtifactError> {
        let kind = kind_of(&record.key).ok_or_else(|| {
            ArtifactError::new(format!("artifact `{}` has no known type", record.key))
        })?;
        match self {
            Self::Local(store) => {
                let store = store.clone();
                let job = job.clone();
                tokio::task::spawn_blocking(move || store.read(&job, kind, max))
                    .await
                    .map_err(|error| ArtifactError::new(format!("read task: {error}")))?
                    .map(bytes::Bytes::from)
            }
            Self::Gcs(store) => store.read(job, kind, max).await,
        }
    }

    /// What `/readyz` reports about the store.
    pub fn describe(&self) -> String {
        match self {
            Self::Local(store) => format!("local:{}", store.dir().display()),
            Self::Gcs(store) => format!("gcs:{store:?}"),
        }
    }
}
