//! The render-job tools: `start_render`, `get_render_status`, `get_render_result`,
//! `cancel_render`, `list_renders`. Each answers at once; the rendering itself happens in the
//! workers after `start_render` has returned.

use std::time::Duration;

use service_core::telemetry::propagation;
pub use sidecar_contract::{JobIdInput, ListRendersInput, ListRendersOutput, StartRenderOutput};

use crate::{
    artifacts::ArtifactStore,
    jobs::{
        events::TaskEvents,
        model::{JobId, JobResult, JobState, JobStatus},
        store::{Enqueued, JobStore, StoreError, StoredResult},
    },
    render::spec::{MAX_IDEMPOTENCY_KEY_CHARS, RenderSpec, RenderSpecInput},
};

/// Most jobs `list_renders` returns.
pub const MAX_LIST_LIMIT: u32 = 100;
const DEFAULT_LIST_LIMIT: u32 = 20;

/// What the render tools need.
#[derive(Debug, Clone)]
pub struct RenderTools {
    pub store: JobStore,
    pub artifacts: ArtifactStore,
    pub signed_url_ttl: Duration,
    /// Job changes as they happen, for `render` calls that wait.
    pub events: TaskEvents,
    pub tasks: super::tasks::TaskSettings,
}

/// Arguments of `start_render`: the contract's, with the spec in the sidecar's own types.
pub type StartRenderInput = sidecar_contract::StartRenderInput<RenderSpecInput>;

/// A render tool's failure, worded for the caller.
#[derive(Debug, thiserror::Error)]
pub enum RenderToolError {
    #[error(transparent)]
    Spec(#[from] crate::render::spec::SpecError),
    #[error(transparent)]
    JobId(#[from] crate::jobs::model::InvalidJobId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Argument(String),
    #[error("the job succeeded but its download URL could not be made: {0}")]
    Url(String),
}

impl super::ToolFailure for RenderToolError {
    fn failure(&self) -> super::ErrorCode {
        use super::ErrorCode;
        match self {
            Self::Spec(_) | Self::JobId(_) | Self::Argument(_) => ErrorCode::InvalidArguments,
            Self::Store(StoreError::NotFound(_)) => ErrorCode::NotFound,
            Self::Store(StoreError::IdempotencyConflict(_)) => ErrorCode::Conflict,
            Self::Store(
                StoreError::Unavailable(_)
                | StoreError::QueueFull(_)
                | StoreError::NotReplicated { .. },
            ) => ErrorCode::Unavailable,
            Self::Store(StoreError::Corrupt(_)) | Self::Url(_) => ErrorCode::Internal,
        }
    }
}

fn rfc3339(time: std::time::SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl RenderTools {
    pub async fn start(
        &self,
        input: StartRenderInput,
    ) -> Result<StartRenderOutput, RenderToolError> {
        if let Some(key) = &input.idempotency_key {
            let length = key.chars().count();
            if length == 0 || length > MAX_IDEMPOTENCY_KEY_CHARS {
                return Err(RenderToolError::Argument(format!(
                    "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_CHARS} characters"
                )));
            }
        }
        let spec = RenderSpec::try_from(input.spec)?;
        let total_stages = u32::try_from(spec.stages().len()).unwrap_or(u32::MAX);
        let Enqueued { id, created } = self
            .store
            .enqueue(
                &spec.to_json(),
                total_stages,
                input.idempotency_key.as_deref(),
                // The worker continues this trace, whichever sidecar runs the job.
                &propagation::current_traceparent().unwrap_or_default(),
            )
            .await?;
        tracing::Span::current().record("job_id", id.as_str());
        tracing::info!(job_id = %id, created, "render job started");
        let state = if created {
            JobState::Queued
        } else {
            self.store.status(&id).await?.state
        };
        Ok(StartRenderOutput { job_id: id, state })
    }

    pub async fn status(&self, input: JobIdInput) -> Result<JobStatus, RenderToolError> {
        let id: JobId = input.job_id.parse()?;
        tracing::Span::current().record("job_id", id.as_str());
        Ok(self.store.status(&id).await?)
    }

    pub async fn result(&self, input: JobIdInput) -> Result<JobResult, RenderToolError> {
        let id: JobId = input.job_id.parse()?;
        tracing::Span::current().record("job_id", id.as_str());
        let StoredResult {
            mut result,
            artifact: record,
        } = self.store.artifact(&id).await?;
        if let Some(record) = record {
            let signed = self
                .artifacts
                .signed_url(&id, &record, self.signed_url_ttl)
                .await
                .map_err(|error| RenderToolError::Url(error.to_string()))?;
            result.url = Some(signed.url);
            result.expires_at = Some(rfc3339(signed.expires_at));
        }
        Ok(result)
    }

    pub async fn cancel(&self, input: JobIdInput) -> Result<JobStatus, RenderToolError> {
        let id: JobId = input.job_id.parse()?;
        tracing::Span::current().record("job_id", id.as_str());
        Ok(self.store.cancel(&id).await?)
    }

    pub async fn list(
        &self,
        input: ListRendersInput,
    ) -> Result<ListRendersOutput, RenderToolError> {
        let limit = input.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        if !(1..=MAX_LIST_LIMIT).contains(&limit) {
            return Err(RenderToolError::Argument(format!(
                "limit must be between 1 and {MAX_LIST_LIMIT}"
            )));
        }
        let jobs = self
            .store
            .list(input.state, usize::try_from(limit).unwrap_or(20))
            .await?;
        Ok(ListRendersOutput { jobs })
    }
}
