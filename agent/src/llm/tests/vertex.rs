//! Vertex AI Gemini: wire format, authentication and reply interpretation.

use std::time::Duration;

use google_cloud_auth::credentials::mds;
use serde_json::{Value, json};

use super::*;

const GENERATE_CONTENT_PATH: &str = "/v1/projects/test-project/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent";

fn vertex_config(endpoint: &str) -> LlmConfig {
    LlmConfig::Vertex {
        project: "test-project".to_owned(),
        location: "us-central1".to_owned(),
        model: "gemini-2.5-flash".to_owned(),
        endpoint: Some(endpoint.to_owned()),
    }
}

/// A Vertex model at `model`, authenticated by the real google-cloud-auth
/// metadata-server credentials pointed at `metadata` (no process env needed).
fn vertex_model(model: &FakeModel, metadata: &FakeMetadataServer, timeout: Duration) -> ChatModel {
    let credentials = mds::Builder::default()
        .with_endpoint(&metadata.base_url)
        .build()
        .unwrap();
    ChatModel::with_vertex_auth(
        vertex_config(&model.base_url),
        timeout,
        VertexAuth::Credentials(credentials),
    )
    .unwrap()
}

fn text_reply(text: &str) -> CannedReply {
    CannedReply::json(json!({
        "candidates": [{
            "content": { "role": "model", "parts": [{ "text": text }] },
            "finishReason": "STOP"
        }]
    }))
}

/// The model content asking for `add(2, 3)`, with a thought signature that
/// must be echoed back untouched.
fn add_call_content() -> Value {
    json!({
        "role": "model",
        "parts": [{
            "functionCall": { "name": "add", "args": { "a": 2, "b": 3 } },
            "thoughtSignature": "c2lnbmF0dXJl"
        }]
    })
}

fn add_call_reply() -> CannedReply {
    CannedReply::json(
        json!({ "candidates": [{ "content": add_call_content(), "finishReason": "STOP" }] }),
    )
}

async fn chat_once(replies: Vec<CannedReply>) -> Result<ChatReply, LlmError> {
    let model = FakeModel::start(replies).await;
    let metadata = FakeMetadataServer::start().await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));
    vertex_model(&model, &metadata, TEST_TIMEOUT)
        .chat(&user_says("What is 2 + 3?"), &[add_tool()], &runner, 4)
        .await
}

#[tokio::test]
async fn function_call_round_trip() {
    let model = FakeModel::start(vec![add_call_reply(), text_reply("2 + 3 = 5")]).await;
    let metadata = FakeMetadataServer::start().await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));
    let chat_model = vertex_model(&model, &metadata, TEST_TIMEOUT);
    assert_eq!(chat_model.describe(), "vertex:gemini-2.5-flash");

    assert_adds_two_and_three(&chat_model, &runner).await;

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, GENERATE_CONTENT_PATH);
        let expected_authorization = format!("Bearer {METADATA_ACCESS_TOKEN}");
        assert_eq!(
            request.header("authorization"),
            Some(expected_authorization.as_str())
        );
    }
    metadata.assert_token_was_requested();

    let user_turn = json!({ "role": "user", "parts": [{ "text": "What is 2 + 3?" }] });
    let tools = json!([{ "functionDeclarations": [{
        "name": "add",
        "description": "Adds two numbers.",
        "parametersJsonSchema": add_tool_model_schema()
    }] }]);
    assert_eq!(
        requests[0].body,
        json!({ "contents": [user_turn], "tools": tools })
    );
    assert_eq!(
        requests[1].body,
        json!({
            "contents": [
                user_turn,
                add_call_content(),
                { "role": "user", "parts": [{ "functionResponse": { "name": "add", "response": { "sum": 5 } } }] }
            ],
            "tools": tools
        })
    );
}

#[tokio::test]
async fn conversation_history_maps_roles_and_omits_empty_tools() {
    let model = FakeModel::start(vec![text_reply("Hi again.")]).await;
    let metadata = FakeMetadataServer::start().await;
    let runner = RecordingRunner::returning(json!({}));
    let history = [
        ChatMessage {
            role: Role::User,
            content: "Hello".to_owned(),
        },
        ChatMessage {
            role: Role::Assistant,
            content: "Hi!".to_owned(),
        },
        ChatMessage {
            role: Role::User,
            content: "Hello again".to_owned(),
        },
    ];

    let reply = vertex_model(&model, &metadata, TEST_TIMEOUT)
        .chat(&history, &[], &runner, 4)
        .await
        .unwrap();

    assert_eq!((reply.reply.as_str(), reply.turns), ("Hi again.", 1));
    assert_eq!(
        model.requests()[0].body,
        json!({ "contents": [
            { "role": "user", "parts": [{ "text": "Hello" }] },
            { "role": "model", "parts": [{ "text": "Hi!" }] },
            { "role": "user", "parts": [{ "text": "Hello again" }] }
        ] })
    );
}

