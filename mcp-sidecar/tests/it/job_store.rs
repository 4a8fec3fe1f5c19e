//! The Redis job store and queue against a real `redis-server`: atomic enqueue, idempotency,
//! delivery with a lease, reclaim, fencing, bounded attempts, cancellation, expiry, listing,
//! and behaviour while Redis is away.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use crate::common::redis_server::RedisServer;
use mcp_sidecar::jobs::{
    model::{ArtifactRecord, JobId, JobState},
    store::{
        ClaimedJob, Delivery, Enqueued, Failure, JobStore, Ownership, Progress, Recorded,
        StoreError, StoreSettings, StoredResult,
    },
};
use redis::Commands;

const SPEC: &str = r#"{"kind":"chart"}"#;

fn settings(prefix: &str) -> StoreSettings {
    StoreSettings {
        key_prefix: format!("test:{prefix}:"),
        finished_ttl: Duration::from_secs(3600),
        lease: Duration::from_millis(300),
        max_attempts: 3,
        max_queued: 10_000,
        operation_timeout: Duration::from_secs(2),
        wait_replicas: 0,
        wait_timeout: Duration::from_secs(1),
    }
}

async fn store(redis: &RedisServer, configure: impl FnOnce(&mut StoreSettings)) -> JobStore {
    let mut settings = settings("s");
    configure(&mut settings);
    let store = JobStore::new(&redis.url(), settings).unwrap();
    store.ensure_queue().await.unwrap();
    store
}

/// Delivers the next entry to `worker` (reclaimed or new) and starts it.
async fn deliver(store: &JobStore, worker: &str) -> Option<Delivery> {
    let mut connection = store.worker_connection(Duration::from_millis(100)).unwrap();
    let entry = match store.reclaim_stale(&mut connection, worker).await.unwrap() {
        Some(entry) => Some(entry),
        None => store
            .read_new(&mut connection, worker, Duration::from_millis(100))
            .await
            .unwrap(),
    };
    Some(store.start(&entry?, worker).await.unwrap())
}

async fn run(store: &JobStore, worker: &str) -> ClaimedJob {
    match deliver(store, worker).await {
        Some(Delivery::Run(job)) => job,
        other => panic!("expected a job to run, got {other:?}"),
    }
}

fn artifact(id: &JobId) -> ArtifactRecord {
    ArtifactRecord {
        key: format!("renders/{id}.png"),
        content_type: "image/png".into(),
        bytes: 1234,
        sha256: "ab".repeat(32),
    }
}

#[tokio::test]
async fn enqueue_writes_record_queue_entry_and_recent_list_together() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let Enqueued { id, created } = store.enqueue(SPEC, 4, None, "").await.unwrap();
    assert!(created);

    let status = store.status(&id).await.unwrap();
    assert_eq!(status.state, JobState::Queued);
    assert_eq!((status.stage, status.total_stages), (0, 4));
    assert_eq!(status.message, "queued");
    assert_eq!(store.queue_depth().await.unwrap(), 1);

    let mut raw = redis.connection();
    let recent: Vec<String> = raw.zrange("test:s:recent", 0, -1).unwrap();
    assert_eq!(recent, [id.to_string()]);
    let spec: String = raw.hget(format!("test:s:job:{id}"), "spec").unwrap();
    assert_eq!(spec, SPEC);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_same_job_and_refuses_a_different_spec() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let Enqueued { id: first, created } =
        store.enqueue(SPEC, 4, Some("order-17"), "").await.unwrap();
    let Enqueued {
        id: again,
        created: created_again,
    } = store.enqueue(SPEC, 4, Some("order-17"), "").await.unwrap();
    assert!(created && !created_again);
    assert_eq!(first, again);
    assert_eq!(
        store.queue_depth().await.unwrap(),
        1,
        "no second queue entry"
    );

    let conflict = store
        .enqueue(r#"{"kind":"svg"}"#, 4, Some("order-17"), "")
        .await
        .unwrap_err();
    assert!(
        matches!(conflict, StoreError::IdempotencyConflict(ref id) if *id == first.to_string())
    );
    let other = store
        .enqueue(SPEC, 4, Some("order-18"), "")
        .await
        .unwrap()
        .id;
    assert_ne!(other, first);
}

