//! The agent as a library: `App::build(config)` binds and wires everything,
//! `run_until_stopped` serves until the shutdown token is cancelled. `main.rs` only parses the
//! configuration and calls these, so tests run exactly the same agent on port 0.

pub mod api;
pub mod config;
pub mod llm;
pub mod mcp;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    api::AppState,
    config::{Config, LlmProvider},
    llm::{ChatModel, LlmConfig},
    mcp::McpHub,
};

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// An agent that is bound and ready to serve.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    hub: Arc<McpHub>,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
}

/// The LLM settings from the command line, checked.
fn llm_config(config: &Config) -> Result<LlmConfig, StartupError> {
    let missing = |name: &str| StartupError::Config(format!("LLM_PROVIDER needs {name}"));
    Ok(match config.llm_provider {
        None => LlmConfig::None,
        Some(LlmProvider::Vertex) => LlmConfig::Vertex {
            project: config
                .vertex_project
                .clone()
                .ok_or_else(|| missing("VERTEX_PROJECT"))?,
            location: config.vertex_location.clone(),
            model: config
                .llm_model
                .clone()
                .unwrap_or_else(|| "gemini-2.5-flash".to_owned()),
            endpoint: config.vertex_endpoint.clone(),
        },
        Some(LlmProvider::Openai) => LlmConfig::OpenAi {
            base_url: config.openai_base_url.clone(),
            api_key: config
                .openai_api_key
                .as_ref()
                .map(|key| key.expose().to_owned()),
            model: config
                .llm_model
                .clone()
                .ok_or_else(|| missing("LLM_MODEL"))?,
        },
    })
}

impl App {
    /// Binds the listener and builds everything; MCP servers are connected by
    /// [`App::run_until_stopped`] (the sidecar need not be up yet).
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        // `${VAR}` in the file names any variable its author chose, so these are not settings
        // of the agent's own and are looked up here rather than in `Config`.
        let servers = match &config.mcp_config {
            Some(path) => mcp::config_file::load(path, |name| std::env::var(name).ok())
                .map_err(|error| StartupError::Config(error.to_string()))?,
            None => vec![],
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|error| StartupError::Config(format!("HTTP client: {error}")))?;
        let sidecar_origin = config.mcp_server_url.origin();
        let hub = Arc::new(
            McpHub::new(
                config.mcp_server_url.clone(),
                servers,
                config.mcp_call_timeout,
            )
            .map_err(|error| StartupError::Config(error.to_string()))?,
        );
        let model = ChatModel::new(llm_config(&config)?, config.llm_timeout)
            .map_err(|error| StartupError::Config(error.to_string()))?;
        let tool_images = match config.llm_tool_images {
            config::ToolImages::Auto => model.is_vertex(),
            config::ToolImages::On => true,
            config::ToolImages::Off => false,
        };
        let model = model.with_tool_images(tool_images);
        tracing::info!(model = %model.describe(), "language model");

        let state = Arc::new(AppState {
            hub: hub.clone(),
            http,
            sidecar_origin,
            model,
            llm_max_turns: config.llm_max_turns,
            render_poll_interval: config.render_poll_interval,
            sse_heartbeat: config.sse_heartbeat,
            sse_max_duration: config.sse_max_duration,
            shutdown: shutdown.clone(),
            mcp_endpoint: api::mcp_endpoint::McpEndpoint::new(
                hub.clone(),
                config.mcp_allowed_hosts.clone(),
                config.max_body_bytes,
            ),
        });
        let addr = config.listen_addr();
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartupError::Bind { addr, source })?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr, source })?;
        Ok(Self {
            listener,
            local_addr,
            router: api::router(state, config.max_body_bytes),
            hub,
            shutdown,
            shutdown_grace: config.shutdown_grace,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Connects the MCP servers and serves until the shutdown token is cancelled, then lets
    /// in-flight requests finish for up to the configured grace and disconnects.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // The MCP connections outlive SIGTERM until the HTTP server has drained: requests in
        // flight then still reach their tools. They close after the last response.
        let upstreams = CancellationToken::new();
        let mut supervisors = self.hub.supervise(&upstreams);
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let shutdown = self.shutdown.clone();
        let server = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tracing::info!(addr = %self.local_addr, "listening");
        let grace = self.shutdown_grace;
        let everything = async move {
            let served = server.into_future().await;
            upstreams.cancel();
            while supervisors.join_next().await.is_some() {}
            served
        };
        service_core::shutdown::within_grace(&shutdown, grace, "in-flight requests", everything)
            .await
    }
}