#[tokio::test]
async fn parallel_calls_share_one_response_content_and_non_objects_are_wrapped() {
    let two_calls = CannedReply::json(
        json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "functionCall": { "id": "c1", "name": "add", "args": { "a": 1, "b": 1 } } },
        { "functionCall": { "id": "c2", "name": "add", "args": { "a": 2, "b": 2 } } }
    ] } }] }),
    );
    let model = FakeModel::start(vec![two_calls, text_reply("done")]).await;
    let metadata = FakeMetadataServer::start().await;
    let runner = RecordingRunner::returning(json!(42));

    let reply = vertex_model(&model, &metadata, TEST_TIMEOUT)
        .chat(&user_says("add twice"), &[add_tool()], &runner, 4)
        .await
        .unwrap();

    assert_eq!(reply.tool_calls.len(), 2);
    assert_eq!(
        model.requests()[1].body["contents"][2],
        json!({ "role": "user", "parts": [
            { "functionResponse": { "id": "c1", "name": "add", "response": { "output": 42 } } },
            { "functionResponse": { "id": "c2", "name": "add", "response": { "output": 42 } } }
        ] })
    );
}

#[tokio::test]
async fn thought_parts_are_not_part_of_the_answer() {
    let reply = chat_once(vec![CannedReply::json(
        json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "text": "Let me think...", "thought": true },
        { "text": "Five." }
    ] } }] }),
    )])
    .await
    .unwrap();
    assert_eq!(reply.reply, "Five.");
}

#[tokio::test]
async fn empty_candidates_are_malformed() {
    let error = chat_once(vec![CannedReply::json(json!({ "candidates": [] }))])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message) if message.contains("no candidates")),
        "{error}"
    );

    let blocked = json!({ "promptFeedback": { "blockReason": "PROHIBITED_CONTENT" } });
    let error = chat_once(vec![CannedReply::json(blocked)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message) if message.contains("PROHIBITED_CONTENT")),
        "{error}"
    );
}

#[tokio::test]
async fn candidate_without_usable_parts_is_malformed() {
    let no_content = json!({ "candidates": [{ "finishReason": "SAFETY" }] });
    let error = chat_once(vec![CannedReply::json(no_content)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message) if message.contains("no content") && message.contains("SAFETY")),
        "{error}"
    );

    let explained = json!({ "candidates": [{
        "finishReason": "MALFORMED_FUNCTION_CALL",
        "finishMessage": "Malformed function call: add(a=2"
    }] });
    let error = chat_once(vec![CannedReply::json(explained)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message)
            if message.contains("MALFORMED_FUNCTION_CALL: Malformed function call: add(a=2")),
        "{error}"
    );

    let unknown_part = json!({ "candidates": [{
        "content": { "role": "model", "parts": [{ "executableCode": { "code": "1+1" } }] },
        "finishReason": "STOP"
    }] });
    let error = chat_once(vec![CannedReply::json(unknown_part)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message) if message.contains("neither text nor functionCall")),
        "{error}"
    );
}

#[tokio::test]
async fn non_json_reply_is_malformed() {
    let error = chat_once(vec![CannedReply::raw("<html>gateway says hi</html>")])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message)
            if message.contains("not valid JSON") && message.contains("gateway says hi")),
        "{error}"
    );
}

#[tokio::test]
async fn arguments_that_are_not_a_json_object_go_back_to_the_model_as_a_tool_error() {
    let bad_call = CannedReply::json(
        json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "functionCall": { "name": "add", "args": "a=2,b=3" } }
    ] } }] }),
    );
    let model = FakeModel::start(vec![bad_call, add_call_reply(), text_reply("2 + 3 = 5")]).await;
    let metadata = FakeMetadataServer::start().await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));

    let reply = vertex_model(&model, &metadata, TEST_TIMEOUT)
        .chat(&user_says("What is 2 + 3?"), &[add_tool()], &runner, 4)
        .await
        .unwrap();

    let error = r#"the arguments of tool call `add` must be a JSON object, got: "a=2,b=3""#;
    assert_eq!(reply.reply, "2 + 3 = 5");
    assert_eq!(reply.turns, 3);
    assert_eq!(
        reply.tool_calls[0],
        ToolCallRecord {
            name: "add".to_owned(),
            arguments: json!("a=2,b=3"),
            result: json!({ "error": error }),
        }
    );
    assert_eq!(
        runner.calls(),
        vec![("add".to_owned(), json!({ "a": 2, "b": 3 }))],
        "only the corrected call ran"
    );
    assert_eq!(
        model.requests()[1].body["contents"][2],
        json!({ "role": "user", "parts": [
            { "functionResponse": { "name": "add", "response": { "error": error } } }
        ] })
    );
}

