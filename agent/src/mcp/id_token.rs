//! Google ID tokens from the metadata server, for calling Cloud Run services that require IAM.
//!
//! `GET http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity?audience=<aud>&format=full`
//! with `Metadata-Flavor: Google` returns a signed JWT for the instance's service account.
//! `GCE_METADATA_HOST` (host:port) overrides the host, as Google's own libraries allow.
//!
//! A token is reused until [`REFRESH_BEFORE_EXPIRY`] before its `exp`, then fetched again; one
//! fetch at a time per audience.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use tokio::sync::Mutex;

/// Refresh this long before a token's expiry, so no request carries one about to lapse.
pub const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(5 * 60);
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    #[error("the metadata server did not give an ID token: {0}")]
    Fetch(String),
    #[error("the metadata server's ID token is not a JWT with an expiry: {0}")]
    Malformed(String),
}

/// A cached ID token.
#[derive(Clone)]
pub struct IdToken {
    pub token: String,
    pub expires_at: SystemTime,
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdToken")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl IdToken {
    /// True once the token is within [`REFRESH_BEFORE_EXPIRY`] of expiring.
    pub fn refresh_due(&self) -> bool {
        SystemTime::now() + REFRESH_BEFORE_EXPIRY >= self.expires_at
    }
}

/// ID tokens for one audience.
#[derive(Debug)]
pub struct IdTokenSource {
    audience: String,
    metadata_host: String,
    http: reqwest::Client,
    cached: Mutex<Option<IdToken>>,
}

impl IdTokenSource {
    pub fn new(audience: String, http: reqwest::Client) -> Self {
        let metadata_host =
            std::env::var("GCE_METADATA_HOST").unwrap_or_else(|_| DEFAULT_METADATA_HOST.to_owned());
        Self::with_metadata_host(audience, metadata_host, http)
    }

    pub fn with_metadata_host(
        audience: String,
        metadata_host: String,
        http: reqwest::Client,
    ) -> Self {
        Self {
            audience,
            metadata_host,
            http,
            cached: Mutex::new(None),
        }
    }

    /// A token valid for at least [`REFRESH_BEFORE_EXPIRY`]: the cached one, or a new one.
    pub async fn token(&self) -> Result<IdToken, IdTokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(token) = cached.as_ref()
            && !token.refresh_due()
        {
            return Ok(token.clone());
        }
        let token = self.fetch().await?;
        *cached = Some(token.clone());
        Ok(token)
    }

    async fn fetch(&self) -> Result<IdToken, IdTokenError> {
        let url = format!(
            "http://{}/computeMetadata/v1/instance/service-accounts/default/identity",
            self.metadata_host
        );
        let response = self
            .http
            .get(url)
            .query(&[("audience", self.audience.as_str()), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|error| IdTokenError::Fetch(error.to_string()))?;
        let status = response.status();
        let body = response
            .text()
            .await
            .map_err(|error| IdTokenError::Fetch(error.to_string()))?;
        if !status.is_success() {
            let excerpt: String = body.chars().take(200).collect();
            return Err(IdTokenError::Fetch(format!("HTTP {status}: {excerpt}")));
        }
        let token = body.trim().to_owned();
        let expires_at = jwt_expiry(&token)?;
        tracing::debug!(audience = %self.audience, "fetched an ID token");
        Ok(IdToken { token, expires_at })
    }
}

/// The `exp` claim of a JWT (not verified: the token is ours to send, not to trust).
fn jwt_expiry(token: &str) -> Result<SystemTime, IdTokenError> {
    let payload = token
        .split('.')
        .nth(1)
        .ok_or_else(|| IdTokenError::Malformed("no payload part".into()))?;
    let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed("payload is not base64url".into()))?;
    let claims: serde_json::Value = serde_json::from_slice(&decoded)
        .map_err(|error| IdTokenError::Malformed(error.to_string()))?;
    let exp = claims["exp"]
        .as_u64()
        .ok_or_else(|| IdTokenError::Malformed("no numeric exp claim".into()))?;
    Ok(UNIX_EPOCH + Duration::from_secs(exp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_expiry_comes_from_the_exp_claim() {
        // {"alg":"RS256"}.{"aud":"x","exp":2000000000}.sig
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4IiwiZXhwIjoyMDAwMDAwMDAwfQ.c2ln";
        let expiry = jwt_expiry(token).unwrap();
        assert_eq!(expiry, UNIX_EPOCH + Duration::from_secs(2_000_000_000));
        assert!(jwt_expiry("not-a-jwt").is_err());
        assert!(jwt_expiry("a.!!!.c").is_err());
    }
}
