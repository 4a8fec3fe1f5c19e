//! The small set of process-level pieces both binaries need: structured logging set-up, the
//! shutdown signal, config value types (secrets, durations) and bounded request-body reading. Everything domain-specific lives in the binaries' own crates.

pub mod body;
pub mod config;
pub mod shutdown;
pub mod telemetry;
