//! The MCP handler: the tool catalog and how each `tools/call` is answered.
//!
//! Tool contract (DESIGN.md): every result carries `structuredContent` matching the tool's
//! declared `outputSchema` plus a text block with the same JSON. A domain failure (bad
//! arguments, overflow, empty text) is a *tool result* with `isError: true` and
//! `{"error": "<message>"}`, so a model reads the message and can correct itself; JSON-RPC
//! errors are kept for protocol problems such as an unknown tool name.
//!
//! Arguments are parsed here rather than by rmcp's typed extractors precisely so that a wrong
//! type becomes a readable tool error instead of an opaque `-32602`.

mod arithmetic;
mod echo;
pub mod render;
pub mod sessions;
pub mod tasks;

use std::{fmt::Display, sync::Arc};

use opentelemetry::trace::TraceContextExt;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    handler::server::common::{schema_for_input, schema_for_output},
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams, CustomRequest,
        CustomResult, GetTaskParams, GetTaskResult, Implementation, JsonObject, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
        UpdateTaskParams,
    },
    service::{NotificationContext, RequestContext},
};
use schemars::JsonSchema;
use service_core::telemetry::propagation;
pub use sidecar_contract::ErrorCode;
use sidecar_contract::{ToolError, tool::*};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::telemetry::METRICS;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

/// What the server tells a client about itself at `initialize`.
const INSTRUCTIONS: &str = "Tools for exact arithmetic (add, subtract), a round-trip check \
(echo), and rendering charts and SVG to images. render does it in one call: it answers with \
the image's download URL (as an MCP task for clients with the tasks extension). The job tools \
do the same in steps: start_render returns a job_id at once; poll get_render_status until \
state is succeeded, failed or cancelled, then get_render_result gives a download URL. Every \
result is JSON in structuredContent; failures come back with isError true and an `error` \
message explaining what to change.";

/// The tools this server offers, built once at start-up and shared by every session.
#[derive(Debug)]
pub struct ToolCatalog {
    tools: Vec<Tool>,
}

impl ToolCatalog {
    pub fn new() -> Result<Self, CatalogError> {
        let tools = vec![
            tool::<arithmetic::Operands, arithmetic::Sum>(
                ADD,
                "Add two numbers: returns {\"sum\": a + b}. Integers are added exactly \
                 (no rounding); a result outside the 64-bit integer range is an error, not a \
                 wrapped value. If either number has a fraction the result is a float.",
            )?,
            tool::<arithmetic::Operands, arithmetic::Difference>(
                SUBTRACT,
                "Subtract b from a: returns {\"difference\": a - b}. Integers are subtracted \
                 exactly; a result outside the 64-bit integer range is an error. If either \
                 number has a fraction the result is a float.",
            )?,
            tool::<echo::EchoInput, echo::EchoOutput>(
                ECHO,
                "Return the given non-empty text unchanged: {\"text\": text}. Use it to check \
                 that the tool connection works.",
            )?,
            tool::<render::StartRenderInput, sidecar_contract::RenderOutput>(
                RENDER,
                "Render a chart (to PNG or SVG) or an SVG document (to PNG) and get \
                 the image: {job_id, url, expires_at, content_type, bytes, sha256}, with the \
                 url as a resource link and a small PNG also inline as an image. Small charts \
                 take well under a second. An invalid spec is refused with an error saying \
                 what to fix. Clients that support MCP tasks get a task to follow instead of \
                 waiting; for others the call waits (up to the render time limit, reporting \
                 progress). idempotency_key makes a retry return the same render. Charts: \
                 {\"kind\":\"chart\",\"chart\":{\"type\":\"bar\",\"series\":[{\"name\":\"sales\",\
                 \"points\":[[\"Q1\",120],[\"Q2\",130]]}]}}; types bar (stacked, horizontal), \
                 line, area, scatter, pie, donut; x numbers, labels or ISO dates. Or Vega-Lite: \
                 {\"kind\":\"vega-lite\",\"vega_lite\":{…}} with inline data.values, marks \
                 bar/line/area/point/arc, aggregate sum/mean/count.",
            )?
            .annotate(mutating()),
            tool::<render::StartRenderInput, render::StartRenderOutput>(
                START_RENDER,
                "Start rendering a chart or Vega-Lite spec (to PNG or SVG) or an SVG document (to PNG) \
                 as a background job. Returns at once with {job_id, state: \"queued\"}. Then \
                 poll get_render_status with the job_id until state is \"succeeded\", \
                 \"failed\" or \"cancelled\" (small charts take well under a second), and call \
                 get_render_result for the download URL. An invalid spec is refused here with \
                 an error saying what to fix, and no job is created.",
            )?
            .annotate(mutating()),
            tool::<render::JobIdInput, crate::jobs::model::JobStatus>(
                GET_RENDER_STATUS,
                "Get a render job's progress: state (queued, running, succeeded, failed, \
                 cancelled), \
                 stage and total_stages of its pipeline, a message like \"[2/4] rasterizing\", \
                 and the error when it failed. Answers at once; poll it about once a second.",
            )?,
            tool::<render::JobIdInput, crate::jobs::model::JobResult>(
                GET_RENDER_RESULT,
                "Get a render job's result. When ready is true it has a time-limited download \
                 url (with expires_at), content_type, bytes and sha256. ready is false until \
                 the job has succeeded; a failed job has its error.",
            )?,
            tool::<render::JobIdInput, crate::jobs::model::JobStatus>(
                CANCEL_RENDER,
                "Cancel a queued or running render job. It ends at once in the state \
                 \"cancelled\". A job that already finished is left as it is. Returns the \
                 job's status afterwards.",
            )?
            .annotate(mutating()),
            tool::<render::ListRendersInput, render::ListRendersOutput>(
                LIST_RENDERS,
                "List recent render jobs, newest first, optionally only those in one state.",
            )?,
        ];
        Ok(Self { tools })
    }

