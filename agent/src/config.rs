//! The agent's typed configuration: every setting is a flag with an environment fallback,
//! and its doc comment is its `--help` text.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{Parser, ValueEnum};
pub use service_core::config::{Secret, parse_duration};
use service_core::telemetry::LogConfig;

pub use crate::{api::mcp_endpoint::AllowedHosts, mcp::server_url::ServerUrl};

/// The agent: REST + SSE API, web page and LLM tool loop in front of the mcp-sidecar and any
/// other MCP servers. Serves on 0.0.0.0:$PORT; /healthz is liveness, /readyz is 200 once the
/// sidecar answers.
#[derive(Debug, Clone, Parser)]
#[command(name = "agent", version, about, long_about = None)]
pub struct Config {
    /// Port to listen on, on all interfaces (Cloud Run sets PORT). 0 picks a free port.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,

    /// Address to bind, with PORT. Default: all interfaces, as Cloud Run needs.
    #[arg(long, env = "BIND_ADDR", default_value = "0.0.0.0")]
    pub bind_addr: std::net::IpAddr,

    /// The sidecar's MCP endpoint (Streamable HTTP, no auth: it is only reachable inside the
    /// instance), an http(s) URL with a host; checked at start-up. Its /files/* is proxied, so
    /// the agent's one port serves everything.
    #[arg(
        long,
        env = "MCP_SERVER_URL",
        default_value = "http://127.0.0.1:3000/mcp"
    )]
    pub mcp_server_url: ServerUrl,

    /// JSON file naming more MCP servers, in the usual shape
    /// {"mcpServers": {"name": {"url": "...", "headers": {...}, "auth": "google-id-token"}}};
    /// `${VAR}` in urls and header values is replaced from the environment, and every url
    /// must then be an http(s) URL with a host. "auth": "google-id-token" sends a Google ID
    /// token (audience: the url's origin, or "audience"), as Cloud Run services that require
    /// IAM expect; it comes from Application Default Credentials: the service account key file
    /// named by GOOGLE_APPLICATION_CREDENTIALS, else the metadata server (GCE_METADATA_HOST
    /// overrides its host:port). Those two are read by google-cloud-auth itself.
    #[arg(long, env = "MCP_CONFIG")]
    pub mcp_config: Option<PathBuf>,

    /// Bound on every MCP call (tool calls included), e.g. `30s`; past it the REST API answers 504.
    #[arg(long, env = "MCP_CALL_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub mcp_call_timeout: Duration,

    /// Host names accepted on the agent's own MCP endpoint /mcp, comma-separated, besides the
    /// loopback names localhost, 127.0.0.1 and ::1 (always accepted): `name` (any port),
    /// `name:port`, or `*.domain` (any name under domain, any port). The default `*.run.app`
    /// accepts the service's Cloud Run URLs, which is also the Host that `gcloud run services
    /// proxy` sends; no run.app name can be made to resolve to an address of an attacker's
    /// choosing. Add a custom domain if one is mapped to the service. A browser's Origin must
    /// be http(s) on a loopback name or on a listed `name`/`name:port` (never a `*.` entry:
    /// anyone can serve a page from a run.app name). Any other Host or Origin is refused with
    /// 403 (DNS-rebinding protection). Empty: loopback names only.
    #[arg(long, env = "MCP_ALLOWED_HOSTS", default_value = "*.run.app")]
    pub mcp_allowed_hosts: AllowedHosts,

    /// How often an events stream asks for progress when nothing says otherwise, e.g. `200ms`:
    /// a render's stream with a sidecar that does not run MCP tasks (`get_render_status`), or
    /// a task that names no `pollIntervalMs`. A task's own `pollIntervalMs` wins (at least 50ms).
    #[arg(long, env = "RENDER_POLL_INTERVAL", default_value = "200ms", value_parser = parse_duration)]
    pub render_poll_interval: Duration,

    /// Interval of SSE keep-alive comments, so proxies keep quiet streams open, e.g. `15s`.
    #[arg(long, env = "SSE_HEARTBEAT", default_value = "15s", value_parser = parse_duration)]
    pub sse_heartbeat: Duration,

    /// How long a render's events stream may stay open, e.g. `10m`.
    #[arg(long, env = "SSE_MAX_DURATION", default_value = "10m", value_parser = parse_duration)]
    pub sse_max_duration: Duration,

    /// Language model for POST /v1/chat: `vertex` (Vertex AI Gemini, credentials from ADC /
    /// the metadata server) or `openai` (any OpenAI-compatible chat-completions endpoint).
    /// Unset: /v1/chat answers 503 saying how to configure one.
    #[arg(long, env = "LLM_PROVIDER", value_enum)]
    pub llm_provider: Option<LlmProvider>,

    /// Model name, e.g. `gemini-2.5-flash` (vertex) or `gpt-4o-mini` (openai).
    #[arg(long, env = "LLM_MODEL")]
    pub llm_model: Option<String>,

    /// Google Cloud project for Vertex AI.
    #[arg(long, env = "VERTEX_PROJECT")]
    pub vertex_project: Option<String>,

    /// Vertex AI region.
    #[arg(long, env = "VERTEX_LOCATION", default_value = "us-central1")]
    pub vertex_location: String,

    /// Vertex AI endpoint override (default https://{VERTEX_LOCATION}-aiplatform.googleapis.com).
    #[arg(long, env = "VERTEX_ENDPOINT")]
    pub vertex_endpoint: Option<String>,

    /// Base URL of an OpenAI-compatible API, ending before /chat/completions.
    #[arg(
        long,
        env = "OPENAI_BASE_URL",
        default_value = "https://api.openai.com/v1"
    )]
    pub openai_base_url: String,

    /// API key for the OpenAI-compatible endpoint (sent as a bearer token), if it needs one.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub openai_api_key: Option<Secret>,

    /// Most model calls in one /v1/chat request (each may ask for tool calls).
    #[arg(long, env = "LLM_MAX_TURNS", default_value_t = 8)]
    pub llm_max_turns: u32,

    /// Whether images tools return (a render's picture) go to the model with their results:
    /// `auto` (Vertex AI: yes; an OpenAI-compatible endpoint: no, since a text-only model
    /// would refuse the request), `on` or `off`.
    #[arg(long, env = "LLM_TOOL_IMAGES", value_enum, default_value = "auto")]
    pub llm_tool_images: ToolImages,

    /// Bound on each model call, e.g. `60s`.
    #[arg(long, env = "LLM_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub llm_timeout: Duration,

    /// Largest request body the REST API accepts, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long shutdown waits for in-flight requests after SIGTERM, e.g. `8s`.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "8s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub log: LogConfig,
}

