//! The MCP protocol core, driven by rmcp's own client against the real server on port 0,
//! in both session modes.

use crate::common::{call, mcp_client, spawn_sidecar, structured_ok, tool_error_message};
use mcp_sidecar::config::SessionMode;
use rmcp::{
    ClientServiceExt,
    model::{CallToolRequestParams, ClientConfig, ProtocolVersion},
    service::ClientLifecycleMode,
    transport::StreamableHttpClientTransport,
};
use serde_json::json;

const MODES: [SessionMode; 2] = [SessionMode::Stateless, SessionMode::Stateful];

#[tokio::test]
async fn initialize_reports_the_server_and_its_capabilities() {
    for mode in MODES {
        let sidecar = spawn_sidecar(|config| config.session_mode = mode).await;
        let client = mcp_client(&sidecar.mcp_url()).await;
        let info = client.peer_info().expect("server info after initialize");
        let server = info.server_info.as_ref().expect("serverInfo");
        assert_eq!(server.name, "mcp-sidecar", "{mode:?}");
        assert!(
            info.capabilities.tools.is_some(),
            "{mode:?}: tools capability"
        );
        assert!(
            info.instructions.is_some(),
            "{mode:?}: instructions for the model"
        );
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn tools_list_declares_input_and_output_schemas_with_parameter_descriptions() {
    for mode in MODES {
        let sidecar = spawn_sidecar(|config| config.session_mode = mode).await;
        let client = mcp_client(&sidecar.mcp_url()).await;
        let tools = client.list_all_tools().await.unwrap();
        let names: Vec<_> = tools.iter().map(|tool| tool.name.as_ref()).collect();
        assert_eq!(
            names,
            [
                "add",
                "subtract",
                "echo",
                "render",
                "start_render",
                "get_render_status",
                "get_render_result",
                "cancel_render",
                "list_renders"
            ],
            "{mode:?}"
        );
        for tool in &tools {
            assert!(tool.description.as_deref().is_some_and(|d| d.len() > 20));
            let properties = tool.input_schema["properties"].as_object().unwrap();
            assert!(!properties.is_empty(), "{}: input properties", tool.name);
            assert_eq!(tool.input_schema["type"], "object", "{}", tool.name);
            for (name, property) in properties {
                assert!(
                    property["description"]
                        .as_str()
                        .is_some_and(|d| !d.is_empty()),
                    "{}.{name} has a description",
                    tool.name
                );
            }
            let output = tool.output_schema.as_ref().expect("output schema");
            assert_eq!(output["type"], "object", "{}", tool.name);
        }
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn add_and_subtract_are_exact_for_integers_and_report_overflow() {
    for mode in MODES {
        let sidecar = spawn_sidecar(|config| config.session_mode = mode).await;
        let client = mcp_client(&sidecar.mcp_url()).await;

        let sum = structured_ok(&call(&client, "add", json!({"a": 2, "b": 3})).await);
        assert_eq!(sum, json!({"sum": 5}), "{mode:?}");
        let big = structured_ok(
            &call(
                &client,
                "add",
                json!({"a": 9_007_199_254_740_993_i64, "b": 1}),
            )
            .await,
        );
        assert_eq!(big, json!({"sum": 9_007_199_254_740_994_i64}));
        let difference =
            structured_ok(&call(&client, "subtract", json!({"a": 10, "b": 4.5})).await);
        assert_eq!(difference, json!({"difference": 5.5}));

        let overflow =
            tool_error_message(&call(&client, "add", json!({"a": u64::MAX, "b": 1})).await);
        assert!(overflow.contains("integer overflow"), "{overflow}");
        let underflow =
            tool_error_message(&call(&client, "subtract", json!({"a": i64::MIN, "b": 1})).await);
        assert!(underflow.contains("integer overflow"), "{underflow}");
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn wrong_or_missing_arguments_are_tool_errors_a_model_can_read() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;

    let wrong_type = tool_error_message(&call(&client, "add", json!({"a": "2", "b": 3})).await);
    assert!(wrong_type.contains("invalid arguments"), "{wrong_type}");
    let missing = tool_error_message(&call(&client, "subtract", json!({"a": 1})).await);
    assert!(missing.contains("missing field `b`"), "{missing}");
    let extra =
        tool_error_message(&call(&client, "echo", json!({"text": "x", "loud": true})).await);
    assert!(extra.contains("unknown field `loud`"), "{extra}");
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn echo_returns_its_text_and_refuses_empty_text() {
    for mode in MODES {
        let sidecar = spawn_sidecar(|config| config.session_mode = mode).await;
        let client = mcp_client(&sidecar.mcp_url()).await;
        let echoed = structured_ok(&call(&client, "echo", json!({"text": "héllo ✓"})).await);
        assert_eq!(echoed, json!({"text": "héllo ✓"}), "{mode:?}");
        let empty = tool_error_message(&call(&client, "echo", json!({"text": ""})).await);
        assert_eq!(empty, "text must not be empty");
        client.cancel().await.unwrap();
    }
}

#[tokio::test]
async fn an_unknown_tool_is_a_protocol_error() {
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = mcp_client(&sidecar.mcp_url()).await;
    let error = client
        .call_tool(CallToolRequestParams::new("multiply"))
        .await
        .expect_err("unknown tool");
    assert!(
        error.to_string().contains("unknown tool `multiply`"),
        "{error}"
    );
    // The session is still usable afterwards.
    structured_ok(&call(&client, "add", json!({"a": 1, "b": 1})).await);
    client.cancel().await.unwrap();
}

#[tokio::test]
async fn a_2026_client_using_server_discover_gets_the_same_tools() {
    // rmcp clients may skip `initialize` and use the 2026-07-28 `server/discover` lifecycle.
    let sidecar = spawn_sidecar(|_| {}).await;
    let client = ClientConfig::default()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(sidecar.mcp_url()),
            ClientLifecycleMode::Discover {
                preferred_versions: vec![ProtocolVersion::V_2026_07_28],
            },
        )
        .await
        .expect("discover succeeds");
    let sum = structured_ok(&call(&client, "add", json!({"a": 2, "b": 3})).await);
    assert_eq!(sum, json!({"sum": 5}));
    client.cancel().await.unwrap();
}