#[tokio::test]
async fn the_queue_is_bounded_and_a_finished_job_makes_room() {
    let redis = RedisServer::start();
    let store = store(&redis, |settings| settings.max_queued = 3).await;
    let first = store.enqueue(SPEC, 4, Some("kept"), "").await.unwrap().id;
    store.enqueue(SPEC, 4, None, "").await.unwrap();
    store.enqueue(SPEC, 4, None, "").await.unwrap();
    let recent_before: Vec<String> = redis.connection().zrange("test:s:recent", 0, -1).unwrap();

    let refused = store.enqueue(SPEC, 4, None, "").await.unwrap_err();
    assert!(matches!(refused, StoreError::QueueFull(3)), "{refused:?}");
    assert!(refused.to_string().contains("MAX_QUEUED_JOBS"), "{refused}");
    // Nothing was written for the refused job.
    assert_eq!(store.queue_depth().await.unwrap(), 3);
    let recent: Vec<String> = redis.connection().zrange("test:s:recent", 0, -1).unwrap();
    assert_eq!(recent, recent_before);
    // A repeat of an existing job is still answered: it adds nothing.
    assert_eq!(
        store.enqueue(SPEC, 4, Some("kept"), "").await.unwrap(),
        Enqueued {
            id: first,
            created: false
        }
    );

    // A running job still counts; once it has finished there is room again.
    let job = run(&store, "w1").await;
    assert!(matches!(
        store.enqueue(SPEC, 4, None, "").await,
        Err(StoreError::QueueFull(3))
    ));
    store
        .succeed(&job, "done", &artifact(&job.id))
        .await
        .unwrap();
    assert!(store.enqueue(SPEC, 4, None, "").await.unwrap().created);
}

#[tokio::test]
async fn a_delivered_job_runs_reports_progress_and_succeeds_once() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let id = store.enqueue(SPEC, 4, None, "00-trace").await.unwrap().id;

    let job = run(&store, "w1").await;
    assert_eq!((job.id.clone(), job.attempt), (id.clone(), 1));
    assert_eq!(job.spec_json, SPEC);
    assert_eq!(job.trace_context, "00-trace");
    assert_eq!(store.status(&id).await.unwrap().state, JobState::Running);

    let owned = store
        .renew(
            &job,
            "w1",
            Some(Progress {
                stage: 2,
                message: "[2/4] rasterizing",
            }),
        )
        .await
        .unwrap();
    assert_eq!(owned, Ownership::Owned);
    let status = store.status(&id).await.unwrap();
    assert_eq!(
        (status.stage, status.message.as_str()),
        (2, "[2/4] rasterizing")
    );

    let recorded = store
        .succeed(&job, "[4/4] done", &artifact(&id))
        .await
        .unwrap();
    assert_eq!(recorded, Recorded::Done);
    let status = store.status(&id).await.unwrap();
    assert_eq!(status.state, JobState::Succeeded);
    assert_eq!(status.stage, status.total_stages);
    let StoredResult {
        result,
        artifact: record,
    } = store.artifact(&id).await.unwrap();
    assert!(result.ready);
    assert_eq!(record.unwrap(), artifact(&id));

    // Finished: the queue is empty, the spec is gone and the record expires.
    assert_eq!(store.queue_depth().await.unwrap(), 0);
    let mut raw = redis.connection();
    let key = format!("test:s:job:{id}");
    assert!(!raw.hexists::<_, _, bool>(&key, "spec").unwrap());
    let ttl: i64 = raw.ttl(&key).unwrap();
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");

    // Terminal states never change: a second outcome and a cancel are both refused.
    let again = store
        .fail(&job, Failure::Render, "late failure")
        .await
        .unwrap();
    assert_eq!(again, Recorded::Lost);
    let after_cancel = store.cancel(&id).await.unwrap();
    assert_eq!(after_cancel.state, JobState::Succeeded);
}

#[tokio::test]
async fn a_job_whose_worker_stops_renewing_is_taken_over_and_the_old_attempt_is_fenced_off() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    let first = run(&store, "dead-worker").await;

    // Within the lease nobody else gets it.
    assert!(deliver(&store, "w2").await.is_none());
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = run(&store, "w2").await;
    assert_eq!((second.id.clone(), second.attempt), (id.clone(), 2));

    // The first worker wakes up late: every write it tries is refused.
    assert_eq!(
        store.renew(&first, "dead-worker", None).await.unwrap(),
        Ownership::Lost
    );
    assert_eq!(
        store.succeed(&first, "done", &artifact(&id)).await.unwrap(),
        Recorded::Lost
    );
    assert_eq!(
        store
            .succeed(&second, "done", &artifact(&id))
            .await
            .unwrap(),
        Recorded::Done
    );
}

#[tokio::test]
async fn renewing_the_lease_keeps_a_slow_job_from_being_taken_over() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    store.enqueue(SPEC, 4, None, "").await.unwrap();
    let job = run(&store, "slow").await;
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            store.renew(&job, "slow", None).await.unwrap(),
            Ownership::Owned
        );
        assert!(deliver(&store, "other").await.is_none());
    }
}

