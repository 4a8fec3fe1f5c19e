//! The MCP sidecar's tool contract, typed once.
//!
//! The sidecar answers its render-job tools with these types and the agent reads its answers
//! with the same types, so a change on one side that the other does not follow is a compile
//! error, not a surprise at run time (mini-redis's client and server share their `Frame` the
//! same way). What is here is exactly what crosses the process boundary: tool names, job ids
//! and states, the arguments and answers of the job tools, and the error codes of failed tool
//! calls. How a job is stored, rendered or queued stays in the sidecar.
//!
//! The JSON these types make is the wire format README documents; `tests/golden.rs` pins it
//! byte for byte. Field order matters for those bytes, so fields are declared in wire order.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The sidecar's tool names.
pub mod tool {
    pub const ADD: &str = "add";
    pub const SUBTRACT: &str = "subtract";
    pub const ECHO: &str = "echo";
    pub const START_RENDER: &str = "start_render";
    pub const GET_RENDER_STATUS: &str = "get_render_status";
    pub const GET_RENDER_RESULT: &str = "get_render_result";
    pub const CANCEL_RENDER: &str = "cancel_render";
    pub const LIST_RENDERS: &str = "list_renders";
    /// Renders and answers with the artifact: a task (MCP Tasks extension) for a client that
    /// declares the extension, otherwise a call that waits for the render.
    pub const RENDER: &str = "render";
}

/// A render job's id: 32 lowercase hex digits (a UUIDv7, so ids sort by creation time).
///
/// Parsing is strict, so an id can go into a Redis key, a file name or a URL path without
/// escaping: nothing that is not 32 hex digits (`../`, `/`, `%2e`, whitespace) is ever a
/// `JobId`. Deserializing parses too, so an answer carrying a malformed id is refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    pub const LEN: usize = 32;

    /// A new id, later than every id made before it by this process.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().simple().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Text that is not a [`JobId`]; shows at most the first 64 characters of it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a job id: job ids are 32 lowercase hex digits, as start_render returned")]
pub struct InvalidJobId(String);

impl FromStr for JobId {
    type Err = InvalidJobId;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let valid = text.len() == Self::LEN
            && text
                .bytes()
                .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte));
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            // Keep error messages bounded whatever was sent.
            let shown: String = text.chars().take(64).collect();
            Err(InvalidJobId(shown))
        }
    }
}

impl Serialize for JobId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for JobId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "schema")]
impl schemars::JsonSchema for JobId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "JobId".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
        })
    }
}

/// The states of the job contract. `Succeeded`, `Failed` and `Cancelled` are terminal: once a
/// job reaches one it never changes again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [Self; 5] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The state as it is spelled on the wire and in the job record.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// True for the states a job never leaves.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Text that is not a [`JobState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state `{0}`: expected queued, running, succeeded, failed or cancelled")]
pub struct UnknownJobState(String);

impl FromStr for JobState {
    type Err = UnknownJobState;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownJobState(text.chars().take(64).collect()))
    }
}

/// Arguments of `start_render`. `Spec` is the render spec: the sidecar parses it into its own
/// types; a client that only forwards a spec can use `serde_json::Value`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(rename = "StartRenderInput"))]
#[serde(deny_unknown_fields)]
pub struct StartRenderInput<Spec = serde_json::Value> {
    /// What to render: {"kind":"chart", "chart":{"type":"bar"|"line"|"area"|"scatter"|"pie"|
    /// "donut", "title", "x_label", "y_label", "series":[{"name", "points":[[x,y],…]}]},
    /// "width", "height", "format":"png"|"svg"} where x is a number, a label like "Q1" or an
    /// ISO date like "2024-03-01"; or {"kind":"vega-lite", "vega_lite":{…a Vega-Lite spec with
    /// inline data.values…}}; or {"kind":"svg", "svg":"<svg …>", "width", "height"}.
    pub spec: Spec,
    /// Optional key (1–200 characters) making the call safe to repeat: the same key with the
    /// same spec returns the job already started instead of a new one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// Result of `start_render`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StartRenderOutput {
    /// The job's id, for the other render tools.
    pub job_id: JobId,
    /// The job's state now: "queued" for a new job; for a repeated idempotency key, the
    /// existing job's state.
    pub state: JobState,
}

/// Arguments naming one job (`get_render_status`, `get_render_result`, `cancel_render`).
///
/// The id is text here, not a [`JobId`], so that the sidecar answers a malformed one with its
/// own message rather than a generic deserialization error.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct JobIdInput {
    /// The job id start_render returned (32 hex digits).
    pub job_id: String,
}

impl From<&JobId> for JobIdInput {
    fn from(id: &JobId) -> Self {
        Self {
            job_id: id.to_string(),
        }
    }
}