    pub fn tools(&self) -> &[Tool] {
        &self.tools
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the input schema of tool `{tool}` is not valid for MCP: {reason}")]
pub struct CatalogError {
    tool: &'static str,
    reason: String,
}

fn tool<Input, Output>(name: &'static str, description: &'static str) -> Result<Tool, CatalogError>
where
    Input: JsonSchema + 'static,
    Output: JsonSchema + 'static,
{
    let input_schema =
        schema_for_input::<Input>().map_err(|reason| CatalogError { tool: name, reason })?;
    Ok(Tool::new(name, description, standard_schema(&input_schema))
        .with_raw_output_schema(standard_schema(&schema_for_output::<Output>()))
        .with_annotations(
            ToolAnnotations::new()
                .read_only(true)
                .destructive(false)
                .idempotent(true)
                .open_world(false),
        ))
}

/// The schema with schemars' Rust-specific `format`s (`uint32`, `uint64`, `double`, …) taken
/// out: no JSON Schema validator knows them (the TypeScript SDK's Ajv warns about each one on
/// every `tools/list`). An integer's range is said the standard way instead, with `minimum`
/// and `maximum`.
fn standard_schema(schema: &JsonObject) -> Arc<JsonObject> {
    let mut schema = schema.clone();
    strip_rust_formats(&mut schema);
    Arc::new(schema)
}

fn strip_rust_formats(schema: &mut JsonObject) {
    let format = schema.get("format").and_then(Value::as_str);
    let range: Option<(Value, Value)> = match format {
        Some("uint8") => Some((0.into(), u8::MAX.into())),
        Some("uint16") => Some((0.into(), u16::MAX.into())),
        Some("uint32") => Some((0.into(), u32::MAX.into())),
        Some("uint64" | "uint") => Some((0.into(), u64::MAX.into())),
        Some("int8") => Some((i8::MIN.into(), i8::MAX.into())),
        Some("int16") => Some((i16::MIN.into(), i16::MAX.into())),
        Some("int32") => Some((i32::MIN.into(), i32::MAX.into())),
        Some("int64" | "int") => Some((i64::MIN.into(), i64::MAX.into())),
        _ => None,
    };
    if range.is_some() || matches!(format, Some("float" | "double")) {
        schema.remove("format");
    }
    if let Some((minimum, maximum)) = range {
        // A bound the type already has (schemars writes `minimum: 0` for unsigned) stays.
        schema.entry("minimum").or_insert(minimum);
        schema.entry("maximum").or_insert(maximum);
    }
    for value in schema.values_mut() {
        strip_nested(value);
    }
}

fn strip_nested(value: &mut Value) {
    match value {
        Value::Object(object) => strip_rust_formats(object),
        Value::Array(items) => items.iter_mut().for_each(strip_nested),
        _ => {}
    }
}

/// Annotations of the tools that change state (start and cancel jobs).
fn mutating() -> ToolAnnotations {
    ToolAnnotations::new()
        .read_only(false)
        .destructive(false)
        .idempotent(false)
        .open_world(false)
}

/// What every handler shares: the catalog and the render tools' dependencies.
#[derive(Debug)]
pub struct Shared {
    pub catalog: ToolCatalog,
    pub render: render::RenderTools,
}

/// One MCP handler per session (stateful mode) or per request (stateless mode); cheap to make.
#[derive(Debug, Clone)]
pub struct McpServer {
    shared: Arc<Shared>,
    /// Stateful mode: where a session's peer is recorded once it is initialized.
    sessions: Option<Arc<sessions::SessionPeers>>,
}

impl McpServer {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            sessions: None,
        }
    }

