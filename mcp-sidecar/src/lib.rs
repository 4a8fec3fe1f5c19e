//! The MCP sidecar as a library: `App::build(config)` binds and wires everything,
//! `run_until_stopped` serves until the shutdown token is cancelled. `main.rs` only parses the
//! configuration and calls these, so tests run exactly the same server on port 0.

pub mod config;
pub mod http;
pub mod jobs;
pub mod server;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::serve::ListenerExt;
use rmcp::transport::streamable_http_server::{
    StreamableHttpServerConfig, StreamableHttpService,
    session::{local::LocalSessionManager, never::NeverSessionManager},
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{Config, SessionMode},
    http::{HttpState, McpService},
    server::{CatalogError, McpServer, ToolCatalog},
};

/// Why the sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A sidecar that is bound and ready to serve.
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
    shutdown_grace: Duration,
}

impl App {
    /// Binds the listener and builds the router. Serving starts with [`App::run_until_stopped`].
    pub async fn build(config: Config, shutdown: CancellationToken) -> Result<Self, StartupError> {
        let catalog = Arc::new(ToolCatalog::new()?);
        let mcp = mcp_service(&config, catalog, shutdown.child_token());
        let state = Arc::new(HttpState {
            mcp,
            max_body_bytes: config.max_body_bytes,
            bearer_token_digest: config
                .bearer_token
                .as_ref()
                .map(|token| http::token_digest(token.expose())),
        });

        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|source| StartupError::Bind {
                addr: config.listen_addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: config.listen_addr,
            source,
        })?;
        Ok(Self {
            listener,
            local_addr,
            router: http::router(state),
            shutdown,
            shutdown_grace: config.shutdown_grace,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until the shutdown token is cancelled, then lets in-flight requests finish for
    /// up to the configured grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let listener = self.listener.tap_io(|stream| {
            // Small JSON-RPC replies must not wait for Nagle's algorithm.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
        });
        let shutdown = self.shutdown.clone();
        let server = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown.clone().cancelled_owned());
        tracing::info!(addr = %self.local_addr, "listening");
        let grace = self.shutdown_grace;
        tokio::select! {
            result = server.into_future() => result,
            () = async move {
                shutdown.cancelled().await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace = ?grace, "in-flight requests did not finish in time; closing them");
                Ok(())
            }
        }
    }
}

fn mcp_service(
    config: &Config,
    catalog: Arc<ToolCatalog>,
    shutdown: CancellationToken,
) -> McpService {
    let base = StreamableHttpServerConfig::default()
        .with_allowed_hosts(config.allowed_hosts())
        .with_cancellation_token(shutdown)
        // Our edge already enforces the limit; this only keeps rmcp from disagreeing.
        .with_max_request_body_bytes(config.max_body_bytes);
    let factory = move || Ok(McpServer::new(catalog.clone()));
    match config.session_mode {
        SessionMode::Stateless => McpService::Stateless(StreamableHttpService::new(
            factory,
            Arc::new(NeverSessionManager::default()),
            base.with_legacy_session_mode(false)
                .with_json_response(true)
                .with_sse_keep_alive(None),
        )),
        SessionMode::Stateful => McpService::Stateful(StreamableHttpService::new(
            factory,
            Arc::new(LocalSessionManager::default()),
            base.with_legacy_session_mode(true),
        )),
    }
}
