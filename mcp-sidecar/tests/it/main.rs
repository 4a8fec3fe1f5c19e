//! The sidecar's integration tests, one binary: every extra `tests/*.rs` would link the whole
//! crate (and its dependencies) again, which costs minutes of CI on two cores. Each module is
//! one area; `common` starts the real sidecar (in-process or as its own process) and Redis.
//! Tests that measure time bounds or memory hold `common::one_heavy_test_at_a_time()`, so
//! two of them never share the machine's two cores.
//!
//! Run one area with `cargo test -p mcp-sidecar --test it <module>::`, e.g. `peers::`.

mod common;

mod binary;
mod charts;
mod conformance_next;
mod conformance_tasks;
mod crash_safety;
mod fast_path;
mod faults;
mod fuzz_regressions;
mod gcs_artifacts;
mod hostile_input;
mod http_edge;
mod job_store;
mod load;
mod mcp_protocol;
mod peers;
mod redis_cluster;
mod redis_iam;
mod redis_tls;
mod render_jobs;
mod tasks;