    /// Records each session's peer in `sessions` when its client says it is initialized.
    #[must_use]
    pub fn with_sessions(mut self, sessions: Arc<sessions::SessionPeers>) -> Self {
        self.sessions = Some(sessions);
        self
    }
}

impl ServerHandler for McpServer {
    // `enable_logging` is deprecated with SEP-2577; see `set_level`.
    #[allow(deprecated)]
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_logging()
                // The tasks extension (`io.modelcontextprotocol/tasks`): render jobs are tasks.
                .enable_tasks()
                .build(),
        )
        .with_server_info(Implementation::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
        ))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.shared.catalog.tools.clone(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.shared
            .catalog
            .tools
            .iter()
            .find(|tool| tool.name == name)
            .cloned()
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let tool = request.name.clone();
        let caller = caller_context(&context);
        let span = tool_span(&tool, caller.as_ref());
        let result = self
            .run_tool(request, &context)
            .instrument(span.clone())
            .await;
        let outcome = match &result {
            Ok(CallToolResponse::Complete(result)) if result.is_error == Some(true) => {
                let failure =
                    ToolError::from_structured_content(result.structured_content.as_ref());
                let code = failure
                    .as_ref()
                    .and_then(|failure| failure.code)
                    .map_or("error", ErrorCode::as_str);
                span.record("otel.status_code", "ERROR");
                span.record("error.type", code);
                if let Some(ToolError {
                    error,
                    code: Some(ErrorCode::Internal),
                }) = &failure
                {
                    // The caller gets the message; the operator gets it once here, joined to
                    // the caller's trace (the span's trace fields when spans are exported, the
                    // propagated trace id otherwise).
                    let trace_id = caller
                        .as_ref()
                        .map(|context| context.span().span_context().trace_id().to_string());
                    tracing::error!(
                        parent: &span,
                        tool = %tool,
                        trace_id,
                        error = %error,
                        "tool call failed inside the sidecar"
                    );
                }
                "error"
            }
            Ok(_) => "ok",
            Err(error) => {
                span.record("otel.status_code", "ERROR");
                span.record("error.type", error.code.0);
                "protocol_error"
            }
        };
        METRICS.tool_call(&tool, outcome);
        result
    }

    /// rmcp hands over a request it could not parse as a known method: a method it does not
    /// know, or a known one whose params do not fit (a `tasks/get` without a string `taskId`,
    /// a `tools/call` without `name`). The second is `-32602` saying what is wrong, not the
    /// `-32601` rmcp answers by default.
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        _context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        fn problem<T: DeserializeOwned>(params: Value) -> String {
            serde_json::from_value::<T>(params).err().map_or_else(
                || "they do not fit the method".into(),
                |error| error.to_string(),
            )
        }
        let params = request.params.unwrap_or(Value::Null);
        let problem = match request.method.as_str() {
            "tasks/get" => problem::<GetTaskParams>(params),
            "tasks/cancel" => problem::<CancelTaskParams>(params),
            "tasks/update" => problem::<UpdateTaskParams>(params),
            "tools/call" => problem::<CallToolRequestParams>(params),
            method => {
                return Err(McpError::new(
                    rmcp::model::ErrorCode::METHOD_NOT_FOUND,
                    format!("method `{method}` not found"),
                    None,
                ));
            }
        };
        Err(McpError::invalid_params(
            format!("invalid params of {}: {problem}", request.method),
            None,
        ))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        let task = self.shared.render.get_task(&request.task_id).await?;
        Ok(GetTaskResult::new(task))
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.shared.render.cancel_task(&request.task_id).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.shared.render.update_task(&request.task_id).await
    }

    /// In stateful mode, the session's peer is recorded for the `/mcp` fast path
    /// (`sessions`). rmcp hands this notification to the session it names in
    /// `Mcp-Session-Id`, so that header names the session whose peer this is.
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        tracing::info!("client initialized");
        if let Some(sessions) = &self.sessions
            && let Some(id) = context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.headers.get("mcp-session-id"))
                .and_then(|value| value.to_str().ok())
        {
            sessions.register(id, context.peer).await;
        }
    }

    /// The sidecar sends no `notifications/message`: its logs go to stdout and from there to
    /// Cloud Logging. Any level is therefore honoured trivially, and accepting the request
    /// keeps clients that set one working. (SEP-2577 deprecates MCP logging from 2026-07-28;
    /// the 2025 protocol versions clients negotiate today still define it.)
    #[allow(deprecated)]
    async fn set_level(
        &self,
        _request: rmcp::model::SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        Ok(())
    }
}

