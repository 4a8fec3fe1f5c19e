//! Optional bearer auth for `/mcp`: when a token is configured, a request without
//! `Authorization: Bearer <token>` is answered 401 before its body is read.

use axum::{
    Json,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 of a bearer token: what the configured token is kept as, and what a presented
/// one is compared by.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// True when `headers` carry `Authorization: Bearer <token>` for the configured token.
///
/// Both sides are hashed first so the comparison is constant-time in the token's content and
/// its length.
pub(super) fn bearer_token_matches(headers: &HeaderMap, expected_digest: &[u8; 32]) -> bool {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
    else {
        return false;
    };
    token_digest(presented).ct_eq(expected_digest).into()
}

/// 401 with `WWW-Authenticate: Bearer`.
pub(super) fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "error": "missing or invalid bearer token" })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}
