//! The peers of stateful sessions, for the `/mcp` fast path (`http::fast`).
//!
//! In stateful mode rmcp answers every request of a session through that session's worker:
//! the request is pushed into the worker, handed to its serve loop, the answer comes back to
//! the worker and from there to a per-request SSE stream (six channel hops and two spawns a
//! request). The fast path answers a plain request itself, through the same handler, with
//! the session's own `Peer`: the one rmcp's serve loop gives every handler of that session,
//! holding the client's `initialize` params and the negotiated protocol version.
//!
//! That peer is only reachable from inside the session, so it is recorded here when the
//! client says `notifications/initialized` (rmcp routes the notification to the session's
//! handler by its `Mcp-Session-Id`, which is therefore the id of the session whose peer it
//! is). A session becomes eligible for the fast path only then.
//!
//! rmcp's own session table stays the authority on which sessions are live: a session it
//! closed (DELETE, idle timeout, shutdown) is never served here, and its entry is dropped
//! when next looked up or when the next session registers.

use std::{
    collections::HashMap,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use rmcp::{
    Peer, RoleServer, transport::streamable_http_server::session::local::LocalSessionManager,
};

/// The live sessions' peers, by session id.
pub struct SessionPeers {
    manager: Arc<LocalSessionManager>,
    peers: RwLock<HashMap<Arc<str>, Arc<SessionPeer>>>,
    /// How often a session's request goes through rmcp all the same (see [`Self::peer`]);
    /// `None` when rmcp never closes an idle session.
    refresh: Option<Duration>,
    epoch: Instant,
}

impl std::fmt::Debug for SessionPeers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionPeers")
            .field("refresh", &self.refresh)
            .finish_non_exhaustive()
    }
}

struct SessionPeer {
    peer: Peer<RoleServer>,
    /// When a request of this session last went through rmcp, in ms since `epoch`.
    routed_at: AtomicU64,
}

impl SessionPeers {
    /// `manager` must be the session manager rmcp's service was built with.
    pub fn new(manager: Arc<LocalSessionManager>) -> Self {
        // rmcp closes a session whose worker has seen nothing for `keep_alive`; requests
        // answered here never reach the worker, so one in four such periods goes through it.
        let refresh = manager.session_config.keep_alive.map(|alive| alive / 4);
        Self {
            manager,
            peers: RwLock::new(HashMap::new()),
            refresh,
            epoch: Instant::now(),
        }
    }

    /// Records the peer of session `id`, which has just said `notifications/initialized`.
    /// Entries of sessions rmcp has closed since the last registration go at the same time,
    /// so the table never holds more than the live sessions and this one.
    pub async fn register(&self, id: &str, peer: Peer<RoleServer>) {
        let live = self.manager.sessions.read().await;
        if !live.contains_key(id) {
            return;
        }
        let entry = Arc::new(SessionPeer {
            peer,
            routed_at: AtomicU64::new(self.now()),
        });
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        peers.retain(|known, _| live.contains_key(known));
        peers.insert(Arc::from(id), entry);
    }

    /// The peer to answer a request of session `id` with, or `None` when rmcp should answer
    /// it: the session is unknown here, closed, or its periodic request through rmcp is due
    /// (this request then is that one; it keeps rmcp's idle timer from closing a session
    /// whose requests are all answered here).
    pub fn peer(&self, id: &str) -> Option<Peer<RoleServer>> {
        // A session table being written (a session opening or closing) is not waited for.
        let live = self.manager.sessions.try_read().ok()?.contains_key(id);
        let entry = self
            .peers
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(id)
            .cloned()?;
        if !live {
            self.peers
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(id);
            return None;
        }
        if let Some(refresh) = self.refresh {
            let now = self.now();
            let routed = entry.routed_at.load(Ordering::Relaxed);
            let due = now.saturating_sub(routed)
                >= u64::try_from(refresh.as_millis()).unwrap_or(u64::MAX);
            // Of concurrent requests that find it due, exactly one goes to rmcp.
            if due
                && entry
                    .routed_at
                    .compare_exchange(routed, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                return None;
            }
        }
        Some(entry.peer.clone())
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}
