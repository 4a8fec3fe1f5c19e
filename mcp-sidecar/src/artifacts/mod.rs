//! Where finished renders go, behind one interface: `local` files served by the sidecar, or a
//! `gcs` bucket. Both create an artifact at most once per job and hand out expiring URLs.

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

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArtifactError {
    /// Worth trying again later (network, 5xx, 429, I/O).
    #[error("{0}")]
    Retryable(String),
    /// Configuration or input problem that retrying will not fix.
    #[error("{0}")]
    Permanent(String),
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
            Self::Local(_) => format!("{job}.{}", kind.extension()),
            Self::Gcs(_) => gcs::GcsStore::object_name(job, kind),
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
                    .map_err(|error| ArtifactError::Retryable(format!("write task: {error}")))?
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
        let kind = record
            .key
            .rsplit('.')
            .next()
            .and_then(OutputKind::from_extension)
            .ok_or_else(|| {
                ArtifactError::Permanent(format!("artifact `{}` has no known type", record.key))
            })?;
        match self {
            Self::Local(store) => Ok(store.signed_url(job, ttl)),
            Self::Gcs(store) => store.signed_url(job, kind, ttl).await,
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