/// Which model API /v1/chat uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LlmProvider {
    /// Vertex AI Gemini `generateContent` with function declarations.
    Vertex,
    /// An OpenAI-compatible `/chat/completions` endpoint with tools.
    Openai,
}

impl Config {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind_addr, self.port)
    }

    /// A configuration with every default, listening on 127.0.0.1:0. For tests and embedders.
    pub fn for_tests(mcp_server_url: ServerUrl) -> Self {
        let mut config = Self::parse_from(["agent"]);
        config.bind_addr = std::net::Ipv4Addr::LOCALHOST.into();
        config.port = 0;
        config.mcp_server_url = mcp_server_url;
        config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mistyped_sidecar_url_is_refused_naming_the_flag() {
        let error = Config::try_parse_from(["agent", "--mcp-server-url", "htp:/x"]).unwrap_err();

        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        let message = error.to_string();
        assert!(message.contains("--mcp-server-url"), "{message}");
        assert!(
            message.contains("`htp:/x` is not an http(s) URL"),
            "{message}"
        );
    }

    #[test]
    fn mcp_allowed_hosts_default_to_run_app_names_and_a_bad_entry_names_the_flag() {
        let config = Config::try_parse_from(["agent"]).unwrap();
        assert!(
            config
                .mcp_allowed_hosts
                .accepts("agent-abc123-uc.a.run.app")
        );
        assert!(!config.mcp_allowed_hosts.accepts("evil.example"));

        let error = Config::try_parse_from(["agent", "--mcp-allowed-hosts", "ok.example,*.x:1"])
            .unwrap_err();
        let message = error.to_string();
        assert!(message.contains("--mcp-allowed-hosts"), "{message}");
        assert!(message.contains("`*.x:1` is not a host name"), "{message}");
    }

    #[test]
    fn the_sidecar_url_is_parsed() {
        let config =
            Config::try_parse_from(["agent", "--mcp-server-url", "http://10.0.0.7:3000/mcp"])
                .unwrap();

        assert_eq!(config.mcp_server_url.as_str(), "http://10.0.0.7:3000/mcp");
        assert_eq!(config.mcp_server_url.origin(), "http://10.0.0.7:3000");
    }
}

/// `LLM_TOOL_IMAGES`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ToolImages {
    /// Vertex AI: on; OpenAI-compatible: off.
    Auto,
    On,
    Off,
}
