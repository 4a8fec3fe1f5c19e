//! The `/mcp` fast path: the plain requests of a pre-2026-07-28 client (a `tools/call`,
//! `tools/list`, `ping` …) answered by our handler without rmcp's per-request machinery.
//!
//! - Stateless mode: for each POST rmcp builds a one-shot service: a fresh `Peer`, four
//!   channels, several cancellation tokens, a discarded `get_info()`, and four spawned tasks
//!   (serve loop, its waiter, the handler, the send), then tears it all down.
//! - Stateful mode: each request of a session goes into the session's worker, on to its serve
//!   loop, which spawns the handler; the answer goes back through the worker to a per-request
//!   SSE stream: six channel hops and two spawns.
//!
//! Under load either costs more than the tool call itself. Here the same request goes through
//! the same rmcp code that matters, [`rmcp::Service::handle_request`] on the same model types,
//! in one spawned task; the answer is serialised exactly as rmcp serialises it, as one
//! `application/json` body (200). In stateful mode rmcp would have sent the same message as
//! the one event of an SSE stream; the transport lets a server answer a request either way,
//! and every client must accept both.
//!
//! The handler needs a `Peer` for `context.protocol_version()` and the client's capabilities,
//! and for progress notifications, which need a stream to the client:
//! - stateless: the peer info rmcp makes up for a request depends only on the
//!   `MCP-Protocol-Version` header, so one long-lived peer per legacy protocol version is built
//!   at start-up on a transport that never receives ([`Parked`]);
//! - stateful: the session's own peer, recorded when the session was initialized
//!   ([`SessionPeers`]); requests of a session not recorded there go to rmcp.
//!
//! Requests that could make the handler talk to the client go to rmcp. The fast path is
//! taken only when every check below passes; anything else, including anything this module is
//! unsure of, goes to rmcp untouched, so no request is answered here that rmcp would have
//! answered differently:
//! - POST with a JSON content type, an `Accept` of plain entries naming both
//!   `application/json` and `text/event-stream` (anything with parameters or quotes → rmcp);
//! - no `Origin` header (rmcp's Origin rules are not repeated here), one `Host` header that
//!   rmcp's allow-list accepts (same parsing, precomputed);
//! - no `MCP-Protocol-Version` header (rmcp assumes 2025-03-26) or exactly one naming a known
//!   version before 2026-07-28 (that version's header and `_meta` rules are rmcp's);
//! - stateful: exactly one `Mcp-Session-Id`, naming a session rmcp holds open and whose peer
//!   is recorded; once per quarter of rmcp's idle timeout a session's request goes through
//!   rmcp all the same, so the session's worker sees it and does not close it as idle;
//! - the body parses as a JSON-RPC request that is not `initialize`, `server/discover`,
//!   `subscriptions/listen` or `tasks/*` (the edge and rmcp have their own handling for those)
//!   and whose `_meta` has neither a `protocolVersion` (per-request negotiation) nor a
//!   `progressToken` (progress notifications need a real stream; rmcp switches to SSE for
//!   them). In stateless mode a notification is answered 202 as rmcp does (the handler is not
//!   called); in stateful mode notifications go to the session (they initialize and cancel).
//!   Responses, errors and bodies that are not JSON-RPC go to rmcp, so the edge's rewrite of
//!   its 415 still applies.

