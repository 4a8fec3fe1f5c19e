//! The wire format, pinned: each file in `tests/golden/` is the exact JSON the sidecar sends
//! (or the agent sends it) for one contract type, as README documents it. The sidecar encodes
//! through `serde_json::Value`, whose objects keep their keys sorted, so the files are written
//! that way; a renamed, added or dropped field changes the bytes and fails here.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use serde::{Serialize, de::DeserializeOwned};
use sidecar_contract::{
    ErrorCode, JobId, JobResult, JobState, JobStatus, ListRendersInput, ListRendersOutput,
    StartRenderInput, StartRenderOutput, ToolError,
};

fn golden(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
        .trim_end()
        .to_owned()
}

/// As the sidecar puts a tool's answer on the wire.
fn wire<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value).unwrap().to_string()
}

/// The golden bytes read as `T` and written back unchanged.
fn round_trip<T: Serialize + DeserializeOwned>(name: &str) -> T {
    let text = golden(name);
    let value: T = serde_json::from_str(&text).unwrap_or_else(|error| panic!("{name}: {error}"));
    assert_eq!(wire(&value), text, "{name} does not survive a round trip");
    value
}

fn job_id() -> JobId {
    "019ae4b2c3d47e5f8a9b0c1d2e3f4a5b".parse().unwrap()
}

#[test]
fn start_render_answers_with_the_job_and_its_state() {
    let made = StartRenderOutput {
        job_id: job_id(),
        state: JobState::Queued,
    };
    assert_eq!(wire(&made), golden("start_render_output.json"));
    assert_eq!(
        round_trip::<StartRenderOutput>("start_render_output.json"),
        made
    );
}

#[test]
fn status_has_stage_progress_and_the_error_only_when_failed_and_cancelled_is_its_own_state() {
    let running = JobStatus {
        job_id: job_id(),
        state: JobState::Running,
        stage: 2,
        total_stages: 4,
        message: "[2/4] rasterizing".into(),
        error: None,
    };
    assert_eq!(wire(&running), golden("job_status_running.json"));
    let failed = round_trip::<JobStatus>("job_status_failed.json");
    assert_eq!(failed.state, JobState::Failed);
    assert!(failed.error.is_some());
    let cancelled = round_trip::<JobStatus>("job_status_cancelled.json");
    assert_eq!(
        (cancelled.state, cancelled.error),
        (JobState::Cancelled, None)
    );
}

#[test]
fn result_carries_the_download_only_when_ready() {
    let ready = round_trip::<JobResult>("job_result_ready.json");
    assert!(ready.ready && ready.url.is_some() && ready.bytes == Some(85));
    let pending = JobResult {
        job_id: job_id(),
        ready: false,
        state: JobState::Queued,
        url: None,
        expires_at: None,
        content_type: None,
        bytes: None,
        sha256: None,
        error: None,
    };
    assert_eq!(wire(&pending), golden("job_result_pending.json"));
}

#[test]
fn list_is_an_object_holding_statuses() {
    let list = round_trip::<ListRendersOutput>("list_renders_output.json");
    assert_eq!(list.jobs.len(), 1);
}

#[test]
fn failures_carry_a_message_and_a_code() {
    let error = ToolError::new(
        ErrorCode::NotFound,
        "no render job 019ae4b2c3d47e5f8a9b0c1d2e3f4a5b (unknown, or finished long enough ago to have expired)",
    );
    assert_eq!(wire(&error), golden("tool_error_not_found.json"));
    round_trip::<ToolError>("tool_error_not_found.json");
}

#[test]
fn a_code_another_server_made_up_reads_as_none() {
    let other: ToolError =
        serde_json::from_str(r#"{"error":"slow down","code":"rate_limited"}"#).unwrap();
    assert_eq!(other.code, None);
    let bare: ToolError = serde_json::from_str(r#"{"error":"no"}"#).unwrap();
    assert_eq!(bare.code, None);
}

#[test]
fn arguments_are_written_as_the_tools_read_them() {
    let start = round_trip::<StartRenderInput>("start_render_input.json");
    assert_eq!(start.idempotency_key.as_deref(), Some("report-7"));
    let list = round_trip::<ListRendersInput>("list_renders_input.json");
    assert_eq!(list.state, Some(JobState::Failed));
    assert_eq!(wire(&ListRendersInput::default()), "{}");
}

#[test]
fn answers_with_a_malformed_job_id_are_refused() {
    let bad = r#"{"job_id":"../../etc/passwd","state":"queued"}"#;
    let error = serde_json::from_str::<StartRenderOutput>(bad).unwrap_err();
    assert!(error.to_string().contains("is not a job id"), "{error}");
}
