//! How the sidecar reaches Redis: `redis://` or `rediss://` (TLS, as Memorystore's in-transit
//! encryption requires), the server's CA from `REDIS_CA_FILE` (else the system's roots), and
//! AUTH from the URL or from `REDIS_USERNAME`/`REDIS_PASSWORD` (a Secret Manager secret is
//! usually mounted as an environment variable, not spliced into a URL).
//!
//! Nothing here connects: the client connects on first use and again after every failure, so
//! a wrong CA or password shows up as `/readyz`'s reason (see [`explain`]) rather than as a
//! crash loop while Redis is merely slow to come up.

use std::path::Path;

use redis::{Client, IntoConnectionInfo, TlsCertificates};

/// Why the Redis settings cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "REDIS_URL is not a Redis URL ({0}); write it like redis://10.0.0.3:6379 or rediss://10.0.0.3:6378"
    )]
    Url(String),
    #[error("cannot read REDIS_CA_FILE {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error(
        "REDIS_CA_FILE {0} holds no PEM certificate (it should start with -----BEGIN CERTIFICATE-----)"
    )]
    NotPem(String),
    #[error("cannot set up TLS for Redis: {0}")]
    Tls(String),
}

/// A client for `url` with the CA and credentials given apart from it.
pub fn redis_client(
    url: &str,
    ca_file: Option<&Path>,
    username: Option<&str>,
    password: Option<&str>,
) -> Result<Client, ConnectionError> {
    // The URL may hold a password: errors describe it without echoing it.
    let mut info = url
        .into_connection_info()
        .map_err(|error| ConnectionError::Url(error.to_string()))?;
    let mut redis = info.redis_settings().clone();
    if let Some(username) = username {
        redis = redis.set_username(username);
    }
    if let Some(password) = password {
        redis = redis.set_password(password);
    }
    info = info.set_redis_settings(redis);
    let Some(ca_file) = ca_file else {
        return Client::open(info).map_err(|error| ConnectionError::Url(error.to_string()));
    };
    let shown = ca_file.display().to_string();
    let pem = std::fs::read(ca_file).map_err(|error| ConnectionError::CaFile {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(ConnectionError::NotPem(shown));
    }
    Client::build_with_tls(
        info,
        TlsCertificates {
            client_tls: None,
            root_cert: Some(pem),
        },
    )
    .map_err(|error| ConnectionError::Tls(error.to_string()))
}

/// A Redis failure in words an operator can act on: the common set-up mistakes are named
/// (wrong password, a certificate the CA does not vouch for, plain text against a TLS port),
/// followed by the client's own message.
pub fn explain(error: &redis::RedisError) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    let hint = if error.kind() == redis::ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("noauth")
    {
        Some(
            "Redis refused the credentials: check the password (and user) in REDIS_URL, \
             REDIS_PASSWORD or REDIS_USERNAME",
        )
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        Some(
            "the Redis server's TLS certificate was not accepted: REDIS_CA_FILE must hold the \
             CA that signed it (Memorystore: the instance's server CA), and the URL's host \
             must be one the certificate names",
        )
    } else if lower.contains("connection reset")
        || lower.contains("broken pipe")
        || lower.contains("connection closed")
        || lower.contains("unexpected end of file")
        || lower.contains("eof")
    {
        Some(
            "Redis closed the connection before answering: if the server requires TLS \
             (in-transit encryption), REDIS_URL must start with rediss://",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({text})"),
        None => text,
    }
}