use std::{future::Future, sync::Arc};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use rmcp::{
    Peer, RoleServer, Service,
    model::{
        CallToolRequest, ClientCapabilities, ClientJsonRpcMessage, ClientNotification,
        ClientRequest, ClientResult, Extensions, GetExtensions, GetMeta, Implementation,
        InitializeRequestParams, JsonRpcMessage, JsonRpcRequest, ProtocolVersion,
        RequestMetaObject, ServerJsonRpcMessage,
    },
    service::{RequestContext, RunningService, RxJsonRpcMessage, TxJsonRpcMessage, serve_directly},
    transport::Transport,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::server::{McpServer, sessions::SessionPeers};

/// The header a client names its protocol version in.
const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
/// The header naming a stateful request's session.
const SESSION_ID_HEADER: &str = "mcp-session-id";
/// The version rmcp assumes for a stateless request without the header.
const DEFAULT_VERSION: ProtocolVersion = ProtocolVersion::V_2025_03_26;
/// The `_meta` keys that take a request off the fast path (see the module docs).
const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
const META_PROGRESS_TOKEN: &str = "progressToken";

/// Requests answered here rather than by rmcp's per-request service or session worker.
pub struct FastPath {
    handler: McpServer,
    /// Stateless mode: one parked service per legacy protocol version, with that version; its
    /// peer is cloned into every request's context. Dropping one would end its (idle) loop, so
    /// they live as long as this. Empty in stateful mode.
    peers: Vec<(ProtocolVersion, RunningService<RoleServer, McpServer>)>,
    /// Stateful mode: the sessions' peers.
    sessions: Option<Arc<SessionPeers>>,
    /// rmcp's Host allow-list, parsed once; `None` when it is empty (rmcp then allows any).
    hosts: Option<Vec<AllowedHost>>,
    /// rmcp's cancellation token (`StreamableHttpServerConfig::cancellation_token`).
    shutdown: CancellationToken,
}

/// A request that passed every check, ready to be answered here.
// Lives on the stack for one move into `serve`; boxing it would cost an allocation per call.
#[allow(clippy::large_enum_variant)]
pub(super) enum Accepted {
    /// rmcp answers a notification in stateless mode with 202 and does not call the handler.
    Notification,
    Request {
        /// The peer of the request's context.
        peer: Peer<RoleServer>,
        request: JsonRpcRequest<ClientRequest>,
    },
}

/// An allow-list entry normalised as rmcp normalises it: host lower-cased without brackets,
/// a port only when the entry names one (a bare name allows any port).
#[derive(Debug, PartialEq)]
struct AllowedHost {
    host: String,
    port: Option<u16>,
}

impl FastPath {
    /// Stateless mode when `sessions` is `None`, stateful with it. Builds the parked peers, so
    /// it must run inside the Tokio runtime. `allowed_hosts`, `shutdown` and the session
    /// manager behind `sessions` must be what rmcp's service was configured with.
    ///
    /// Shutdown: like rmcp, a request still running when `shutdown` is cancelled (which the
    /// server does once every connection has closed, or when the grace is nearly over) is
    /// answered with rmcp's 500 and its handler's token is cancelled, so the drain never waits
    /// on a handler. The parked peers stop when the router (and with it this) is dropped.
    pub fn new(
        handler: McpServer,
        allowed_hosts: &[String],
        shutdown: CancellationToken,
        sessions: Option<Arc<SessionPeers>>,
    ) -> Self {
        let peers = ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .filter(|version| sessions.is_none() && is_legacy(version.as_str()))
            .map(|version| {
                // What rmcp makes up for a stateless request (`peer_info_for_stateless_request`).
                let peer_info = InitializeRequestParams::new(
                    ClientCapabilities::default(),
                    Implementation::default(),
                )
                .with_protocol_version(version.clone());
                let parked = serve_directly(handler.clone(), Parked, Some(peer_info));
                (version.clone(), parked)
            })
            .collect();
        let hosts = (!allowed_hosts.is_empty()).then(|| {
            allowed_hosts
                .iter()
                .filter_map(|allowed| AllowedHost::parse(allowed))
                .collect()
        });
        Self {
            handler,
            peers,
            sessions,
            hosts,
            shutdown,
        }
    }

    /// The request, when it may be answered here beyond doubt; `None` sends it to rmcp.
    pub(super) fn accepts(&self, parts: &Parts, body: &[u8]) -> Option<Accepted> {
        let headers = &parts.headers;
        if parts.method != Method::POST
            || headers.contains_key(header::ORIGIN)
            || !is_json(single(headers, header::CONTENT_TYPE)?)
            || !accepts_json_and_sse(headers)
            || !self.host_is_allowed(single(headers, header::HOST)?)
        {
            return None;
        }
        // rmcp's session path checks only that a version header names a known version; one on
        // 2026-07-28 or later is not a session request at all.
        let version = legacy_version(single(headers, PROTOCOL_VERSION_HEADER)?)?;
        let request = match parse(body)? {
            // Stateful: notifications go to the session (they initialize and cancel).
            ClientJsonRpcMessage::Notification(_) if self.sessions.is_none() => {
                return Some(Accepted::Notification);
            }
            ClientJsonRpcMessage::Request(request) if is_plain(&request.request) => request,
            _ => return None,
        };
        let peer = match &self.sessions {
            None => self.peer_for(version)?.clone(),
            // Last: it may make this request the session's periodic one through rmcp.
            Some(sessions) => sessions.peer(single(headers, SESSION_ID_HEADER)??.to_str().ok()?)?,
        };
        Some(Accepted::Request { peer, request })
    }

    /// Answers an accepted request as rmcp would. `parts` are the request's own: the handler
    /// reads them (e.g. `traceparent`) from the context's extensions, where rmcp puts them.
    pub(super) async fn serve(&self, accepted: Accepted, parts: Parts) -> Response {
        let (peer, request) = match accepted {
            Accepted::Notification => {
                tracing::trace!("notification accepted on the fast path");
                return StatusCode::ACCEPTED.into_response();
            }
            Accepted::Request { peer, request } => (peer, request),
        };
        let JsonRpcRequest {
            id, mut request, ..
        } = request;
        tracing::trace!(id = %id, method = request.method(), "served on the fast path");
        // As rmcp's serve loop: `_meta` and the extensions move into the context.
        let mut meta = RequestMetaObject::new();
        std::mem::swap(&mut meta, request.get_meta_mut());
        let mut extensions = Extensions::new();
        std::mem::swap(&mut extensions, request.extensions_mut());
        extensions.insert(parts);
        let mut context = RequestContext::new(id.clone(), peer);
        context.meta = meta;
        context.extensions = extensions;
        // A client that goes away cancels the handler's token (dropping this future drops
        // the guard); the handler itself runs on in its task, as under rmcp.
        let disconnect = context.ct.clone().drop_guard();
        let handler = self.handler.clone();
        let handling = tokio::spawn(
            async move { Service::<RoleServer>::handle_request(&handler, request, context).await }
                .in_current_span(),
        );
        let joined = tokio::select! {
            biased;
            joined = handling => joined,
            () = self.shutdown.cancelled() => return closed_before_answer(),
        };
        disconnect.disarm();
        let message = match joined {
            Ok(Ok(result)) => ServerJsonRpcMessage::response(result, id),
            Ok(Err(error)) => {
                // rmcp's serve loop logs a handler's error the same way.
                tracing::warn!(%id, ?error, "response error");
                ServerJsonRpcMessage::error(error, Some(id))
            }
            // rmcp never answers such a request; a 500 at least ends it.
            Err(error) => {
                tracing::error!(%id, %error, "MCP handler did not finish");
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
        };
        match serde_json::to_vec(&message) {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                Body::from(body),
            )
                .into_response(),
            Err(error) => {
                tracing::error!(%error, "Internal server error when serialize json response");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Encounter an error when serialize json response: {error}"),
                )
                    .into_response()
            }
        }
    }

    /// rmcp's Host rule (`host_is_allowed`) on a single `Host` header; anything it could
    /// not parse is left to rmcp to refuse.
    fn host_is_allowed(&self, host: Option<&HeaderValue>) -> bool {
        let Some(authority) = host
            .and_then(|value| value.to_str().ok())
            .and_then(|value| http::uri::Authority::try_from(value).ok())
        else {
            return false;
        };
        let Some(allowed) = &self.hosts else {
            return true;
        };
        // The entries are lower-case already, so this equals rmcp's lower-casing comparison.
        let host = trim_brackets(authority.host());
        let port = authority.port_u16();
        allowed.iter().any(|entry| {
            entry.host.eq_ignore_ascii_case(host) && entry.port.is_none_or(|p| port == Some(p))
        })
    }

    /// Stateless: the parked peer for `version`.
    fn peer_for(&self, version: &ProtocolVersion) -> Option<&Peer<RoleServer>> {
        self.peers
            .iter()
            .find(|(served, _)| served == version)
            .map(|(_, parked)| parked.peer())
    }
}

