//! The agent's MCP side: the sidecar plus the servers from `MCP_CONFIG`, their tools listed
//! together, and calls routed to the server that owns each tool.
//!
//! A tool keeps its own name unless two servers offer the same name; then each of those is
//! exposed as `{server}__{tool}` (a shape every model API accepts as a function name).
//!
//! A tool can be called as a task (`call_as_task`): the request declares the tasks extension
//! when the server runs tasks, and a task it answers with is remembered with its server
//! ([`tasks::TaskOrigins`]) for `get_task`, `update_task` / `cancel_task`.
//!
//! Each server has a supervisor task: it connects at start with backoff (100 ms doubling to
//! 5 s) and then checks the connection every few seconds with a cheap `tools/list`, so a
//! restarted server is noticed and re-initialized without waiting for a user's call.

pub mod config_file;
pub mod id_token;
pub mod server_url;
pub mod tasks;
pub mod transport;
pub mod upstream;

use std::{collections::HashMap, sync::Arc, time::Duration};

use rmcp::model::{CallToolResult, DetailedTask, InputResponses, Tool};
use tokio_util::sync::CancellationToken;

use self::{
    config_file::{Auth, ServerEntry},
    id_token::IdTokenSource,
    server_url::ServerUrl,
    tasks::{TaskOrigins, is_plausible_task_id},
    upstream::{ToolAnswer, Upstream, UpstreamError},
};

/// The name the sidecar has among the servers.
pub const SIDECAR: &str = "sidecar";
/// Separator between server and tool in a namespaced tool name.
pub const NAMESPACE_SEPARATOR: &str = "__";
/// How often a connected server is checked.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// A tool as the agent exposes it.
#[derive(Debug, Clone)]
pub struct ExposedTool {
    /// The name clients and the model use.
    pub name: String,
    /// The server that runs it.
    pub server: String,
    /// The server's own definition (its `name` is the server's name for it).
    pub tool: Tool,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("no tool named `{0}`; GET /v1/tools lists them")]
    UnknownTool(String),
    #[error(
        "no task `{0}`: no MCP server the agent is connected to knows it (unknown, or expired)"
    )]
    UnknownTask(String),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

#[derive(Debug)]
pub struct McpHub {
    /// The sidecar first, then the configured servers in name order.
    upstreams: Vec<Arc<Upstream>>,
    /// The server of each task started through [`McpHub::call_as_task`].
    task_origins: TaskOrigins,
}

/// A task and the server that runs it.
#[derive(Debug)]
pub struct FoundTask {
    pub server: String,
    pub task: DetailedTask,
}

/// What [`McpHub::call_as_task`] got: the tool's result or a task, and the server that answered.
#[derive(Debug)]
pub struct Answered {
    pub server: String,
    pub answer: ToolAnswer,
}

/// At most this many characters of a caller's id go into an error message.
const ID_IN_MESSAGE: usize = 64;

fn unknown_task(task_id: &str) -> HubError {
    HubError::UnknownTask(task_id.chars().take(ID_IN_MESSAGE).collect())
}

/// Why the hub cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum HubSetupError {
    #[error("MCP_CONFIG: the name `{SIDECAR}` is taken by the sidecar")]
    SidecarNameTaken,
    #[error("MCP_CONFIG: server `{server}`: {source}")]
    IdTokens {
        server: String,
        source: id_token::IdTokenError,
    },
    #[error("HTTP client for the MCP server `{server}`: {source}")]
    HttpClient {
        server: String,
        source: reqwest::Error,
    },
}

impl McpHub {
    /// Sets up every server (no I/O: they connect when supervised or first used). Must run
    /// inside a Tokio runtime when a server uses Google ID tokens.
    pub fn new(
        sidecar_url: ServerUrl,
        servers: Vec<ServerEntry>,
        call_timeout: Duration,
    ) -> Result<Self, HubSetupError> {
        let upstream = |name: String, url, headers, id_tokens| {
            Upstream::new(name.clone(), url, headers, id_tokens, call_timeout)
                .map(Arc::new)
                .map_err(|source| HubSetupError::HttpClient {
                    server: name,
                    source,
                })
        };
        let mut upstreams = vec![upstream(
            SIDECAR.to_owned(),
            sidecar_url,
            Default::default(),
            None,
        )?];
        for server in servers {
            if server.name == SIDECAR {
                return Err(HubSetupError::SidecarNameTaken);
            }
            let id_tokens = match server.auth {
                Auth::None => None,
                Auth::GoogleIdToken { audience } => {
                    Some(IdTokenSource::new(audience).map_err(|source| {
                        HubSetupError::IdTokens {
                            server: server.name.clone(),
                            source,
                        }
                    })?)
                }
            };
            upstreams.push(upstream(
                server.name,
                server.url,
                server.headers,
                id_tokens,
            )?);
        }
        Ok(Self {
            upstreams,
            task_origins: TaskOrigins::default(),
        })
    }

