//! OpenAI-compatible chat completions: wire format and reply interpretation.

use serde_json::{Value, json};

use super::*;

fn openai_model(model: &FakeModel, api_key: Option<&str>) -> ChatModel {
    let config = LlmConfig::OpenAi {
        base_url: format!("{}/v1/", model.base_url),
        api_key: api_key.map(str::to_owned),
        model: "gpt-4o-mini".to_owned(),
    };
    ChatModel::new(config, TEST_TIMEOUT).unwrap()
}

fn text_reply(text: &str) -> CannedReply {
    CannedReply::json(json!({
        "id": "chatcmpl-2",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": text, "refusal": null },
            "finish_reason": "stop"
        }]
    }))
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({ "id": id, "type": "function", "function": { "name": name, "arguments": arguments } })
}

fn tool_calls_reply(calls: Vec<Value>) -> CannedReply {
    CannedReply::json(json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": null, "tool_calls": calls },
            "finish_reason": "tool_calls"
        }]
    }))
}

async fn chat_once(replies: Vec<CannedReply>) -> Result<ChatReply, LlmError> {
    let model = FakeModel::start(replies).await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));
    openai_model(&model, None)
        .chat(&user_says("What is 2 + 3?"), &[add_tool()], &runner, 4)
        .await
}

#[tokio::test]
async fn tool_call_round_trip() {
    let add_call = tool_call("call_abc123", "add", r#"{"a":2,"b":3}"#);
    let model = FakeModel::start(vec![
        tool_calls_reply(vec![add_call.clone()]),
        text_reply("2 + 3 = 5"),
    ])
    .await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));
    let chat_model = openai_model(&model, Some("sk-test"));
    assert_eq!(chat_model.describe(), "openai:gpt-4o-mini");
    assert!(
        !format!("{chat_model:?}").contains("sk-test"),
        "Debug must not leak the key"
    );

    assert_adds_two_and_three(&chat_model, &runner).await;

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.method, Method::POST);
        assert_eq!(request.path, "/v1/chat/completions");
        assert_eq!(request.header("authorization"), Some("Bearer sk-test"));
    }
    let user_turn = json!({ "role": "user", "content": "What is 2 + 3?" });
    let tools = json!([{ "type": "function", "function": {
        "name": "add",
        "description": "Adds two numbers.",
        "parameters": add_tool_model_schema()
    } }]);
    assert_eq!(
        requests[0].body,
        json!({ "model": "gpt-4o-mini", "messages": [user_turn], "tools": tools })
    );
    assert_eq!(
        requests[1].body,
        json!({
            "model": "gpt-4o-mini",
            "messages": [
                user_turn,
                { "role": "assistant", "content": null, "tool_calls": [add_call] },
                { "role": "tool", "tool_call_id": "call_abc123", "content": r#"{"sum":5}"# }
            ],
            "tools": tools
        })
    );
}

#[tokio::test]
async fn each_result_carries_its_own_tool_call_id_in_call_order() {
    let calls = vec![
        tool_call("call_1", "add", r#"{"a":1,"b":1}"#),
        tool_call("call_2", "add", r#"{"a":2,"b":2}"#),
    ];
    let model = FakeModel::start(vec![tool_calls_reply(calls), text_reply("2 and 4")]).await;
    let runner = RecordingRunner::returning(json!({ "ok": true }));

    let reply = openai_model(&model, None)
        .chat(&user_says("add twice"), &[add_tool()], &runner, 4)
        .await
        .unwrap();

    let arguments: Vec<Value> = reply
        .tool_calls
        .iter()
        .map(|call| call.arguments.clone())
        .collect();
    assert_eq!(
        arguments,
        vec![json!({ "a": 1, "b": 1 }), json!({ "a": 2, "b": 2 })]
    );
    let requests = model.requests();
    assert_eq!(
        requests[0].header("authorization"),
        None,
        "no key, no header"
    );
    let messages = &requests[1].body["messages"];
    assert_eq!(
        messages[2],
        json!({ "role": "tool", "tool_call_id": "call_1", "content": r#"{"ok":true}"# })
    );
    assert_eq!(
        messages[3],
        json!({ "role": "tool", "tool_call_id": "call_2", "content": r#"{"ok":true}"# })
    );
}

#[tokio::test]
async fn lenient_about_missing_ids_and_empty_arguments() {
    let anonymous_call =
        json!({ "type": "function", "function": { "name": "now", "arguments": "" } });
    let model = FakeModel::start(vec![
        tool_calls_reply(vec![anonymous_call]),
        text_reply("noon"),
    ])
    .await;
    let runner = RecordingRunner::returning(json!({ "time": "12:00" }));

    let reply = openai_model(&model, None)
        .chat(&user_says("time?"), &[], &runner, 4)
        .await
        .unwrap();

    assert_eq!(runner.calls(), vec![("now".to_owned(), json!({}))]);
    assert_eq!(reply.reply, "noon");
    let messages = &model.requests()[1].body["messages"];
    let generated_id = &messages[1]["tool_calls"][0]["id"];
    assert!(
        generated_id.as_str().is_some_and(|id| !id.is_empty()),
        "{messages}"
    );
    assert_eq!(&messages[2]["tool_call_id"], generated_id);
}

#[tokio::test]
async fn empty_choices_are_malformed() {
    let error = chat_once(vec![CannedReply::json(json!({ "choices": [] }))])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message) if message.contains("no choices")),
        "{error}"
    );

    let empty_message =
        json!({ "choices": [{ "message": { "role": "assistant" }, "finish_reason": "length" }] });
    let error = chat_once(vec![CannedReply::json(empty_message)])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message)
            if message.contains("neither content nor tool_calls") && message.contains("length")),
        "{error}"
    );
}

