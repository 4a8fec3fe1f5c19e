//! Reading a request body under a limit without costing the client its connection.
//!
//! A server that answers "413 Payload Too Large" and closes the connection while the client is
//! still sending makes the kernel reset the socket, and a reset can destroy the answer before
//! the client reads it. On a kept-alive connection that is worse than a lost answer: HTTP
//! client libraries (httpx under the MCP Python SDK, for one) treat the reset as a broken
//! transport and tear down the whole session. So an oversized body is *read to its end and
//! discarded* (the drain), the answer goes out on a connection that is still in step, and the
//! client can send its next request on it.
//!
//! The drain is bounded twice, because discarding still costs the server a connection and
//! some time:
//! - in bytes, by [`BodyLimits::drain_bytes`] (64 MiB by default: twice Cloud Run's 32 MiB
//!   request limit, so any body Cloud Run lets through gets its answer). Memory does not grow
//!   with it: the drain keeps no byte it reads; the peak is the `max_bytes` already buffered
//!   plus one read chunk. Time: 64 MiB on loopback takes tens of milliseconds.
//! - in time, by [`BodyLimits::drain_timeout`] (30 s), so a client trickling a huge body
//!   cannot hold a connection for ever.
//!
//! Past either bound (or when `Content-Length` already announces more than the drain bound)
//! the answer says so and carries `Connection: close`: the connection cannot be kept in step
//! without reading what is left, and reading it is what the bounds refuse.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use http_body_util::BodyExt;

/// Default bound on the bytes read and discarded from an oversized body.
pub const DEFAULT_DRAIN_BYTES: u64 = 64 * 1024 * 1024;
/// Default bound on the time spent discarding an oversized body.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How much of a request body is accepted, and how much of an oversized one is drained.
#[derive(Clone, Copy, Debug)]
pub struct BodyLimits {
    /// Largest body accepted, in bytes.
    pub max_bytes: usize,
    /// Largest body drained (read and discarded) so the connection stays usable; never below
    /// `max_bytes`.
    pub drain_bytes: u64,
    /// Longest time spent draining.
    pub drain_timeout: Duration,
}

impl BodyLimits {
    /// `max_bytes` accepted; the default drain bounds (raised to `max_bytes` if that is larger).
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            drain_bytes: DEFAULT_DRAIN_BYTES.max(max_bytes as u64),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
        }
    }
}

/// Why a body was not returned.
#[derive(Debug)]
pub enum BodyError {
    /// The body is larger than `limit`.
    TooLarge(Oversized),
    /// The body could not be read (the client went away, a broken chunked encoding, a body
    /// shorter than its `Content-Length`…).
    Unreadable(String),
}

/// What is known of an oversized body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Oversized {
    /// The limit it exceeded.
    pub limit: usize,
    /// Its size in bytes, when known: read to its end, or announced by `Content-Length`.
    pub size: Option<u64>,
    /// True when the whole body was read, so the connection can carry the next request.
    /// False when a drain bound was reached: the answer must close the connection.
    pub drained: bool,
}

impl Oversized {
    /// "of 17000000 bytes " when the size is known, else "".
    pub fn size_phrase(&self) -> String {
        self.size
            .map_or_else(String::new, |size| format!("of {size} bytes "))
    }
}

