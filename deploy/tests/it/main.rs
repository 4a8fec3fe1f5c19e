//! The deploy checks' integration tests, one binary (one link of the crate instead of two).
//!
//! Run one area with `cargo test -p deploy-checks --test it <module>::`.

mod deploy_files;
mod release_binaries;
