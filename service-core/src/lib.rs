//! The small set of process-level pieces both binaries need: structured logging set-up and
//! the shutdown signal. Everything domain-specific lives in the binaries' own crates.

pub mod shutdown;
pub mod telemetry;