#[tokio::test]
async fn non_json_reply_is_malformed() {
    let error = chat_once(vec![CannedReply::raw("upstream connect error")])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, LlmError::Malformed(message)
            if message.contains("not valid JSON") && message.contains("upstream connect error")),
        "{error}"
    );
}

#[tokio::test]
async fn arguments_that_are_not_a_json_object_go_back_to_the_model_as_tool_errors() {
    let not_json = tool_call("call_1", "add", "{a: 2, b: 3");
    let array = tool_call("call_2", "add", "[2, 3]");
    let model = FakeModel::start(vec![
        tool_calls_reply(vec![not_json.clone(), array.clone()]),
        text_reply("Sorry, let me call it properly."),
    ])
    .await;
    let runner = RecordingRunner::returning(json!({ "sum": 5 }));

    let reply = openai_model(&model, None)
        .chat(&user_says("What is 2 + 3?"), &[add_tool()], &runner, 4)
        .await
        .unwrap();

    assert!(
        runner.calls().is_empty(),
        "the tool never runs with such arguments"
    );
    assert_eq!(reply.turns, 2);
    let not_json_error = "the arguments of tool call `add` must be a JSON object, \
        got text that is not JSON (key must be a string at line 1 column 2): {a: 2, b: 3";
    let array_error = "the arguments of tool call `add` must be a JSON object, got: [2,3]";
    assert_eq!(
        reply.tool_calls,
        vec![
            ToolCallRecord {
                name: "add".to_owned(),
                arguments: json!("{a: 2, b: 3"),
                result: json!({ "error": not_json_error }),
            },
            ToolCallRecord {
                name: "add".to_owned(),
                arguments: json!([2, 3]),
                result: json!({ "error": array_error }),
            },
        ]
    );
    let messages = &model.requests()[1].body["messages"];
    assert_eq!(
        messages[1]["tool_calls"],
        json!([not_json, array]),
        "the calls are echoed as the model sent them"
    );
    assert_eq!(
        messages[2],
        json!({ "role": "tool", "tool_call_id": "call_1",
                "content": json!({ "error": not_json_error }).to_string() })
    );
    assert_eq!(
        messages[3],
        json!({ "role": "tool", "tool_call_id": "call_2",
                "content": json!({ "error": array_error }).to_string() })
    );
}

#[tokio::test]
async fn null_arguments_mean_no_arguments() {
    let model = FakeModel::start(vec![
        tool_calls_reply(vec![tool_call("call_1", "now", "null")]),
        text_reply("noon"),
    ])
    .await;
    let runner = RecordingRunner::returning(json!({ "time": "12:00" }));

    openai_model(&model, None)
        .chat(&user_says("time?"), &[], &runner, 4)
        .await
        .unwrap();

    assert_eq!(runner.calls(), vec![("now".to_owned(), json!({}))]);
}

#[tokio::test]
async fn server_error_is_upstream_with_status() {
    let error = chat_once(vec![CannedReply::status(
        500,
        r#"{"error":{"message":"The server had an error"}}"#,
    )])
    .await
    .unwrap_err();
    assert!(
        matches!(&error, LlmError::Upstream(message)
            if message.contains("500") && message.contains("The server had an error")),
        "{error}"
    );
}

#[tokio::test]
async fn error_object_in_a_success_reply_is_upstream() {
    let error = chat_once(vec![CannedReply::json(
        json!({ "error": { "message": "model overloaded" } }),
    )])
    .await
    .unwrap_err();
    assert!(
        matches!(&error, LlmError::Upstream(message) if message.contains("model overloaded")),
        "{error}"
    );
}

#[test]
fn invalid_settings_are_rejected() {
    let no_model = LlmConfig::OpenAi {
        base_url: "https://api.openai.com/v1".to_owned(),
        api_key: None,
        model: " ".to_owned(),
    };
    let error = ChatModel::new(no_model, TEST_TIMEOUT).unwrap_err();
    assert!(
        matches!(&error, LlmError::InvalidConfig(message) if message.contains("LLM_MODEL")),
        "{error}"
    );

    let not_a_url = LlmConfig::OpenAi {
        base_url: "api.openai.com/v1".to_owned(),
        api_key: None,
        model: "gpt-4o-mini".to_owned(),
    };
    let error = ChatModel::new(not_a_url, TEST_TIMEOUT).unwrap_err();
    assert!(
        matches!(&error, LlmError::InvalidConfig(message) if message.contains("OPENAI_BASE_URL")),
        "{error}"
    );
}
