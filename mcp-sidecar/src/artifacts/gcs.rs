//! The `gcs` artifact store: objects in a Cloud Storage bucket through the official
//! `google-cloud-storage` client, handed out as V4 signed GET URLs.
//!
//! - Objects are named `renders/{job_id}.{png|svg}` ([`object_name`]) and uploaded with
//!   `ifGenerationMatch=0` (create only if absent), so a retried job never makes a second object
//!   or overwrites one: a 412 answer means an earlier attempt of the same job already stored it.
//! - Uploads retry transient failures (408, 429, 5xx, I/O) with exponential backoff, bounded
//!   in attempts and time, then fail with the last error.
//! - URLs are signed by `google-cloud-auth`'s signer from Application Default Credentials: a
//!   service-account key file (`GOOGLE_APPLICATION_CREDENTIALS`) signs locally; on Cloud Run the
//!   metadata server's identity signs through IAM `signBlob`, which needs
//!   `roles/iam.serviceAccountTokenCreator` on the runtime service account itself.
//! - `GCS_ENDPOINT` points the client (anonymous credentials) and the signed URLs at an
//!   emulator for local runs and tests.

use std::time::{Duration, SystemTime};

use google_cloud_auth::signer::Signer;
use google_cloud_gax::{
    exponential_backoff::ExponentialBackoffBuilder, retry_policy::RetryPolicyExt,
};
use google_cloud_storage::{
    builder::storage::SignedUrlBuilder, client::Storage, retry_policy::RetryableErrors,
};

use super::{ArtifactError, Placed, SignedUrl, file_name};
use crate::{jobs::model::JobId, render::spec::OutputKind};

/// The folder of the bucket every artifact goes in.
const OBJECT_FOLDER: &str = "renders/";

/// The object a job's artifact of type `kind` is stored as: `renders/{job_id}.{png|svg}`.
pub fn object_name(job: &JobId, kind: OutputKind) -> String {
    format!("{OBJECT_FOLDER}{}", file_name(job, kind))
}

/// How the GCS store is set up.
#[derive(Debug, Clone)]
pub struct GcsSettings {
    pub bucket: String,
    /// Emulator or alternative endpoint; `None` for Google's.
    pub endpoint: Option<String>,
    /// Attempts per upload, the first included.
    pub upload_attempts: u32,
    /// Bound on one upload including its retries.
    pub upload_timeout: Duration,
}

#[derive(Clone)]
pub struct GcsStore {
    client: Storage,
    signer: Signer,
    bucket: String,
    endpoint: Option<String>,
}

impl std::fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl GcsStore {
    /// Builds the client and the URL signer. Contacts nothing yet: credentials are fetched on
    /// first use.
    pub async fn new(settings: &GcsSettings) -> Result<Self, ArtifactError> {
        let backoff = ExponentialBackoffBuilder::new()
            .with_initial_delay(Duration::from_millis(200))
            .with_maximum_delay(Duration::from_secs(2))
            .build()
            .map_err(|error| ArtifactError::new(format!("backoff policy: {error}")))?;
        let mut builder = Storage::builder()
            .with_retry_policy(
                RetryableErrors
                    .with_attempt_limit(settings.upload_attempts.max(1))
                    .with_time_limit(settings.upload_timeout),
            )
            .with_backoff_policy(backoff);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.clone()).with_credentials(
                google_cloud_auth::credentials::anonymous::Builder::new().build(),
            );
        }
        let client = builder.build().await.map_err(|error| {
            ArtifactError::new(format!("cannot build the Cloud Storage client: {error}"))
        })?;
        let signer = google_cloud_auth::credentials::Builder::default()
            .build_signer()
            .map_err(|error| {
                ArtifactError::new(format!(
                    "cannot build a URL signer from Application Default Credentials \
                     (set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or run \
                     with a service account that may sign for itself): {error}"
                ))
            })?;
        Ok(Self {
            client,
            signer,
            bucket: settings.bucket.clone(),
            endpoint: settings.endpoint.clone(),
        })
    }

    fn bucket_path(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    #[tracing::instrument(name = "gcs.upload", skip_all, fields(job_id = %job, bucket = %self.bucket), err)]
    pub async fn put(
        &self,
        job: &JobId,
        kind: OutputKind,
        bytes: bytes::Bytes,
    ) -> Result<Placed, ArtifactError> {
        let name = object_name(job, kind);
        let uploaded = self
            .client
            .write_object(self.bucket_path(), &name, bytes)
            .set_content_type(kind.content_type())
            .set_if_generation_match(0_i64)
            .send_unbuffered()
            .await;
        match uploaded {
            Ok(_) => Ok(Placed::Created),
            // Precondition failed: the object exists, written by an earlier attempt of this job.
            Err(error) if error.http_status_code() == Some(412) => Ok(Placed::AlreadyExisted),
            Err(error) => {
                let status = error
                    .http_status_code()
                    .map(|code| format!(" (HTTP {code})"))
                    .unwrap_or_default();
                Err(ArtifactError::new(format!(
                    "uploading gs://{}/{name} failed{status}: {error}",
                    self.bucket
                )))
            }
        }
    }

    /// The artifact's bytes, if there are at most `max` of them.
    pub async fn read(
        &self,
        job: &JobId,
        kind: OutputKind,
        max: u64,
    ) -> Result<bytes::Bytes, ArtifactError> {
        let name = object_name(job, kind);
        let failed = |error: &dyn std::fmt::Display| {
            ArtifactError::new(format!(
                "reading gs://{}/{name} failed: {error}",
                self.bucket
            ))
        };
        let mut response = self
            .client
            .read_object(self.bucket_path(), &name)
            .send()
            .await
            .map_err(|error| failed(&error))?;
        let mut contents = Vec::new();
        while let Some(chunk) = response.next().await.transpose().map_err(|e| failed(&e))? {
            if (contents.len() + chunk.len()) as u64 > max {
                return Err(failed(&format!("the object is larger than {max} bytes")));
            }
            contents.extend_from_slice(&chunk);
        }
        Ok(bytes::Bytes::from(contents))
    }

    pub async fn signed_url(
        &self,
        job: &JobId,
        kind: OutputKind,
        ttl: Duration,
    ) -> Result<SignedUrl, ArtifactError> {
        let mut builder = SignedUrlBuilder::for_object(self.bucket_path(), object_name(job, kind))
            .with_method(google_cloud_storage::http::Method::GET)
            .with_expiration(ttl);
        if let Some(endpoint) = &self.endpoint {
            builder = builder.with_endpoint(endpoint.clone());
        }
        let expires_at = SystemTime::now() + ttl;
        let url = builder.sign_with(&self.signer).await.map_err(|error| {
            ArtifactError::new(format!("signing the download URL failed: {error}"))
        })?;
        Ok(SignedUrl { url, expires_at })
    }
}