/// Arguments of `list_renders`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ListRendersInput {
    /// Only jobs in this state: queued, running, succeeded, failed or cancelled (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,
    /// How many jobs at most, 1 to 100 (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// What `get_render_status` (and `cancel_render`) return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobStatus {
    /// The job's id.
    pub job_id: JobId,
    /// queued, running, succeeded, failed or cancelled. The last three are final.
    pub state: JobState,
    /// The pipeline stage in progress (1-based); 0 while queued; equals total_stages on success.
    pub stage: u32,
    /// How many stages this job's pipeline has.
    pub total_stages: u32,
    /// Progress in words, e.g. "[2/4] rasterizing".
    pub message: String,
    /// Why the job failed. Present only when failed.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// What `get_render_result` returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct JobResult {
    /// The job's id.
    pub job_id: JobId,
    /// True only once the job has succeeded and its artifact can be downloaded.
    pub ready: bool,
    /// The job's state (see get_render_status).
    pub state: JobState,
    /// A time-limited download URL for the artifact (signed). Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub url: Option<String>,
    /// When the URL stops working, RFC 3339 UTC. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub expires_at: Option<String>,
    /// The artifact's media type: image/png or image/svg+xml. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub content_type: Option<String>,
    /// The artifact's size in bytes. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub bytes: Option<u64>,
    /// Hex SHA-256 of the artifact, to check a download. Present when ready.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sha256: Option<String>,
    /// Why the job failed, when it did.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub error: Option<String>,
}

/// What `render` returns once the render succeeded (the `structuredContent` of its result,
/// and of a completed task's inlined result).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RenderOutput {
    /// The render job's id (also the task's id); get_render_result gives a fresh URL later.
    pub job_id: JobId,
    /// A time-limited download URL for the artifact (signed).
    pub url: String,
    /// When the URL stops working, RFC 3339 UTC.
    pub expires_at: String,
    /// The artifact's media type: image/png or image/svg+xml.
    pub content_type: String,
    /// The artifact's size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the artifact, to check a download.
    pub sha256: String,
}

/// Result of `list_renders`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ListRendersOutput {
    /// Recent jobs, newest first.
    pub jobs: Vec<JobStatus>,
}

/// What kind of failure a tool result reports, in its `code` field, so programs (the agent's
/// REST API among them) can react without parsing the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The arguments cannot work: fix them and call again.
    InvalidArguments,
    /// The named thing (a job) does not exist.
    NotFound,
    /// The request contradicts an earlier one (an idempotency key reused for another spec).
    Conflict,
    /// A dependency (Redis) is away: try again shortly.
    Unavailable,
    /// Something went wrong inside the server.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidArguments => "invalid_arguments",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `structuredContent` of a failed tool call (`isError: true`): a message written for
/// whoever reads it (often a model) and, from the sidecar, a code.
///
/// Other MCP servers' failures have this shape too but may carry no code, or a code this
/// contract does not know: both read as `code: None`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolError {
    pub error: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "known_code"
    )]
    pub code: Option<ErrorCode>,
}

impl ToolError {
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        Self {
            error: message.to_string(),
            code: Some(code),
        }
    }

    /// The failure a tool result's `structuredContent` holds, if it has this shape.
    pub fn from_structured_content(content: Option<&serde_json::Value>) -> Option<Self> {
        content.and_then(|content| Self::deserialize(content).ok())
    }
}

/// A code this contract names, or `None` for anything else (absent, null, another server's).
fn known_code<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<ErrorCode>, D::Error> {
    let value = serde_json::Value::deserialize(deserializer)?;
    Ok(serde_json::from_value(value).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_strict_hex_and_nothing_else() {
        let id = JobId::generate();
        assert_eq!(id.as_str().len(), 32);
        assert_eq!(id.as_str().parse::<JobId>(), Ok(id.clone()));
        for bad in [
            "",
            "../../etc/passwd",
            "0123456789abcdef0123456789abcdeF",
            "0123456789abcdef0123456789abcde/",
            "0123456789abcdef0123456789abcdef0",
            "%2e%2e%2f",
        ] {
            assert!(bad.parse::<JobId>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_succeeded_failed_and_cancelled_are_terminal() {
        assert!(!JobState::Queued.is_terminal());
        assert!(!JobState::Running.is_terminal());
        assert!(JobState::Succeeded.is_terminal());
        assert!(JobState::Failed.is_terminal());
        assert!(JobState::Cancelled.is_terminal());
    }

    #[test]
    fn states_and_codes_spell_as_they_serialize() {
        for state in JobState::ALL {
            assert_eq!(
                serde_json::to_value(state).ok(),
                Some(state.as_str().into())
            );
            assert_eq!(state.as_str().parse(), Ok(state));
        }
        for code in [
            ErrorCode::InvalidArguments,
            ErrorCode::NotFound,
            ErrorCode::Conflict,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).ok(), Some(code.as_str().into()));
        }
    }
}
