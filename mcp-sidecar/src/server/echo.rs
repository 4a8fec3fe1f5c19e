//! `echo`: returns its text unchanged. Useful to check the round trip through every layer.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Arguments of `echo`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EchoInput {
    /// The text to send back. Must not be empty.
    pub text: String,
}

/// Result of `echo`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EchoOutput {
    /// The same text that was sent.
    pub text: String,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("text must not be empty")]
pub struct EmptyText;

pub fn echo(input: EchoInput) -> Result<EchoOutput, EmptyText> {
    if input.text.is_empty() {
        return Err(EmptyText);
    }
    Ok(EchoOutput { text: input.text })
}
