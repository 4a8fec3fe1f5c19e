//! `GET /files/{job_id}?expires=…&signature=…`: the local artifact store's downloads, proxied to
//! the sidecar. The sidecar is only reachable inside the instance, so with `ARTIFACT_STORE=local`
//! its `PUBLIC_BASE_URL` points here and one published port serves everything. The sidecar
//! checks the signature; this only forwards, streaming the body.

use std::sync::Arc;

use axum::{
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};

/// Response headers worth passing on from the sidecar.
const FORWARDED: [&str; 5] = [
    "content-type",
    "content-length",
    "cache-control",
    "x-content-type-options",
    "content-security-policy",
];

pub async fn proxy(
    State(state): State<Arc<AppState>>,
    Path(job_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let mut url = format!(
        "{}/files/{}",
        state.sidecar_origin,
        urlencode_segment(&job_id)
    );
    if let Some(query) = query {
        url.push('?');
        url.push_str(&query);
    }
    let response = state.http.get(&url).send().await.map_err(|error| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the sidecar is unavailable for downloads: {error}"),
        )
    })?;
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut headers = HeaderMap::new();
    for name in FORWARDED {
        if let Some(value) = response.headers().get(name) {
            headers.insert(name, value.clone());
        }
    }
    let body = Body::from_stream(response.bytes_stream());
    Ok((status, headers, body).into_response())
}

/// Percent-encodes everything but unreserved characters, so a path segment stays one segment.
fn urlencode_segment(segment: &str) -> String {
    segment
        .bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                (byte as char).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