/// The caller's trace context, when the HTTP request (`traceparent`, or Cloud Run's
/// `X-Cloud-Trace-Context`) or the request's `_meta` (`traceparent`) carries one.
fn caller_context(context: &RequestContext<RoleServer>) -> Option<opentelemetry::Context> {
    context
        .extensions
        .get::<http::request::Parts>()
        .and_then(|parts| propagation::context_from_headers(&parts.headers))
        .or_else(|| {
            context
                .meta
                .get("traceparent")
                .and_then(|value| value.as_str())
                .and_then(propagation::context_from_traceparent)
        })
}

/// The span of one tool call, `tools/call <tool>`, a child of the caller's span when there is
/// one. Only made while spans are exported: tool calls are the hot path.
fn tool_span(tool: &str, caller: Option<&opentelemetry::Context>) -> tracing::Span {
    if !service_core::telemetry::exporting_traces() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "tools/call",
        otel.name = %format!("tools/call {tool}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        mcp.method.name = "tools/call",
        gen_ai.tool.name = %tool,
        job_id = tracing::field::Empty,
        error.type = tracing::field::Empty,
    );
    if let Some(parent) = caller {
        let _ = span.set_parent(parent.clone());
    }
    span
}

impl McpServer {
    async fn run_tool(
        &self,
        request: CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let arguments = request.arguments.unwrap_or_default();
        let render = &self.shared.render;
        let result = match request.name.as_ref() {
            RENDER => return Ok(self.render(arguments, context).await),
            ADD => answer(arguments, |operands| arithmetic::add(&operands)),
            SUBTRACT => answer(arguments, |operands| arithmetic::subtract(&operands)),
            ECHO => answer(arguments, echo::echo),
            START_RENDER => answer_async(arguments, |input| render.start(input)).await,
            GET_RENDER_STATUS => answer_async(arguments, |input| render.status(input)).await,
            GET_RENDER_RESULT => answer_async(arguments, |input| render.result(input)).await,
            CANCEL_RENDER => answer_async(arguments, |input| render.cancel(input)).await,
            LIST_RENDERS => answer_async(arguments, |input| render.list(input)).await,
            unknown => {
                return Err(McpError::invalid_params(
                    format!("unknown tool `{unknown}`; tools/list gives the available tools"),
                    None,
                ));
            }
        };
        Ok(result.into())
    }
}

