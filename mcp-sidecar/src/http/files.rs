//! `GET /files/{job_id}?expires=…&signature=…`: downloads of the `local` artifact store's files,
//! for a valid, unexpired signed URL only (see `artifacts::local`). With the `gcs` store the
//! route answers 404: its URLs point at the bucket.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use super::{HttpState, not_found};
use crate::artifacts::{
    ArtifactStore,
    local::{ArtifactFile, Refusal},
};

/// The signed part of a download URL.
#[derive(serde::Deserialize)]
pub(super) struct DownloadQuery {
    expires: Option<String>,
    signature: Option<String>,
}

/// `GET /files/{job_id}?expires=…&signature=…`: a local-store artifact, for a valid URL only.
pub(super) async fn download(
    State(state): State<Arc<HttpState>>,
    Path(job_id): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Response {
    let ArtifactStore::Local(store) = &state.artifacts else {
        return not_found().await.into_response();
    };
    let ArtifactFile { path, kind } = match store.authorize(
        &job_id,
        query.expires.as_deref(),
        query.signature.as_deref(),
    ) {
        Ok(found) => found,
        Err(Refusal::Forbidden) => {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({ "error": "this download link is invalid or has expired; ask get_render_result for a new one" })),
            )
                .into_response();
        }
        Err(Refusal::NotFound) => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({ "error": "no such artifact" })),
            )
                .into_response();
        }
    };
    match tokio::fs::read(&path).await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, kind.content_type()),
                (header::CACHE_CONTROL, "private, max-age=300"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                // An SVG opened directly must not run anything, whatever it contains.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; sandbox",
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, path = %path.display(), "cannot read artifact");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": "internal error" })),
            )
                .into_response()
        }
    }
}
