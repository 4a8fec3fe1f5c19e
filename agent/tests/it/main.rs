//! The agent's integration tests, one binary: every extra `tests/*.rs` would link the whole
//! crate (and its dependencies) again, which costs minutes of CI on two cores. Each module is
//! one area; `common` starts the real agent, sidecar and Redis for them.
//!
//! Run one area with `cargo test -p agent --test it <module>::`, e.g. `rest_api::`.

mod common;

mod chat;
pub(crate) mod chat_stream;
mod hostile_input;
mod mcp_endpoint;
mod remote_servers;
mod rest_api;
mod shutdown;
mod tasks;
mod traces;
mod web_page;
