//! Provider-neutral limits: turn bound, timeouts, transport failures, no provider.

use std::time::{Duration, Instant};

use google_cloud_auth::credentials::mds;
use serde_json::json;

use super::*;

fn openai_model(base_url: &str, timeout: Duration) -> ChatModel {
    let config = LlmConfig::OpenAi {
        base_url: base_url.to_owned(),
        api_key: None,
        model: "gpt-4o-mini".to_owned(),
    };
    ChatModel::new(config, timeout).unwrap()
}

fn openai_add_call() -> CannedReply {
    CannedReply::json(json!({ "choices": [{
        "message": { "role": "assistant", "content": null, "tool_calls": [
            { "id": "call_1", "type": "function", "function": { "name": "add", "arguments": r#"{"a":2,"b":3}"# } }
        ] },
        "finish_reason": "tool_calls"
    }] }))
}

#[tokio::test]
async fn a_model_that_never_answers_hits_the_turn_limit_openai() {
    let model = FakeModel::start(vec![openai_add_call()]).await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));

    let error = openai_model(&model.base_url, TEST_TIMEOUT)
        .chat(&user_says("loop"), &[add_tool()], &runner, 3)
        .await
        .unwrap_err();

    assert!(matches!(error, LlmError::TurnLimit(3)), "{error}");
    assert_eq!(
        model.requests().len(),
        3,
        "exactly max_turns model requests"
    );
    assert_eq!(runner.calls().len(), 3);
}

#[tokio::test]
async fn a_model_that_never_answers_hits_the_turn_limit_vertex() {
    let always_calls = CannedReply::json(
        json!({ "candidates": [{ "content": { "role": "model", "parts": [
        { "functionCall": { "name": "add", "args": { "a": 2, "b": 3 } } }
    ] } }] }),
    );
    let model = FakeModel::start(vec![always_calls]).await;
    let metadata = FakeMetadataServer::start().await;
    let credentials = mds::Builder::default()
        .with_endpoint(&metadata.base_url)
        .build()
        .unwrap();
    let config = LlmConfig::Vertex {
        project: "p".to_owned(),
        location: "europe-west1".to_owned(),
        model: "gemini-2.5-flash".to_owned(),
        endpoint: Some(model.base_url.clone()),
    };
    let chat_model =
        ChatModel::with_vertex_auth(config, TEST_TIMEOUT, VertexAuth::Credentials(credentials))
            .unwrap();
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));

    let error = chat_model
        .chat(&user_says("loop"), &[add_tool()], &runner, 2)
        .await
        .unwrap_err();

    assert!(matches!(error, LlmError::TurnLimit(2)), "{error}");
    assert_eq!(
        model.requests().len(),
        2,
        "exactly max_turns model requests"
    );
    // The conversation grows by a model turn and a function-response turn per loop.
    assert_eq!(
        model.requests()[1].body["contents"]
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

#[tokio::test]
async fn zero_turns_makes_no_request() {
    let model = FakeModel::start(vec![openai_add_call()]).await;
    let error = openai_model(&model.base_url, TEST_TIMEOUT)
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            0,
        )
        .await
        .unwrap_err();
    assert!(matches!(error, LlmError::TurnLimit(0)), "{error}");
    assert!(model.requests().is_empty());
}

#[tokio::test]
async fn a_slow_endpoint_times_out() {
    let timeout = Duration::from_millis(200);
    let model = FakeModel::start(vec![openai_add_call().delayed(Duration::from_secs(5))]).await;
    let started = Instant::now();

    let error = openai_model(&model.base_url, timeout)
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            1,
        )
        .await
        .unwrap_err();

    assert!(
        matches!(error, LlmError::Timeout(limit) if limit == timeout),
        "{error}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "gave up after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_is_upstream() {
    // Bind and drop a listener to get a loopback port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);

    let error = openai_model(&format!("http://{address}/v1"), TEST_TIMEOUT)
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            1,
        )
        .await
        .unwrap_err();

    assert!(
        matches!(&error, LlmError::Upstream(message) if message.contains("request failed")),
        "{error}"
    );
}

#[tokio::test]
async fn no_provider_is_not_configured_and_says_how_to_configure_one() {
    let model = ChatModel::new(LlmConfig::None, TEST_TIMEOUT).unwrap();
    assert!(!model.is_configured());
    assert_eq!(model.describe(), "none");

    let error = model
        .chat(
            &user_says("hi"),
            &[],
            &RecordingRunner::returning(json!({})),
            4,
        )
        .await
        .unwrap_err();

    assert!(matches!(error, LlmError::NotConfigured));
    let message = error.to_string();
    for variable in [
        "LLM_PROVIDER",
        "vertex",
        "openai",
        "VERTEX_PROJECT",
        "VERTEX_LOCATION",
        "LLM_MODEL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
    ] {
        assert!(
            message.contains(variable),
            "{message:?} does not mention {variable}"
        );
    }
}
