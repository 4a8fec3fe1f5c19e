//! Images a tool returns (a render's picture) reach the model when it takes them: Gemini as
//! `inlineData` parts beside the `functionResponse`s, an OpenAI-compatible model as
//! `image_url` parts of a user message after the `tool` messages; and not at all when tool
//! images are off.

use serde_json::{Value, json};

use super::*;
use crate::llm::{ToolImage, ToolOutput, ToolProgress};

/// A 1×1 PNG, base64.
const PIXEL: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

/// Answers every call with `{"url": …}` and the picture.
struct PictureRunner;

impl ToolRunner for PictureRunner {
    fn call<'a>(&'a self, _name: &'a str, _arguments: Value) -> BoxFuture<'a, Value> {
        futures::future::ready(json!({ "url": "https://example.test/p.png" })).boxed()
    }

    fn call_reporting<'a>(
        &'a self,
        _name: &'a str,
        _arguments: Value,
        _progress: ToolProgress,
    ) -> BoxFuture<'a, ToolOutput> {
        futures::future::ready(ToolOutput {
            result: json!({ "url": "https://example.test/p.png" }),
            images: vec![ToolImage {
                mime_type: "image/png".to_owned(),
                data: PIXEL.to_owned(),
            }],
        })
        .boxed()
    }
}

fn render_tool() -> ToolSpec {
    ToolSpec {
        name: "render".to_owned(),
        description: "Renders a chart".to_owned(),
        parameters: json!({"type": "object", "properties": {}}),
    }
}

fn openai(model: &FakeModel, images: bool) -> ChatModel {
    ChatModel::new(
        LlmConfig::OpenAi {
            base_url: model.base_url.clone(),
            api_key: None,
            model: "gpt-test".to_owned(),
        },
        TEST_TIMEOUT,
    )
    .unwrap()
    .with_tool_images(images)
}

fn openai_script() -> Vec<CannedReply> {
    vec![
        CannedReply::json(
            json!({"choices": [{"index": 0, "finish_reason": "tool_calls",
            "message": {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_9", "type": "function", "function": {"name": "render", "arguments": "{}"}}]}}]}),
        ),
        CannedReply::json(json!({"choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": "A blue square."}}]})),
    ]
}

#[tokio::test]
async fn an_openai_compatible_model_sees_the_picture_after_the_tool_message() {
    let model = FakeModel::start(openai_script()).await;
    let reply = openai(&model, true)
        .chat(&user_says("Draw"), &[render_tool()], &PictureRunner, 3)
        .await
        .unwrap();
    assert_eq!(reply.reply, "A blue square.");
    let messages = model.requests()[1].body["messages"].clone();
    let messages = messages.as_array().unwrap();
    let roles: Vec<&str> = messages
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "tool", "user"]);
    assert_eq!(messages[2]["tool_call_id"], "call_9");
    let parts = messages[3]["content"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "text");
    assert!(parts[0]["text"].as_str().unwrap().contains("call_9"));
    assert_eq!(parts[1]["type"], "image_url");
    assert_eq!(
        parts[1]["image_url"]["url"],
        format!("data:image/png;base64,{PIXEL}")
    );
    // The call record (and the API answer) carries the JSON, not the picture.
    assert_eq!(
        reply.tool_calls[0].result,
        json!({ "url": "https://example.test/p.png" })
    );
}

#[tokio::test]
async fn with_tool_images_off_the_model_gets_only_the_json() {
    let model = FakeModel::start(openai_script()).await;
    openai(&model, false)
        .chat(&user_says("Draw"), &[render_tool()], &PictureRunner, 3)
        .await
        .unwrap();
    let messages = model.requests()[1].body["messages"].clone();
    let roles: Vec<Value> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].clone())
        .collect();
    assert_eq!(roles, [json!("user"), json!("assistant"), json!("tool")]);
    assert!(!messages.to_string().contains(PIXEL));
}

#[tokio::test]
async fn gemini_sees_the_picture_beside_the_function_response() {
    let model = FakeModel::start(vec![
        CannedReply::json(
            json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "render", "args": {}}}]}, "finishReason": "STOP"}]}),
        ),
        CannedReply::json(
            json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "A blue square."}]}, "finishReason": "STOP"}]}),
        ),
    ])
    .await;
    let metadata = FakeMetadataServer::start().await;
    let credentials = google_cloud_auth::credentials::mds::Builder::default()
        .with_endpoint(&metadata.base_url)
        .build()
        .unwrap();
    let chat = ChatModel::with_vertex_auth(
        LlmConfig::Vertex {
            project: "p".to_owned(),
            location: "us-central1".to_owned(),
            model: "gemini-test".to_owned(),
            endpoint: Some(model.base_url.clone()),
        },
        TEST_TIMEOUT,
        VertexAuth::Credentials(credentials),
    )
    .unwrap()
    .with_tool_images(true);
    chat.chat(&user_says("Draw"), &[render_tool()], &PictureRunner, 3)
        .await
        .unwrap();
    let contents = model.requests()[1].body["contents"].clone();
    let last = contents.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["role"], "user");
    let parts = last["parts"].as_array().unwrap();
    assert_eq!(parts[0]["functionResponse"]["name"], "render");
    assert_eq!(parts[1]["inlineData"]["mimeType"], "image/png");
    assert_eq!(parts[1]["inlineData"]["data"], PIXEL);
}
