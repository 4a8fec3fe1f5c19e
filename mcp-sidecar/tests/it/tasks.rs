//! Render jobs as MCP tasks (extension `io.modelcontextprotocol/tasks`): the task view over
//! the Redis job records, across sidecar processes sharing one Redis.
