//! Job changes as they happen, whichever sidecar makes them.
//!
//! Every script that changes a job's state or stage (`start`, `renew` with progress, `finish`,
//! `cancel`, `requeue`) also `PUBLISH`es the job id on the deployment's `task-events` channel,
//! in the same atomic step. Each sidecar holds one subscription to that channel and fans the
//! ids out in-process to whoever waits on jobs: `subscriptions/listen` streams and `render`
//! calls that wait for their result. A message says only *which* job changed; the waiter
//! reads the job's record itself, so a message can never carry a stale state.
//!
//! Pub/sub delivers at most once: messages published while the subscription is down are lost.
//! So each (re)subscription is announced as [`TaskEvent::Resync`], and a lagging waiter sees
//! it as one too: either way the waiter re-reads every job it follows, and misses nothing.

use std::{sync::Arc, time::Duration};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::connection::{Delivered, Redis};

/// What a waiter receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    /// This job changed.
    Changed(Arc<str>),
    /// Changes may have been missed: re-read every job followed.
    Resync,
}

/// How many events a slow waiter may fall behind before it is told to resync.
const BUFFER: usize = 1024;
/// Waits between attempts to (re)subscribe while Redis is away.
const RETRY: Duration = Duration::from_millis(500);

/// The in-process fan-out of the `task-events` channel. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TaskEvents {
    sender: broadcast::Sender<TaskEvent>,
}

impl TaskEvents {
    /// Subscribes to `channel` in the background (and again after every disconnect) until
    /// `shutdown`.
    pub fn start(redis: Redis, channel: String, shutdown: CancellationToken) -> Self {
        let (sender, _) = broadcast::channel(BUFFER);
        let events = Self { sender };
        let publisher = events.sender.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = relay(redis, channel, publisher) => {}
                () = shutdown.cancelled() => {}
            }
        });
        events
    }

    /// A receiver of every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.sender.subscribe()
    }
}

/// Subscribes and relays, forever; each successful (re)subscription is announced as a resync.
async fn relay(redis: Redis, channel: String, sender: broadcast::Sender<TaskEvent>) {
    let mut failures = 0_u32;
    loop {
        match redis.subscribe(&channel).await {
            Ok(mut subscription) => {
                if failures > 0 {
                    tracing::info!("task events: subscribed again");
                }
                failures = 0;
                let _ = sender.send(TaskEvent::Resync);
                while let Some(delivered) = subscription.next().await {
                    // No receivers is fine: nobody is waiting on a job right now.
                    let _ = sender.send(match delivered {
                        Delivered::Message(id) => TaskEvent::Changed(id.into()),
                        // The cluster client re-subscribed by itself after a failover.
                        Delivered::Resubscribed => TaskEvent::Resync,
                    });
                }
                tracing::warn!("task events: the subscription ended; subscribing again");
            }
            Err(error) => {
                failures += 1;
                // Said once per outage, not every half second.
                if failures == 1 {
                    tracing::warn!(
                        error = %super::connection::explain(&error),
                        "task events: cannot subscribe; waiters poll until Redis is back"
                    );
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Waits for the next event about `id` (or a resync) on `events`, at most `bound`. Returns
/// whether the job should be read again: `true` on a relevant event or when the bound ran out
/// (the waiter polls while events are not flowing), `false` only when the fan-out is gone.
pub async fn changed(
    events: &mut broadcast::Receiver<TaskEvent>,
    id: &str,
    bound: Duration,
) -> bool {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(TaskEvent::Changed(changed)) if &*changed == id => return true,
                Ok(TaskEvent::Changed(_)) => {}
                Ok(TaskEvent::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    return true;
                }
                Err(broadcast::error::RecvError::Closed) => return false,
            }
        }
    };
    tokio::time::timeout(bound, wait).await.unwrap_or(true)
}