impl AllowedHost {
    /// rmcp's `parse_allowed_authority`.
    fn parse(allowed: &str) -> Option<Self> {
        let allowed = allowed.trim();
        if allowed.is_empty() {
            return None;
        }
        let (host, port) = match http::uri::Authority::try_from(allowed) {
            Ok(authority) => (
                trim_brackets(authority.host()).to_ascii_lowercase(),
                authority.port_u16(),
            ),
            Err(_) => (trim_brackets(allowed).to_ascii_lowercase(), None),
        };
        Some(Self { host, port })
    }
}

/// A version before 2026-07-28, whose clients initialize (and may hold sessions).
fn is_legacy(version: &str) -> bool {
    version < ProtocolVersion::V_2026_07_28.as_str()
}

/// The known version before 2026-07-28 that a request's `MCP-Protocol-Version` header names
/// (rmcp assumes 2025-03-26 without one); `None` for any other.
fn legacy_version(header: Option<&HeaderValue>) -> Option<&'static ProtocolVersion> {
    let named = match header {
        None => DEFAULT_VERSION.as_str(),
        Some(value) => value.to_str().ok()?,
    };
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .find(|known| known.as_str() == named && is_legacy(named))
}

/// rmcp's `normalize_host` without the lower-casing.
fn trim_brackets(host: &str) -> &str {
    host.trim_matches('[').trim_matches(']')
}