#[tokio::test]
async fn attempts_are_bounded_and_the_last_error_is_kept() {
    let redis = RedisServer::start();
    let store = store(&redis, |settings| settings.max_attempts = 2).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    for attempt in 1..=2 {
        let job = run(&store, &format!("crashing-{attempt}")).await;
        assert_eq!(job.attempt, attempt);
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    match deliver(&store, "w3").await {
        Some(Delivery::Exhausted {
            id: exhausted,
            error,
        }) => {
            assert_eq!(exhausted, id);
            assert!(error.contains("gave up after 2 attempts"), "{error}");
            assert!(error.contains("stopped renewing the lease"), "{error}");
        }
        other => panic!("expected exhaustion, got {other:?}"),
    }
    let status = store.status(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    assert!(status.error.unwrap().contains("gave up"));
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_cancelled_and_no_worker_runs_it() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    let status = store.cancel(&id).await.unwrap();
    assert_eq!((status.state, status.error), (JobState::Cancelled, None));
    assert!(
        deliver(&store, "w1").await.is_none(),
        "nothing left to deliver"
    );
    assert_eq!(store.queue_depth().await.unwrap(), 0);
}

#[tokio::test]
async fn cancelling_a_running_job_ends_it_at_once_and_the_worker_learns_of_it() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    let job = run(&store, "w1").await;
    let status = store.cancel(&id).await.unwrap();
    assert_eq!((status.state, status.error), (JobState::Cancelled, None));
    assert_eq!(
        store
            .renew(
                &job,
                "w1",
                Some(Progress {
                    stage: 3,
                    message: "[3/4] encoding",
                }),
            )
            .await
            .unwrap(),
        Ownership::Cancelled
    );
    assert_eq!(
        store.succeed(&job, "done", &artifact(&id)).await.unwrap(),
        Recorded::Cancelled
    );
    assert_eq!(store.status(&id).await.unwrap().state, JobState::Cancelled);
}

#[tokio::test]
async fn a_stopping_worker_hands_its_job_back_for_another_to_take_at_once() {
    let redis = RedisServer::start();
    let store = store(&redis, |settings| settings.lease = Duration::from_secs(60)).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    let job = run(&store, "stopping").await;
    assert!(store.requeue(&job).await.unwrap());
    assert_eq!(store.status(&id).await.unwrap().state, JobState::Queued);
    // No lease to wait out, and the handed-back attempt is not counted.
    let again = run(&store, "other").await;
    assert_eq!((again.id, again.attempt), (id, 1));
}

#[tokio::test]
async fn list_gives_recent_jobs_newest_first_filtered_by_state() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let mut ids = vec![];
    for _ in 0..5 {
        ids.push(store.enqueue(SPEC, 4, None, "").await.unwrap().id);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store.cancel(&ids[1]).await.unwrap();

    let all = store.list(None, 10).await.unwrap();
    let listed: Vec<_> = all.iter().map(|status| status.job_id.clone()).collect();
    let newest_first: Vec<_> = ids.iter().rev().cloned().collect();
    assert_eq!(listed, newest_first);
    assert_eq!(store.list(None, 2).await.unwrap().len(), 2);
    let cancelled = store.list(Some(JobState::Cancelled), 10).await.unwrap();
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].job_id, ids[1]);
    assert!(
        store
            .list(Some(JobState::Failed), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list(Some(JobState::Queued), 10).await.unwrap().len(),
        4
    );
}

#[tokio::test]
async fn an_unknown_job_is_not_found() {
    let redis = RedisServer::start();
    let store = store(&redis, |_| {}).await;
    let id = JobId::generate();
    assert!(matches!(
        store.status(&id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.cancel(&id).await,
        Err(StoreError::NotFound(_))
    ));
}

#[tokio::test]
async fn while_redis_is_down_calls_fail_fast_and_recover_by_themselves_after() {
    let mut redis = RedisServer::start_with(true);
    let store = store(&redis, |_| {}).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;

    redis.kill();
    for _ in 0..3 {
        let started = Instant::now();
        let error = store.status(&id).await.unwrap_err();
        assert!(matches!(error, StoreError::Unavailable(_)), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert!(error.to_string().contains("unavailable"));
    }

    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match store.status(&id).await {
            Ok(status) => {
                assert_eq!(status.state, JobState::Queued, "the AOF kept the job");
                break;
            }
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(error) => panic!("no recovery after restart: {error}"),
        }
    }
}

/// A job that runs out of attempts ends failed with its last error, and the attempt it gave up
/// on is told it lost the job, not that the job was cancelled.
#[tokio::test]
async fn running_out_of_attempts_is_a_failure_with_the_last_error_not_a_cancellation() {
    let redis = RedisServer::start();
    let store = store(&redis, |settings| settings.max_attempts = 2).await;
    let id = store.enqueue(SPEC, 4, None, "").await.unwrap().id;
    run(&store, "crashed").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let stalled = run(&store, "stalled").await;
    tokio::time::sleep(Duration::from_millis(400)).await;

    let exhausted = deliver(&store, "w3").await;

    assert!(
        matches!(exhausted, Some(Delivery::Exhausted { .. })),
        "{exhausted:?}"
    );
    let status = store.status(&id).await.unwrap();
    assert_eq!(status.state, JobState::Failed);
    let error = status.error.unwrap();
    assert!(error.contains("gave up after 2 attempts"), "{error}");
    assert!(
        error.contains("attempt 2 stopped: its worker stopped renewing the lease"),
        "{error}"
    );
    // The stalled worker wakes up: the job went on without it.
    assert_eq!(
        store.renew(&stalled, "stalled", None).await.unwrap(),
        Ownership::Lost
    );
    assert_eq!(
        store
            .fail(&stalled, Failure::Render, "late failure")
            .await
            .unwrap(),
        Recorded::Lost
    );
    assert_eq!(store.status(&id).await.unwrap().error, Some(error));
}
