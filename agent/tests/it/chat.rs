//! `POST /v1/chat`, the LLM tool loop, end to end: the agent process with the real sidecar,
//! and local servers speaking the Vertex AI (`generateContent`, access token from a local
//! metadata server) and OpenAI (`/chat/completions`) wire formats. The model's function call
//! is executed through MCP by the sidecar and its result sent back.
#![allow(clippy::unwrap_used)]

use crate::common::{
    Stack,
    fakes::{FakeModel, MetadataServer, Script},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::temp_dir;

async fn chat(stack: &Stack, message: &str) -> (StatusCode, Value) {
    let response = reqwest::Client::new()
        .post(stack.url("/v1/chat"))
        .json(&json!({"message": message}))
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap())
}

/// The model was asked `requests` times, and the second request carried `tool_result` back
/// (read out of the provider's request format by `sent_back`).
fn assert_second_request_carried(
    model: &FakeModel,
    sent_back: &impl Fn(&Value) -> Value,
    requests: usize,
    tool_result: Value,
) {
    let bodies = model.bodies();
    assert_eq!(bodies.len(), requests);
    assert_eq!(sent_back(&bodies[1]), tool_result);
}

/// The tool loop's observable contract, whichever provider speaks it.
async fn check_the_loop(
    stack: &Stack,
    model: &FakeModel,
    tool_result_sent_back: impl Fn(&Value) -> Value,
) {
    model.set(Script::AddThenAnswer);
    let (status, reply) = chat(stack, "What is 2 + 3? Use the tools.").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["reply"], "2 + 3 = 5");
    assert_eq!(reply["turns"], 2);
    assert_eq!(reply["tool_calls"][0]["name"], "add");
    assert_eq!(reply["tool_calls"][0]["arguments"], json!({"a": 2, "b": 3}));
    assert_eq!(
        reply["tool_calls"][0]["result"],
        json!({"sum": 5}),
        "the sidecar ran it"
    );
    assert_second_request_carried(model, &tool_result_sent_back, 2, json!({"sum": 5}));

    // Arguments that are not a JSON object: that call gets a tool error, not the whole chat.
    model.set(Script::ArrayArgumentsFirst);
    let (status, reply) = chat(stack, "What is 2 + 3? Use the tools.").await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply["reply"], "2 + 3 = 5");
    assert_eq!(reply["turns"], 3);
    assert_eq!(reply["tool_calls"][0]["arguments"], json!([2, 3]));
    let error = reply["tool_calls"][0]["result"]["error"].as_str().unwrap();
    assert_eq!(
        error,
        "the arguments of tool call `add` must be a JSON object, got: [2,3]"
    );
    assert_eq!(
        reply["tool_calls"][1]["result"],
        json!({"sum": 5}),
        "the corrected call ran"
    );
    // The model was told what was wrong.
    assert_second_request_carried(model, &tool_result_sent_back, 3, json!({"error": error}));

    model.set(Script::NeverAnswer);
    let (status, error) = chat(stack, "Loop forever").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    assert!(
        error["error"].as_str().unwrap().contains("3 turns"),
        "{error}"
    );
    assert_eq!(model.bodies().len(), 3, "exactly LLM_MAX_TURNS model calls");

    model.set(Script::Malformed);
    let (status, error) = chat(stack, "Hello").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{error}");
    let message = error["error"].as_str().unwrap();
    assert!(
        message.starts_with("model reply not understood:"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vertex_gemini_function_calls_run_through_mcp_and_their_results_go_back() {
    let model = FakeModel::start().await;
    let metadata = MetadataServer::start(std::time::Duration::from_secs(3600)).await;
    let home = temp_dir("empty-home");
    let stack = Stack::start(
        "stateless",
        &[
            ("LLM_PROVIDER", "vertex"),
            ("VERTEX_PROJECT", "test-project"),
            ("VERTEX_LOCATION", "europe-west1"),
            ("LLM_MODEL", "gemini-test"),
            ("VERTEX_ENDPOINT", model.url.as_str()),
            ("LLM_MAX_TURNS", "3"),
            // Application Default Credentials from the local metadata server, nothing else.
            ("GCE_METADATA_HOST", metadata.host.as_str()),
            ("HOME", home.to_str().unwrap()),
        ],
    );
    check_the_loop(&stack, &model, |body| {
        body["contents"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|content| content["parts"].as_array().cloned().unwrap_or_default())
            .find_map(|part| part.get("functionResponse").cloned())
            .map(|response| response["response"].clone())
            .unwrap_or_default()
    })
    .await;
    model.set(Script::AddThenAnswer);
    chat(&stack, "again").await;
    let (authorization, body) = model.requests.lock().unwrap()[0].clone();
    assert_eq!(
        authorization.as_deref(),
        Some("Bearer fake-access-token"),
        "ADC token from the metadata server"
    );
    let declarations = body["tools"][0]["functionDeclarations"].as_array().unwrap();
    let add = declarations.iter().find(|d| d["name"] == "add").unwrap();
    assert_eq!(
        add["parametersJsonSchema"]["properties"]["b"]["type"],
        "number"
    );
    assert!(declarations.iter().any(|d| d["name"] == "start_render"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_tool_calls_run_through_mcp_and_their_results_go_back() {
    let model = FakeModel::start().await;
    let stack = Stack::start(
        "stateful",
        &[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", model.url.as_str()),
            ("OPENAI_API_KEY", "sk-test"),
            ("LLM_MODEL", "gpt-test"),
            ("LLM_MAX_TURNS", "3"),
        ],
    );
    check_the_loop(&stack, &model, |body| {
        let tool = body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["role"] == "tool")
            .cloned()
            .unwrap();
        assert_eq!(tool["tool_call_id"], "call_1");
        serde_json::from_str(tool["content"].as_str().unwrap()).unwrap()
    })
    .await;
    model.set(Script::AddThenAnswer);
    chat(&stack, "again").await;
    let (authorization, body) = model.requests.lock().unwrap()[0].clone();
    assert_eq!(authorization.as_deref(), Some("Bearer sk-test"));
    assert_eq!(body["model"], "gpt-test");
    assert!(
        body["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["function"]["name"] == "add")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_model_chat_answers_503_saying_how_to_configure_one() {
    let stack = Stack::start("stateless", &[]);
    let (status, error) = chat(&stack, "hello").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let message = error["error"].as_str().unwrap();
    for setting in ["LLM_PROVIDER", "VERTEX_PROJECT", "OPENAI_BASE_URL"] {
        assert!(message.contains(setting), "{message}");
    }
}
