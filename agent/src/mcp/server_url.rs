//! The address of an MCP server, checked where it enters the agent (`MCP_SERVER_URL`, a url in
//! `MCP_CONFIG`) rather than where it is first used: a mistyped URL otherwise passes start-up
//! and shows up only as a supervisor reconnecting forever.

use std::{fmt, str::FromStr};

use reqwest::Url;

/// An MCP server's Streamable HTTP endpoint: an absolute `http` or `https` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerUrl(Url);

/// Why a text is not a [`ServerUrl`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{url}` is not an http(s) URL with a host ({problem}); write it like https://example.com/mcp"
)]
pub struct ServerUrlError {
    url: String,
    problem: String,
}

impl ServerUrl {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// `scheme://host[:port]`: where the server's other paths (the sidecar's `/files`) live,
    /// and the audience Cloud Run expects in a Google ID token for the service.
    pub fn origin(&self) -> String {
        self.0.origin().ascii_serialization()
    }
}

impl FromStr for ServerUrl {
    type Err = ServerUrlError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let problem = |problem: String| ServerUrlError {
            url: text.to_owned(),
            problem,
        };
        let url = Url::parse(text.trim()).map_err(|error| problem(error.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(problem(format!("its scheme is `{}`", url.scheme())));
        }
        // Only non-special schemes can lack a host, so this is a second line of defence.
        if url.host_str().is_none_or(str::is_empty) {
            return Err(problem("it has no host".to_owned()));
        }
        Ok(Self(url))
    }
}

impl fmt::Display for ServerUrl {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_urls_with_a_host_are_server_urls() {
        let sidecar: ServerUrl = "http://127.0.0.1:3000/mcp".parse().unwrap();
        assert_eq!(sidecar.as_str(), "http://127.0.0.1:3000/mcp");
        assert_eq!(sidecar.origin(), "http://127.0.0.1:3000");
        let remote: ServerUrl = "https://search-abc-uc.a.run.app/mcp".parse().unwrap();
        assert_eq!(remote.origin(), "https://search-abc-uc.a.run.app");
    }

    #[test]
    fn anything_else_is_refused_saying_why() {
        let cases = [
            ("htp:/x", "scheme is `htp`"),
            ("localhost:3000/mcp", "scheme is `localhost`"),
            ("ftp://files.example.com", "scheme is `ftp`"),
            ("/mcp", "relative URL without a base"),
            ("http://", "empty host"),
            ("", "relative URL without a base"),
        ];
        for (text, problem) in cases {
            let error = text.parse::<ServerUrl>().unwrap_err().to_string();
            assert!(error.contains(problem), "{text}: {error}");
            assert!(error.contains("http(s) URL with a host"), "{text}: {error}");
        }
    }
}
