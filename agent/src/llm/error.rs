//! The module's single error type.

use std::time::Duration;

/// Everything [`ChatModel`](super::ChatModel) can fail with.
///
/// Messages are meant for operators and API clients: they name the provider,
/// say what went wrong, and never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// No provider was configured, so there is no model to talk to.
    #[error(
        "no LLM provider is configured: set LLM_PROVIDER=vertex with VERTEX_PROJECT, \
         VERTEX_LOCATION and LLM_MODEL, or LLM_PROVIDER=openai with OPENAI_BASE_URL, \
         LLM_MODEL and (if the endpoint needs one) OPENAI_API_KEY"
    )]
    NotConfigured,

    /// The provider settings cannot work (empty model name, unusable URL, ...).
    #[error("invalid LLM configuration: {0}")]
    InvalidConfig(String),

    /// The model endpoint failed: an HTTP error status (with the start of its
    /// body), or a transport error.
    #[error("model endpoint failed: {0}")]
    Upstream(String),

    /// The model's reply could not be understood; the message says what was wrong.
    #[error("model reply not understood: {0}")]
    Malformed(String),

    /// The model was still asking for tools after this many turns.
    #[error("the model was still calling tools after {0} turns without answering")]
    TurnLimit(u32),

    /// One HTTP exchange (model call or access-token fetch) took longer than this.
    #[error("the model endpoint did not answer within {0:?}")]
    Timeout(Duration),

    /// No access token could be obtained (Vertex AI).
    #[error("could not get Google Cloud credentials: {0}")]
    Credentials(String),
}

/// Formats an error with its whole `source()` chain, for messages that must
/// carry the root cause (reqwest and google-cloud-auth put it in the chain).
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !message.contains(&cause_text) {
            message.push_str(": ");
            message.push_str(&cause_text);
        }
        source = cause.source();
    }
    message
}
