//! `MCP_CONFIG`: more MCP servers, in the `{"mcpServers": {...}}` shape MCP clients share.
//!
//! ```json
//! {"mcpServers": {
//!   "search": {"url": "https://search-abc-uc.a.run.app/mcp", "auth": "google-id-token"},
//!   "tickets": {"url": "https://tickets.example.com/mcp",
//!               "headers": {"Authorization": "Bearer ${TICKETS_TOKEN}"}}
//! }}
//! ```
//!
//! `${VAR}` in a url or a header value is replaced by the environment variable's value; an
//! unset variable is an error naming it (rather than a silently empty credential). Every url
//! must then be an http(s) URL with a host, checked as `MCP_SERVER_URL` is.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::server_url::ServerUrl;

/// How a remote server is authenticated, beyond static headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    None,
    /// A Google ID token for `audience` (from Application Default Credentials: a service
    /// account key file, or the metadata server), as Cloud Run services that require IAM
    /// (`roles/run.invoker`) expect.
    GoogleIdToken {
        audience: String,
    },
}

/// One server from the file, with variables substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerEntry {
    pub name: String,
    pub url: ServerUrl,
    pub headers: BTreeMap<String, String>,
    pub auth: Auth,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read MCP_CONFIG {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("MCP_CONFIG is not valid: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    mcp_servers: BTreeMap<String, RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    audience: Option<String>,
    /// Accepted so files written for other clients load; only Streamable HTTP is spoken.
    #[serde(default, rename = "type")]
    transport: Option<String>,
}

/// Reads and checks the file at `path`.
pub fn load(
    path: &std::path::Path,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ServerEntry>, ConfigFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse(&text, lookup)
}

/// Parses the file's text, substituting `${VAR}` with `lookup`.
pub fn parse(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Vec<ServerEntry>, ConfigFileError> {
    let file: File =
        serde_json::from_str(text).map_err(|error| ConfigFileError::Invalid(error.to_string()))?;
    file.mcp_servers
        .into_iter()
        .map(|(name, raw)| entry(name, raw, &lookup))
        .collect()
}

fn entry(
    name: String,
    raw: RawEntry,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<ServerEntry, ConfigFileError> {
    let valid_name = !name.is_empty()
        && name.len() <= 32
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !valid_name {
        return Err(ConfigFileError::Invalid(format!(
            "server name `{name}`: use 1 to 32 letters, digits, `_` or `-`"
        )));
    }
    if let Some(transport) = &raw.transport
        && !matches!(
            transport.as_str(),
            "http" | "streamable-http" | "streamableHttp"
        )
    {
        return Err(ConfigFileError::Invalid(format!(
            "server `{name}`: transport `{transport}` is not supported; only Streamable HTTP"
        )));
    }
    let url = substitute(&raw.url, lookup)
        .map_err(|error| ConfigFileError::Invalid(format!("server `{name}` url: {error}")))?;
    let url: ServerUrl = url
        .parse()
        .map_err(|error| ConfigFileError::Invalid(format!("server `{name}` url: {error}")))?;
    let headers = raw
        .headers
        .into_iter()
        .map(|(header, value)| {
            substitute(&value, lookup)
                .map(|value| (header.clone(), value))
                .map_err(|error| {
                    ConfigFileError::Invalid(format!("server `{name}` header {header}: {error}"))
                })
        })
        .collect::<Result<_, _>>()?;
    let auth = match raw.auth.as_deref() {
        None | Some("none") => Auth::None,
        Some("google-id-token") => Auth::GoogleIdToken {
            audience: match raw.audience {
                Some(audience) => substitute(&audience, lookup).map_err(|error| {
                    ConfigFileError::Invalid(format!("server `{name}` audience: {error}"))
                })?,
                None => url.origin(),
            },
        },
        Some(other) => {
            return Err(ConfigFileError::Invalid(format!(
                "server `{name}`: auth `{other}` is not known; use \"google-id-token\" or leave it out"
            )));
        }
    };
    Ok(ServerEntry {
        name,
        url,
        headers,
        auth,
    })
}

/// Replaces every `${NAME}` with the variable's value.
fn substitute(text: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{text}`"))?;
        let name = &after[..end];
        let value =
            lookup(name).ok_or_else(|| format!("environment variable {name} is not set"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "HOST" => Some("tickets.example.com".into()),
            _ => None,
        }
    }

    #[test]
    fn servers_load_with_variables_substituted() {
        let servers = parse(
            r#"{"mcpServers": {
                "tickets": {"url": "https://${HOST}/mcp", "headers": {"Authorization": "Bearer ${TOKEN}"}},
                "search": {"url": "https://search-abc-uc.a.run.app/mcp", "auth": "google-id-token"}
            }}"#,
            env,
        )
        .unwrap();
        assert_eq!(servers.len(), 2);
        let search = &servers[0];
        assert_eq!(
            search.auth,
            Auth::GoogleIdToken {
                audience: "https://search-abc-uc.a.run.app".into()
            }
        );
        let tickets = &servers[1];
        assert_eq!(tickets.url.as_str(), "https://tickets.example.com/mcp");
        assert_eq!(tickets.headers["Authorization"], "Bearer s3cret");
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                r#"{"mcpServers": {"a": {"url": "https://x/${MISSING}"}}}"#,
                "MISSING is not set",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "ftp://x"}}}"#,
                "server `a` url: `ftp://x` is not an http(s) URL",
            ),
            (
                r#"{"mcpServers": {"tickets": {"url": "htps:/tickets.example.com/mcp"}}}"#,
                "server `tickets` url: `htps:/tickets.example.com/mcp` is not an http(s) URL",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "${HOST}/mcp"}}}"#,
                "server `a` url: `tickets.example.com/mcp` is not an http(s) URL",
            ),
            (
                r#"{"mcpServers": {"a b": {"url": "https://x"}}}"#,
                "server name",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x", "auth": "magic"}}}"#,
                "auth `magic`",
            ),
            (
                r#"{"mcpServers": {"a": {"command": "npx"}}}"#,
                "unknown field `command`",
            ),
            (
                r#"{"mcpServers": {"a": {"url": "https://x", "type": "stdio"}}}"#,
                "only Streamable HTTP",
            ),
            (r#"{"servers": {}}"#, "mcpServers"),
        ];
        for (text, expected) in cases {
            let error = parse(text, env).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