/// `Some(None)` for an absent header, `Some(Some(value))` for exactly one, `None` for more.
fn single(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<Option<&HeaderValue>> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    values.next().is_none().then_some(first)
}

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    content_type
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Both media types among `Accept` entries that are plain media ranges; any parameter,
/// quoting or undecodable value means rmcp's own parsing decides.
fn accepts_json_and_sse(headers: &HeaderMap) -> bool {
    let (mut json, mut sse) = (false, false);
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            return false;
        };
        if value.contains([';', '"']) {
            return false;
        }
        for entry in value.split(',') {
            let entry = entry.trim();
            json |= entry.eq_ignore_ascii_case("application/json");
            sse |= entry.eq_ignore_ascii_case("text/event-stream");
        }
    }
    json && sse
}

/// A request the fast path may answer: none that the edge or rmcp treat specially, and none
/// that could make the handler talk back to the client.
fn is_plain(request: &ClientRequest) -> bool {
    let method = request.method();
    let special = matches!(
        method,
        "initialize" | "server/discover" | "subscriptions/listen"
    ) || method.starts_with("tasks/");
    let meta = request.get_meta();
    !special && !meta.contains_key(META_PROTOCOL_VERSION) && !meta.contains_key(META_PROGRESS_TOKEN)
}

/// rmcp's answer to a stateless request whose handler had not answered when its
/// cancellation token fired.
fn closed_before_answer() -> Response {
    let message = "empty response: no response message received from handler";
    tracing::error!("Internal server error when {message}");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Encounter an error when {message}"),
    )
        .into_response()
}

/// The transport of the parked peers: nothing ever arrives on it, and nothing may be sent,
/// since a stateless request has no stream back to the client.
struct Parked;

impl Transport<RoleServer> for Parked {
    type Error = std::io::Error;

    fn send(
        &mut self,
        _message: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        std::future::ready(Err(std::io::Error::other(
            "a stateless request has no stream to the client",
        )))
    }

    fn receive(&mut self) -> impl Future<Output = Option<RxJsonRpcMessage<RoleServer>>> + Send {
        std::future::pending()
    }

    fn close(&mut self) -> impl Future<Output = Result<(), Self::Error>> + Send {
        std::future::ready(Ok::<_, Self::Error>(()))
    }
}