    pub fn sidecar(&self) -> &Arc<Upstream> {
        &self.upstreams[0]
    }

    pub fn upstreams(&self) -> &[Arc<Upstream>] {
        &self.upstreams
    }

    /// Starts one supervisor per server; they stop when `shutdown` is cancelled.
    pub fn supervise(&self, shutdown: &CancellationToken) -> tokio::task::JoinSet<()> {
        let mut tasks = tokio::task::JoinSet::new();
        for upstream in &self.upstreams {
            tasks.spawn(supervise(upstream.clone(), shutdown.child_token()));
        }
        tasks
    }

    /// Every connected server's tools, namespaced where names clash.
    pub async fn tools(&self) -> Vec<ExposedTool> {
        let mut listed = Vec::new();
        for upstream in &self.upstreams {
            for tool in upstream.tools().await {
                listed.push((upstream.name.clone(), tool));
            }
        }
        let mut counts: HashMap<String, usize> = HashMap::new();
        for (_, tool) in &listed {
            *counts.entry(tool.name.to_string()).or_default() += 1;
        }
        listed
            .into_iter()
            .map(|(server, tool)| {
                let name = if counts[tool.name.as_ref()] > 1 {
                    format!("{server}{NAMESPACE_SEPARATOR}{}", tool.name)
                } else {
                    tool.name.to_string()
                };
                ExposedTool { name, server, tool }
            })
            .collect()
    }

    /// Finds an exposed tool by its exposed name.
    pub async fn find(&self, name: &str) -> Option<ExposedTool> {
        self.tools()
            .await
            .into_iter()
            .find(|tool| tool.name == name)
    }

    /// The server that runs the tool exposed as `name`, and the server's name for the tool.
    async fn owner(&self, name: &str) -> Result<(Arc<Upstream>, String), HubError> {
        let exposed = match self.find(name).await {
            Some(tool) => tool,
            None if !self.sidecar().is_connected().await => {
                // The sidecar's tools are unknown while it is away: say so rather than 404.
                return Err(self.sidecar_unavailable().await.into());
            }
            None => return Err(HubError::UnknownTool(name.to_owned())),
        };
        let upstream = self
            .upstreams
            .iter()
            .find(|upstream| upstream.name == exposed.server)
            .ok_or_else(|| HubError::UnknownTool(name.to_owned()))?;
        Ok((upstream.clone(), exposed.tool.name.to_string()))
    }

