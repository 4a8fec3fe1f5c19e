//! Google ID tokens for calling Cloud Run services that require IAM, from google-cloud-auth's
//! ID-token credentials built by Application Default Credentials: the service account key file
//! named by `GOOGLE_APPLICATION_CREDENTIALS`, else the metadata server (whose host:port
//! `GCE_METADATA_HOST` overrides; `format=full`, so the token carries the account's email, as
//! the hand-written client this replaced asked for).
//!
//! The library caches each token and fetches the next one in the background four minutes
//! before the current one expires (`NORMAL_REFRESH_SLACK` in google-cloud-auth's
//! `token_cache.rs`). Asking for the token on every use is therefore cheap, and a token that
//! differs from the one a connection was made with tells [`super::upstream`] to reconnect.

use google_cloud_auth::credentials::idtoken::{self, IDTokenCredentials};
use tokio::sync::Mutex;

use crate::llm::error_chain;

#[derive(Debug, thiserror::Error)]
pub enum IdTokenError {
    /// Application Default Credentials cannot give ID tokens (an unreadable key file, or a
    /// kind such as gcloud's user credentials that has no ID tokens for an audience).
    #[error(
        "cannot set up Google ID-token credentials (Application Default Credentials must be a \
         service account key file named by GOOGLE_APPLICATION_CREDENTIALS, or the metadata \
         server): {0}"
    )]
    Credentials(String),
    #[error("no Google ID token for audience {audience}: {reason}")]
    Fetch { audience: String, reason: String },
}

/// ID tokens for one audience.
pub struct IdTokenSource {
    audience: String,
    credentials: Mutex<IDTokenCredentials>,
}

impl std::fmt::Debug for IdTokenSource {
    /// The audience only: the credentials' own `Debug` may show a cached token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdTokenSource {{ audience: {:?}, .. }}", self.audience)
    }
}

impl IdTokenSource {
    /// Credentials for `audience`, from Application Default Credentials. No network I/O, but
    /// it must run inside a Tokio runtime: the library starts its refresh task here.
    pub fn new(audience: String) -> Result<Self, IdTokenError> {
        let credentials = build(&audience)?;
        Ok(Self {
            audience,
            credentials: Mutex::new(credentials),
        })
    }

    /// A token that is not about to expire: the cached one, or the first one, waited for.
    pub async fn token(&self) -> Result<String, IdTokenError> {
        let credentials = self.credentials.lock().await.clone();
        match credentials.id_token().await {
            Ok(token) => Ok(token),
            Err(error) => {
                // Once a fetch fails for good, the library's refresh task stops and its cache
                // answers that error forever (`refresh_task` in token_cache.rs returns after
                // sending a non-transient error). Fresh credentials let the next attempt
                // (the supervisor retries with backoff) ask again.
                *self.credentials.lock().await = build(&self.audience)?;
                Err(IdTokenError::Fetch {
                    audience: self.audience.clone(),
                    reason: error_chain(&error),
                })
            }
        }
    }
}

fn build(audience: &str) -> Result<IDTokenCredentials, IdTokenError> {
    idtoken::Builder::new(audience)
        .with_include_email()
        .build()
        .map_err(|error| IdTokenError::Credentials(error_chain(&error)))
}