impl McpServer {
    /// `render`: a task when the request declares the tasks extension, else the result.
    async fn render(
        &self,
        arguments: JsonObject,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResponse {
        let input = match parse_arguments::<render::StartRenderInput>(arguments) {
            Ok(input) => input,
            Err(error) => return error.into(),
        };
        let as_task = context
            .client_capabilities()
            .is_some_and(|capabilities| capabilities.supports_tasks());
        let progress = context
            .meta
            .get_progress_token()
            .map(|token| tasks::ProgressSink {
                peer: context.peer.clone(),
                token,
            });
        match self.shared.render.render(input, as_task, progress).await {
            Ok(tasks::Rendered::Task(task)) => CallToolResponse::Task(task),
            Ok(tasks::Rendered::Result(result)) => result.into(),
            Err(error) => tool_error(error.failure(), error).into(),
        }
    }
}

/// Parses a tool's arguments, runs it, and turns either outcome into a tool result.
fn answer<Input, Output, Error>(
    arguments: JsonObject,
    run: impl FnOnce(Input) -> Result<Output, Error>,
) -> CallToolResult
where
    Input: DeserializeOwned,
    Output: Serialize,
    Error: ToolFailure,
{
    match parse_arguments(arguments) {
        Ok(input) => outcome(run(input)),
        Err(error) => error,
    }
}

/// [`answer`] for tools that wait on I/O.
async fn answer_async<Input, Output, Error, Run>(
    arguments: JsonObject,
    run: impl FnOnce(Input) -> Run,
) -> CallToolResult
where
    Input: DeserializeOwned,
    Output: Serialize,
    Error: ToolFailure,
    Run: Future<Output = Result<Output, Error>>,
{
    match parse_arguments(arguments) {
        Ok(input) => outcome(run(input).await),
        Err(error) => error,
    }
}

fn parse_arguments<Input: DeserializeOwned>(
    arguments: JsonObject,
) -> Result<Input, CallToolResult> {
    serde_json::from_value::<Input>(Value::Object(arguments)).map_err(|error| {
        tool_error(
            ErrorCode::InvalidArguments,
            format!("invalid arguments: {error}"),
        )
    })
}

fn outcome<Output: Serialize, Error: ToolFailure>(result: Result<Output, Error>) -> CallToolResult {
    match result {
        Ok(output) => match serde_json::to_value(output) {
            Ok(value) => CallToolResult::structured(value),
            Err(error) => tool_error(
                ErrorCode::Internal,
                format!("the result could not be encoded: {error}"),
            ),
        },
        Err(error) => tool_error(error.failure(), error),
    }
}

/// A tool's error type says which [`ErrorCode`] it is.
pub trait ToolFailure: Display {
    fn failure(&self) -> ErrorCode;
}

impl ToolFailure for arithmetic::ArithmeticError {
    fn failure(&self) -> ErrorCode {
        ErrorCode::InvalidArguments
    }
}

impl ToolFailure for echo::EmptyText {
    fn failure(&self) -> ErrorCode {
        ErrorCode::InvalidArguments
    }
}

/// A failed tool call as the model should see it: `isError: true` and
/// `{"error": message, "code": failure}`.
pub fn tool_error(failure: ErrorCode, message: impl Display) -> CallToolResult {
    let error = ToolError::new(failure, message);
    // A struct of a string and an enum always encodes; the fallback only keeps the type total.
    let content = serde_json::to_value(&error).unwrap_or(Value::String(error.error));
    CallToolResult::structured_error(content)
}
