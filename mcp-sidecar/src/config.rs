//! The sidecar's typed configuration: every setting is a flag with an environment fallback,
//! and its doc comment is its `--help` text.

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Parser, ValueEnum};
use service_core::telemetry::LogConfig;

/// Host names accepted on `/mcp` in every configuration: the sidecar's own loopback names.
pub const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// MCP server sidecar: math, echo and render-job tools over MCP Streamable HTTP at `/mcp`,
/// plus `/healthz` and `/readyz` probes.
#[derive(Debug, Clone, Parser)]
#[command(name = "mcp-sidecar", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on, as host:port. Port 0 picks a free port (the bound address is
    /// logged). Keep it on loopback in the sidecar pattern; use 0.0.0.0:PORT only when the
    /// sidecar is deployed as its own service (then also set MCP_BEARER_TOKEN).
    #[arg(long, env = "MCP_LISTEN_ADDR", default_value = "127.0.0.1:3000")]
    pub listen_addr: SocketAddr,

    /// Extra Host header values accepted on /mcp, comma-separated, as `name` (any port) or
    /// `name:port`. The loopback names localhost, 127.0.0.1 and ::1 are always accepted; any
    /// other Host is refused with 403 (DNS-rebinding protection).
    #[arg(long, env = "MCP_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// MCP session mode: `stateless` (each POST stands alone, JSON responses; survives restarts
    /// and needs no session affinity) or `stateful` (Mcp-Session-Id sessions with SSE streams).
    #[arg(long, env = "MCP_SESSION_MODE", value_enum, default_value_t = SessionMode::Stateless)]
    pub session_mode: SessionMode,

    /// Bearer token required on /mcp as `Authorization: Bearer <token>`. Unset: no auth, which
    /// is right for a sidecar reachable only inside its instance. /healthz and /readyz stay open.
    #[arg(long, env = "MCP_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<Secret>,

    /// Largest request body accepted on /mcp, in bytes; larger bodies get 413.
    #[arg(long, env = "MCP_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// How long shutdown waits for in-flight requests after SIGTERM before closing them, e.g.
    /// `8s` (Cloud Run allows 10s in all).
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "8s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    #[command(flatten)]
    pub log: LogConfig,
}

impl Config {
    /// Every Host value accepted on /mcp: the loopback names plus the configured extras.
    pub fn allowed_hosts(&self) -> Vec<String> {
        LOOPBACK_HOSTS
            .iter()
            .map(|host| (*host).to_owned())
            .chain(
                self.allowed_hosts
                    .iter()
                    .map(|host| host.trim().to_owned())
                    .filter(|host| !host.is_empty()),
            )
            .collect()
    }

    /// A configuration with every default, listening on `listen_addr`. For tests and embedders.
    pub fn with_listen_addr(listen_addr: SocketAddr) -> Self {
        // Parsing an empty command line cannot fail: every setting has a default.
        let mut config = Self::parse_from(["mcp-sidecar"]);
        config.listen_addr = listen_addr;
        config
    }
}

/// How the MCP endpoint keeps (or does not keep) per-client state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SessionMode {
    /// No sessions: every request is answered on its own, as a JSON response.
    Stateless,
    /// Sessions identified by `Mcp-Session-Id`, responses streamed as SSE.
    Stateful,
}

/// A secret string that never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        if value.is_empty() {
            return Err("the token must not be empty".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// Parses durations such as `500ms`, `8s`, `5m` or `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|error| format!("`{text}`: {error}; write e.g. 500ms, 8s, 5m or 1h"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_the_rest() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("8s"), Ok(Duration::from_secs(8)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("8").is_err());
        assert!(parse_duration("s").is_err());
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let config = Config::parse_from(["mcp-sidecar"]);
        assert_eq!(config.listen_addr, "127.0.0.1:3000".parse().unwrap());
        assert_eq!(config.session_mode, SessionMode::Stateless);
        assert!(config.bearer_token.is_none());
        assert_eq!(config.allowed_hosts(), LOOPBACK_HOSTS);
    }

    #[test]
    fn secrets_do_not_leak_through_debug() {
        let config = Config::parse_from(["mcp-sidecar", "--bearer-token", "hunter2"]);
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
