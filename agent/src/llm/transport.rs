//! One bounded JSON-over-HTTP exchange with a model endpoint.
//!
//! Both providers POST a JSON body and expect a JSON reply. This module owns
//! the parts that must behave identically for both: the timeout, how HTTP and
//! transport failures become [`LlmError::Upstream`], and how unreadable replies
//! become [`LlmError::Malformed`].

use std::future::Future;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{LlmError, error_chain};

/// How much of an error or unreadable body is quoted in messages.
const BODY_EXCERPT_CHARS: usize = 300;

/// An HTTP client plus the per-exchange time limit.
#[derive(Clone, Debug)]
pub(super) struct HttpTransport {
    client: reqwest::Client,
    timeout: Duration,
}

impl HttpTransport {
    /// Builds the client. Does no network I/O.
    pub(super) fn new(timeout: Duration) -> Result<Self, LlmError> {
        let client = reqwest::Client::builder().build().map_err(|error| {
            LlmError::InvalidConfig(format!("cannot build HTTP client: {}", error_chain(&error)))
        })?;
        Ok(Self { client, timeout })
    }

    /// Runs `operation` under the time limit, mapping expiry to [`LlmError::Timeout`].
    pub(super) async fn within<T>(
        &self,
        operation: impl Future<Output = T>,
    ) -> Result<T, LlmError> {
        tokio::time::timeout(self.timeout, operation)
            .await
            .map_err(|_elapsed| LlmError::Timeout(self.timeout))
    }

    /// POSTs `body` as JSON to `url` and decodes the reply as `Reply`.
    ///
    /// The whole exchange (connect, send, read the body) is bounded by the
    /// timeout. `provider` prefixes every error message. A non-2xx status is
    /// [`LlmError::Upstream`] with the status and the start of the body; a 2xx
    /// reply that is not JSON, or not shaped like `Reply`, is
    /// [`LlmError::Malformed`].
    pub(super) async fn post_json<Reply: DeserializeOwned>(
        &self,
        provider: &str,
        url: &str,
        headers: HeaderMap,
        body: &impl Serialize,
    ) -> Result<Reply, LlmError> {
        tracing::debug!(provider, url, "calling model endpoint");
        let exchange = async {
            let response = self
                .client
                .post(url)
                .headers(headers)
                .json(body)
                .send()
                .await?;
            let status = response.status();
            let text = response.text().await?;
            Ok::<_, reqwest::Error>((status, text))
        };
        let (status, text) = self.within(exchange).await?.map_err(|error| {
            if error.is_timeout() {
                LlmError::Timeout(self.timeout)
            } else {
                LlmError::Upstream(format!(
                    "{provider}: request failed: {}",
                    error_chain(&error)
                ))
            }
        })?;

        if !status.is_success() {
            return Err(LlmError::Upstream(format!(
                "{provider}: HTTP {status}: {}",
                excerpt(&text)
            )));
        }
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|error| {
            LlmError::Malformed(format!(
                "{provider}: reply is not valid JSON ({error}): {}",
                excerpt(&text)
            ))
        })?;
        serde_json::from_value(json).map_err(|error| {
            LlmError::Malformed(format!(
                "{provider}: reply does not have the expected shape ({error}): {}",
                excerpt(&text)
            ))
        })
    }
}

/// Most bytes of event data one streamed reply may carry (a long answer is a few tens of
/// kilobytes): a stream that goes on past it is cut off with an error, so a faulty or hostile
/// endpoint cannot grow the agent's memory without bound.
pub(super) const MAX_STREAM_BYTES: usize = 8 * 1024 * 1024;

/// How a streamed reply ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StreamEnd {
    /// The handler said the reply was complete (e.g. OpenAI's `data: [DONE]`).
    Finished,
    /// The server closed the stream; whether that is complete is the provider's call.
    Closed,
}

impl HttpTransport {
    /// POSTs `body` as JSON to `url` and reads the reply as server-sent events, handing each
    /// event's data to `on_data`, which returns `true` once the reply is complete.
    ///
    /// Bounds: the status line within the timeout, then each event within the timeout of the
    /// one before (a model that goes quiet mid-answer is a [`LlmError::Timeout`], not a hang),
    /// and [`MAX_STREAM_BYTES`] in all. A non-2xx status is [`LlmError::Upstream`] with the
    /// start of the body; a connection that breaks mid-stream is [`LlmError::Upstream`] saying
    /// so.
    pub(super) async fn post_sse(
        &self,
        provider: &str,
        url: &str,
        headers: HeaderMap,
        body: &impl Serialize,
        mut on_data: impl FnMut(&str) -> Result<bool, LlmError> + Send,
    ) -> Result<StreamEnd, LlmError> {
        use futures::StreamExt;
        tracing::debug!(provider, url, "calling model endpoint (streamed)");
        let failed = |error: reqwest::Error| {
            if error.is_timeout() {
                LlmError::Timeout(self.timeout)
            } else {
                LlmError::Upstream(format!(
                    "{provider}: request failed: {}",
                    error_chain(&error)
                ))
            }
        };
        let response = self
            .within(
                self.client
                    .post(url)
                    .headers(headers)
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(body)
                    .send(),
            )
            .await?
            .map_err(failed)?;
        let status = response.status();
        if !status.is_success() {
            let text = self.within(response.text()).await?.unwrap_or_default();
            return Err(LlmError::Upstream(format!(
                "{provider}: HTTP {status}: {}",
                excerpt(&text)
            )));
        }
        let mut events = sse_stream::SseStream::from_bytes_stream(response.bytes_stream());
        let mut received = 0_usize;
        loop {
            let Some(event) = self.within(events.next()).await? else {
                return Ok(StreamEnd::Closed);
            };
            let event = event.map_err(|error| {
                LlmError::Upstream(format!(
                    "{provider}: the reply stream broke off: {}",
                    error_chain(&error)
                ))
            })?;
            let Some(data) = event.data else { continue };
            received += data.len();
            if received > MAX_STREAM_BYTES {
                return Err(LlmError::Malformed(format!(
                    "{provider}: the streamed reply exceeds {MAX_STREAM_BYTES} bytes"
                )));
            }
            if on_data(&data)? {
                return Ok(StreamEnd::Finished);
            }
        }
    }
}

/// Checks a configured base URL (http or https) and returns it without
/// surrounding whitespace or trailing slashes, ready for appending paths.
/// `setting` names it in the error.
pub(super) fn checked_base_url(setting: &str, value: &str) -> Result<String, LlmError> {
    let trimmed = value.trim().trim_end_matches('/');
    match reqwest::Url::parse(trimmed) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(trimmed.to_owned()),
        Ok(_) => Err(LlmError::InvalidConfig(format!(
            "{setting} {trimmed:?} must be an http or https URL"
        ))),
        Err(error) => Err(LlmError::InvalidConfig(format!(
            "{setting} {trimmed:?} is not a URL: {error}"
        ))),
    }
}

/// The start of `text` with whitespace runs collapsed, at most
/// [`BODY_EXCERPT_CHARS`] characters, marked with `…` when cut.
pub(super) fn excerpt(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return "(empty body)".to_owned();
    }
    match collapsed.char_indices().nth(BODY_EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_collapses_whitespace_and_cuts_on_char_boundaries() {
        assert_eq!(excerpt("  a \n\t b  "), "a b");
        assert_eq!(excerpt(""), "(empty body)");
        let long = "é".repeat(BODY_EXCERPT_CHARS + 10);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), BODY_EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