    /// Calls the tool exposed as `name`.
    pub async fn call(
        &self,
        name: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, HubError> {
        let (upstream, tool) = self.owner(name).await?;
        Ok(upstream.call(&tool, arguments).await?)
    }

    /// Calls the tool exposed as `name` so that its server may answer with a task (when it runs
    /// tasks); a task is remembered with its server for [`Self::get_task`].
    pub async fn call_as_task(
        &self,
        name: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Answered, HubError> {
        let (upstream, tool) = self.owner(name).await?;
        let answer = upstream.call_as_task(&tool, arguments).await?;
        if let ToolAnswer::Task(task) = &answer {
            self.task_origins.remember(&task.task_id, &upstream.name);
        }
        Ok(Answered {
            server: upstream.name.clone(),
            answer,
        })
    }

    /// `tasks/get` on the server that runs `task_id` (see [`Self::find_task`]).
    pub async fn get_task(&self, task_id: &str) -> Result<FoundTask, HubError> {
        let (upstream, task) = self.find_task(task_id).await?;
        Ok(FoundTask {
            server: upstream.name.clone(),
            task,
        })
    }

    /// `tasks/get` on `server`, for a stream that already found the task there.
    pub async fn get_task_on(&self, server: &str, task_id: &str) -> Result<DetailedTask, HubError> {
        let upstream = self
            .upstreams
            .iter()
            .find(|upstream| upstream.name == server)
            .ok_or_else(|| unknown_task(task_id))?;
        upstream
            .get_task(task_id)
            .await
            .map_err(|error| task_error(task_id, error))
    }

    /// `tasks/cancel` on the server that runs `task_id`; returns that server's name.
    pub async fn cancel_task(&self, task_id: &str) -> Result<String, HubError> {
        let upstream = match self.remembered_server(task_id) {
            Some(upstream) => upstream,
            None => self.find_task(task_id).await?.0,
        };
        upstream.cancel_task(task_id).await.map_err(|error| {
            if error.is_invalid_params() {
                self.task_origins.forget(task_id);
            }
            task_error(task_id, error)
        })?;
        Ok(upstream.name.clone())
    }

    /// `tasks/update` on the server that runs `task_id`: the answers to its input requests.
    /// The server's refusal is passed on as it is ("invalid params" here may be about the
    /// answers, not the id).
    pub async fn update_task(
        &self,
        task_id: &str,
        input_responses: InputResponses,
    ) -> Result<(), HubError> {
        let upstream = match self.remembered_server(task_id) {
            Some(upstream) => upstream,
            None => self.find_task(task_id).await?.0,
        };
        Ok(upstream.update_task(task_id, input_responses).await?)
    }

    fn remembered_server(&self, task_id: &str) -> Option<Arc<Upstream>> {
        let server = self.task_origins.server_of(task_id)?;
        self.upstreams
            .iter()
            .find(|upstream| upstream.name == server)
            .cloned()
    }

    /// The server that runs `task_id`, and the task now.
    ///
    /// The remembered server when there is one; otherwise each server that runs tasks is asked,
    /// the sidecar first (its tasks live in Redis, so a task started through another agent
    /// instance is found too), then the other connected ones. A server that does not know the
    /// id answers "invalid params", as the extension asks.
    async fn find_task(&self, task_id: &str) -> Result<(Arc<Upstream>, DetailedTask), HubError> {
        if !is_plausible_task_id(task_id) {
            return Err(unknown_task(task_id));
        }
        if let Some(upstream) = self.remembered_server(task_id) {
            return match upstream.get_task(task_id).await {
                Ok(task) => Ok((upstream, task)),
                Err(error) => {
                    if error.is_invalid_params() {
                        self.task_origins.forget(task_id);
                    }
                    Err(task_error(task_id, error))
                }
            };
        }
        let mut failure = None;
        for (index, upstream) in self.upstreams.iter().enumerate() {
            // Servers other than the sidecar are asked only while connected: a lookup should
            // not wait on connecting to a server that is away.
            if index > 0 && !upstream.is_connected().await {
                continue;
            }
            match upstream.supports_tasks().await {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    failure.get_or_insert(error);
                    continue;
                }
            }
            match upstream.get_task(task_id).await {
                Ok(task) => {
                    self.task_origins.remember(task_id, &upstream.name);
                    return Ok((upstream.clone(), task));
                }
                Err(error) if error.is_invalid_params() => {}
                Err(error) => {
                    failure.get_or_insert(error);
                }
            }
        }
        // Unknown to every server that answered; if one could not be asked, it may be there.
        Err(failure.map_or_else(|| unknown_task(task_id), HubError::from))
    }

    /// Calls one of the sidecar's own tools by its own name.
    pub async fn call_sidecar(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<CallToolResult, UpstreamError> {
        self.sidecar().call(tool, arguments).await
    }

    async fn sidecar_unavailable(&self) -> UpstreamError {
        UpstreamError::Unavailable {
            server: SIDECAR.to_owned(),
            reason: self
                .sidecar()
                .last_error()
                .await
                .unwrap_or_else(|| "not connected yet".to_owned()),
        }
    }
}

/// A `tasks/*` failure: "invalid params" is how a server says it does not know the task.
fn task_error(task_id: &str, error: UpstreamError) -> HubError {
    if error.is_invalid_params() {
        unknown_task(task_id)
    } else {
        error.into()
    }
}

/// Keeps one server connected: connect with backoff, then probe every [`PROBE_INTERVAL`].
async fn supervise(upstream: Arc<Upstream>, shutdown: CancellationToken) {
    let mut wait = Duration::ZERO;
    let mut backoff = Duration::from_millis(100);
    let mut was_up = None;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(wait) => {}
        }
        match upstream.probe().await {
            Ok(()) => {
                if was_up != Some(true) {
                    tracing::info!(server = %upstream.name, url = %upstream.url(), "MCP server is up");
                }
                was_up = Some(true);
                backoff = Duration::from_millis(100);
                wait = PROBE_INTERVAL;
            }
            Err(error) => {
                if was_up != Some(false) {
                    tracing::warn!(server = %upstream.name, %error, "MCP server is down; retrying");
                }
                was_up = Some(false);
                wait = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
    upstream.disconnect().await;
}
