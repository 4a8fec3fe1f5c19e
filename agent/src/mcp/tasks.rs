//! Which MCP server runs each task the agent started, so `tasks/get` and `tasks/cancel` for it
//! go to that server.
//!
//! The map is a shortcut, not the truth: it is bounded ([`MAX_REMEMBERED_TASKS`], the oldest
//! forgotten first) and per process, while Cloud Run runs many agent instances. A task id it
//! does not know is looked for on the servers that run tasks (see `McpHub::find_task`); the
//! sidecar's tasks live in Redis, so any instance finds those.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
};

/// Most tasks remembered at once (about 100 bytes each).
pub const MAX_REMEMBERED_TASKS: usize = 10_000;
/// Longest task id the agent accepts, in bytes: longer ones are neither remembered nor looked
/// up (the ids servers make are far shorter; a longer one in a URL is a mistake or an attack).
pub const MAX_TASK_ID_BYTES: usize = 256;

/// Task id → the name of the server that made it.
#[derive(Debug, Default)]
pub struct TaskOrigins {
    inner: Mutex<Origins>,
}

#[derive(Debug, Default)]
struct Origins {
    servers: HashMap<String, String>,
    /// Ids in the order they were remembered, to forget the oldest first.
    order: VecDeque<String>,
}

/// Whether `task_id` can name a task at all.
pub fn is_plausible_task_id(task_id: &str) -> bool {
    !task_id.is_empty() && task_id.len() <= MAX_TASK_ID_BYTES
}

impl TaskOrigins {
    /// Remembers that `server` runs `task_id`, forgetting the oldest task when full.
    pub fn remember(&self, task_id: &str, server: &str) {
        if !is_plausible_task_id(task_id) {
            return;
        }
        let mut origins = self.lock();
        if origins
            .servers
            .insert(task_id.to_owned(), server.to_owned())
            .is_some()
        {
            return;
        }
        origins.order.push_back(task_id.to_owned());
        while origins.order.len() > MAX_REMEMBERED_TASKS {
            if let Some(oldest) = origins.order.pop_front() {
                origins.servers.remove(&oldest);
            }
        }
    }

    /// The server that runs `task_id`, if remembered.
    pub fn server_of(&self, task_id: &str) -> Option<String> {
        self.lock().servers.get(task_id).cloned()
    }

    /// Forgets `task_id` (its server no longer knows it).
    pub fn forget(&self, task_id: &str) {
        let mut origins = self.lock();
        if origins.servers.remove(task_id).is_some() {
            origins.order.retain(|id| id != task_id);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().servers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Origins> {
        // The map is never left half-updated by a panic (no code in it panics), so a poisoned
        // lock still guards consistent data.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_task_is_forgotten_past_the_bound() {
        let origins = TaskOrigins::default();
        for n in 0..=MAX_REMEMBERED_TASKS {
            origins.remember(&format!("task-{n}"), "sidecar");
        }
        assert_eq!(origins.len(), MAX_REMEMBERED_TASKS);
        assert_eq!(origins.server_of("task-0"), None);
        assert_eq!(origins.server_of("task-1").as_deref(), Some("sidecar"));
        assert_eq!(
            origins
                .server_of(&format!("task-{MAX_REMEMBERED_TASKS}"))
                .as_deref(),
            Some("sidecar")
        );
    }

    #[test]
    fn implausible_ids_are_not_remembered_and_forgetting_works() {
        let origins = TaskOrigins::default();
        origins.remember("", "remote");
        origins.remember(&"x".repeat(MAX_TASK_ID_BYTES + 1), "remote");
        assert!(origins.is_empty());
        origins.remember("t1", "remote");
        origins.remember("t1", "remote");
        origins.forget("t1");
        assert!(origins.is_empty());
        assert_eq!(origins.server_of("t1"), None);
    }
}
