//! Durable render jobs: the job model, the Redis store and queue, and the worker that runs them.

pub mod connection;
pub mod events;
pub mod model;
pub mod pool;
pub mod store;
pub mod worker;