/// rmcp's own message parse, with `tools/call`, the request this path exists for, tried first
/// as the one request type it can be. `ClientRequest` is an untagged enum whose 22 variants
/// are tried in order, each miss building an error, and `tools/call` is the 14th: a third of
/// this path's time went there. The narrow parse is rmcp's `JsonRpcMessage` (same shape
/// checks) over `CallToolRequest`, so what it accepts the full parse would have made the same
/// `ClientRequest::CallToolRequest`; anything it does not accept takes the full parse.
fn parse(body: &[u8]) -> Option<ClientJsonRpcMessage> {
    const TOOLS_CALL: &[u8] = br#""tools/call""#;
    if body
        .windows(TOOLS_CALL.len())
        .any(|window| window == TOOLS_CALL)
        && let Ok(JsonRpcMessage::Request(request)) = serde_json::from_slice::<
            JsonRpcMessage<CallToolRequest, ClientResult, ClientNotification>,
        >(body)
    {
        return Some(ClientJsonRpcMessage::Request(JsonRpcRequest {
            jsonrpc: request.jsonrpc,
            id: request.id,
            request: ClientRequest::CallToolRequest(request.request),
        }));
    }
    serde_json::from_slice::<ClientJsonRpcMessage>(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn the_narrow_tools_call_parse_gives_what_rmcps_full_parse_gives() {
        let bodies = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":2,"b":3}}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"echo","arguments":{"text":"hi"},"_meta":{"progressToken":7}}}"#,
            // No name: not a CallToolRequest, so rmcp makes it a custom request.
            r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"{"jsonrpc":"2.0","id":3,"method":"tools/call"}"#,
            // A request with a result is no message at all for rmcp.
            r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"add"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"add"}}"#,
            r#"{"jsonrpc":"1.0","id":5,"method":"tools/call","params":{"name":"add"}}"#,
            r#"{"jsonrpc":"2.0","id":6,"method":"tools/list"}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"ping","params":{"note":""tools/call""}}"#,
            r#"{"jsonrpc":"2.0","id":8,"result":{"method":"tools/call"}}"#,
            r#"[{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"add"}}]"#,
        ];
        for body in bodies {
            let full = serde_json::from_slice::<ClientJsonRpcMessage>(body.as_bytes()).ok();
            let ours = parse(body.as_bytes());
            assert_eq!(
                ours.as_ref()
                    .map(|message| serde_json::to_value(message).unwrap()),
                full.as_ref()
                    .map(|message| serde_json::to_value(message).unwrap()),
                "{body}"
            );
            assert_eq!(
                ours.as_ref().map(|message| format!("{message:?}")),
                full.as_ref().map(|message| format!("{message:?}")),
                "{body}"
            );
        }
    }

    #[test]
    fn allow_list_entries_are_normalised_as_rmcp_does() {
        assert_eq!(
            AllowedHost::parse(" [::1] "),
            Some(AllowedHost {
                host: "::1".into(),
                port: None
            })
        );
        assert_eq!(
            AllowedHost::parse("App.Example.com:8443"),
            Some(AllowedHost {
                host: "app.example.com".into(),
                port: Some(8443)
            })
        );
        assert_eq!(AllowedHost::parse("  "), None);
    }

    #[test]
    fn only_plain_accept_entries_naming_both_types_qualify() {
        let plain = headers(&[("accept", "application/json, text/event-stream")]);
        assert!(accepts_json_and_sse(&plain));
        let split = headers(&[
            ("accept", "text/event-stream"),
            ("accept", "application/json"),
        ]);
        assert!(accepts_json_and_sse(&split));
        let weighted = headers(&[("accept", "application/json;q=1, text/event-stream")]);
        assert!(!accepts_json_and_sse(&weighted), "parameters are rmcp's");
        let one = headers(&[("accept", "application/json")]);
        assert!(!accepts_json_and_sse(&one));
    }

    #[test]
    fn repeated_headers_are_not_single() {
        let twice = headers(&[("host", "a"), ("host", "b")]);
        assert!(single(&twice, header::HOST).is_none());
        assert_eq!(single(&HeaderMap::new(), header::HOST), Some(None));
    }
}