#[tokio::test]
async fn rate_limit_is_upstream_with_status() {
    let body =
        r#"{"error":{"code":429,"message":"Resource exhausted.","status":"RESOURCE_EXHAUSTED"}}"#;
    let error = chat_once(vec![CannedReply::status(429, body)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Upstream(message)
            if message.contains("429") && message.contains("RESOURCE_EXHAUSTED")),
        "{error}"
    );
}

#[tokio::test]
async fn token_failure_is_a_credentials_error() {
    let model = FakeModel::start(vec![text_reply("unused")]).await;
    // A "metadata server" that is really the model fake: it has no token endpoint.
    let not_metadata = FakeModel::start(vec![CannedReply::status(404, "not found")]).await;
    let credentials = mds::Builder::default()
        .with_endpoint(&not_metadata.base_url)
        .build()
        .unwrap();
    let chat_model = ChatModel::with_vertex_auth(
        vertex_config(&model.base_url),
        TEST_TIMEOUT,
        VertexAuth::Credentials(credentials),
    )
    .unwrap();

    let error = chat_model
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            1,
        )
        .await
        .unwrap_err();

    assert!(matches!(&error, LlmError::Credentials(_)), "{error}");
    assert!(model.requests().is_empty(), "no model call without a token");
}

#[test]
fn global_location_and_invalid_settings() {
    let global = LlmConfig::Vertex {
        project: "p".to_owned(),
        location: "global".to_owned(),
        model: "gemini-2.5-pro".to_owned(),
        endpoint: None,
    };
    let model = ChatModel::new(global, TEST_TIMEOUT).unwrap();
    assert!(model.is_configured());
    assert_eq!(model.describe(), "vertex:gemini-2.5-pro");

    let bad_project = LlmConfig::Vertex {
        project: "my/project".to_owned(),
        location: "us-central1".to_owned(),
        model: "gemini-2.5-flash".to_owned(),
        endpoint: None,
    };
    let error = ChatModel::new(bad_project, TEST_TIMEOUT).unwrap_err();
    assert!(
        matches!(&error, LlmError::InvalidConfig(message) if message.contains("VERTEX_PROJECT")),
        "{error}"
    );
}

/// Set in the child process of [`application_default_credentials_honour_gce_metadata_host`].
const ADC_CHILD_MARKER: &str = "LLM_TEST_ADC_CHILD";

/// Exercises the production path, `VertexAuth::ApplicationDefault`, end to end:
/// ADC falls back to the metadata server, found through `GCE_METADATA_HOST`.
///
/// The variable must be in the environment before the credentials are built
/// and editing this process's environment needs `unsafe` (forbidden here), so
/// the test re-runs this test binary as a child process with the variable set,
/// no ADC file (`GOOGLE_APPLICATION_CREDENTIALS` unset, `HOME` empty), and a
/// filter selecting [`adc_child_process_entry`]. This process serves the fake
/// metadata server the child's token request goes to.
#[tokio::test]
async fn application_default_credentials_honour_gce_metadata_host() {
    let metadata = FakeMetadataServer::start().await;
    let test_binary = std::env::current_exe().unwrap();
    let missing_home =
        std::env::temp_dir().join(format!("llm-adc-test-no-home-{}", std::process::id()));
    let mut child = std::process::Command::new(test_binary);
    child
        .args(["adc_child_process_entry", "--ignored", "--test-threads=1"])
        .env(ADC_CHILD_MARKER, "1")
        .env("GCE_METADATA_HOST", metadata.host())
        .env("HOME", &missing_home)
        .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
        .env_remove("GOOGLE_CLOUD_QUOTA_PROJECT");

    // Blocking wait off the runtime thread, so the fake server keeps serving.
    let output = tokio::task::spawn_blocking(move || child.output())
        .await
        .unwrap()
        .unwrap();

    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "child test did not run:\n{stdout}\n{stderr}"
    );
    metadata.assert_token_was_requested();
}

/// The child half of [`application_default_credentials_honour_gce_metadata_host`].
/// Does nothing unless started by it, so `--ignored` runs never reach for real credentials.
#[tokio::test]
#[ignore = "runs as a child process of application_default_credentials_honour_gce_metadata_host"]
async fn adc_child_process_entry() {
    if std::env::var_os(ADC_CHILD_MARKER).is_none()
        || std::env::var_os("GCE_METADATA_HOST").is_none()
    {
        return;
    }
    let model = FakeModel::start(vec![text_reply("authenticated")]).await;
    let chat_model = ChatModel::new(vertex_config(&model.base_url), TEST_TIMEOUT).unwrap();

    let reply = chat_model
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            1,
        )
        .await
        .unwrap();

    assert_eq!(reply.reply, "authenticated");
    let expected_authorization = format!("Bearer {METADATA_ACCESS_TOKEN}");
    assert_eq!(
        model.requests()[0].header("authorization"),
        Some(expected_authorization.as_str())
    );
}