/// Reads `body` whole if it is at most `limits.max_bytes` long. An oversized body is drained
/// (see the module doc), and every one of its bytes, from the first, is shown to `inspect` on
/// the way, so the caller can learn what the request was (a JSON-RPC id, say) without keeping
/// it. `inspect` is never called for a body within the limit.
pub async fn read_bounded<B>(
    headers: &HeaderMap,
    body: B,
    limits: BodyLimits,
    mut inspect: impl FnMut(&[u8]),
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let announced = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    let limit = limits.max_bytes;
    // The answer whenever a drain bound stops the reading.
    let given_up = BodyError::TooLarge(Oversized {
        limit,
        size: announced,
        drained: false,
    });
    if announced.is_some_and(|size| size > limits.drain_bytes) {
        return Err(given_up);
    }
    let mut body = std::pin::pin!(body);
    let mut buffered = BytesMut::new();
    // With an announced size over the limit, nothing is worth keeping: drain from the start.
    let mut seen: Option<u64> = match announced {
        Some(size) if size > limit as u64 => Some(0),
        _ => None,
    };
    let drain_deadline = tokio::time::Instant::now() + limits.drain_timeout;
    loop {
        let frame = if seen.is_some() {
            match tokio::time::timeout_at(drain_deadline, body.frame()).await {
                Ok(frame) => frame,
                Err(_elapsed) => return Err(given_up),
            }
        } else {
            body.frame().await
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|error| BodyError::Unreadable(error.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue; // trailers
        };
        match &mut seen {
            None if buffered.len() + chunk.len() <= limit => buffered.extend_from_slice(&chunk),
            None => {
                inspect(&buffered);
                inspect(&chunk);
                seen = Some((buffered.len() + chunk.len()) as u64);
                buffered = BytesMut::new();
            }
            Some(count) => {
                inspect(&chunk);
                *count += chunk.len() as u64;
                if *count > limits.drain_bytes {
                    return Err(given_up);
                }
            }
        }
    }
    match seen {
        None => Ok(buffered.freeze()),
        Some(size) => Err(BodyError::TooLarge(Oversized {
            limit,
            size: Some(size),
            drained: true,
        })),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use futures::StreamExt;
    use http_body::Frame;
    use http_body_util::{Full, StreamBody};

    use super::*;

    type Chunk = Result<Frame<Bytes>, std::io::Error>;

    fn chunk(bytes: &'static [u8]) -> Chunk {
        Ok(Frame::data(Bytes::from_static(bytes)))
    }

    fn chunks(parts: Vec<Chunk>) -> impl Body<Data = Bytes, Error = std::io::Error> {
        StreamBody::new(futures::stream::iter(parts))
    }

    fn limits(max: usize, drain: u64) -> BodyLimits {
        BodyLimits {
            max_bytes: max,
            drain_bytes: drain,
            drain_timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_returned_whole_and_not_inspected() {
        let mut inspected = 0;
        let body = read_bounded(
            &HeaderMap::new(),
            chunks(vec![chunk(b"hello "), chunk(b"world")]),
            limits(11, 100),
            |bytes| inspected += bytes.len(),
        )
        .await
        .unwrap();
        assert_eq!(&body[..], b"hello world");
        assert_eq!(inspected, 0);
    }

    #[tokio::test]
    async fn an_oversized_body_is_drained_and_every_byte_inspected_in_order() {
        let mut inspected = vec![];
        let error = read_bounded(
            &HeaderMap::new(),
            chunks(vec![chunk(b"abc"), chunk(b"def"), chunk(b"ghij")]),
            limits(4, 100),
            |bytes| inspected.extend_from_slice(bytes),
        )
        .await
        .unwrap_err();
        let BodyError::TooLarge(oversized) = error else {
            panic!("{error:?}")
        };
        let expected = Oversized {
            limit: 4,
            size: Some(10),
            drained: true,
        };
        assert_eq!(oversized, expected);
        assert_eq!(inspected, b"abcdefghij");
        assert_eq!(oversized.size_phrase(), "of 10 bytes ");
    }

    #[tokio::test]
    async fn past_the_drain_bound_the_body_is_left_unread() {
        let parts = vec![chunk(b"abc"), chunk(b"def"), chunk(b"ghi"), chunk(b"jkl")];
        let error = read_bounded(&HeaderMap::new(), chunks(parts), limits(4, 8), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                BodyError::TooLarge(Oversized {
                    drained: false,
                    size: None,
                    ..
                })
            ),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn an_announced_size_over_the_drain_bound_is_refused_without_reading() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CONTENT_LENGTH, "1000".parse().unwrap());
        let mut inspected = 0;
        let error = read_bounded(&headers, Full::new(Bytes::new()), limits(4, 100), |bytes| {
            inspected += bytes.len()
        })
        .await
        .unwrap_err();
        let BodyError::TooLarge(oversized) = error else {
            panic!("{error:?}")
        };
        assert_eq!((oversized.size, oversized.drained), (Some(1000), false));
        assert_eq!(inspected, 0);
    }

    #[tokio::test]
    async fn a_body_that_stalls_while_draining_is_given_up_after_the_timeout() {
        let stalls =
            futures::stream::iter(vec![chunk(b"abcdef")]).chain(futures::stream::pending());
        let mut limits = limits(4, 100);
        limits.drain_timeout = Duration::from_millis(50);
        let error = read_bounded(&HeaderMap::new(), StreamBody::new(stalls), limits, |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(error, BodyError::TooLarge(Oversized { drained: false, .. })),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_read_error_is_reported_as_unreadable() {
        let parts = vec![chunk(b"ab"), Err(std::io::Error::other("connection reset"))];
        let error = read_bounded(&HeaderMap::new(), chunks(parts), limits(4, 100), |_| {})
            .await
            .unwrap_err();
        assert!(
            matches!(error, BodyError::Unreadable(ref message) if message.contains("reset")),
            "{error:?}"
        );
    }
}
