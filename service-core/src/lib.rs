//! The small set of process-level pieces both binaries need: structured logging set-up, the
//! shutdown signal, and config value types (secrets, durations). Everything domain-specific lives in the binaries' own crates.

pub mod config;
pub mod shutdown;
pub mod telemetry;
