//! Redis as Memorystore for Valkey and Memorystore for Redis Cluster run it: cluster mode. A
//! real 3-master, 3-replica Redis Cluster on loopback ports (`redis-server --cluster-enabled
//! yes` + `redis-cli --cluster create`), and real sidecar processes with `REDIS_MODE=cluster`
//! seeded with one node: the job contract and tasks work end to end with two sidecars sharing
//! the work, every key of the deployment sits in one slot, and a master killed mid-run (its
//! replica promoted) loses no acknowledged job when new jobs wait for a replica. With
//! in-transit encryption and IAM authentication, as Memorystore for Redis Cluster is usually
//! provisioned, the same cluster speaks only TLS and takes access tokens from a local server
//! speaking the metadata server's wire format as passwords: jobs run, a rotated token
//! re-authenticates in place, and a failover is followed.
// Helpers outside #[test] fns panic on purpose.
#![allow(clippy::unwrap_used)]
// The heavy-test guard is held for a whole test, on purpose, across awaits.
#![allow(clippy::await_holding_lock)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    time::{Duration, Instant},
};

use serde_json::json;
use test_support::{
    metadata_server::FakeMetadataServer,
    redis_cluster::RedisCluster,
    redis_server::{Secured, TestCa},
};

use crate::{
    common::{
        SidecarProcess, auth_calls, call,
        cluster::logged_successes,
        connections_received, cut_client_connections,
        jobs::{chart_spec, decode_png, download, result, start, wait_all_terminal},
        mcp_client, one_heavy_test_at_a_time, readiness, start_sidecar_process_with, structured_ok,
        temp_dir, tool_error_message,
    },
    tasks::{LIMIT, TaskClient, assert_png_render_result, slow_spec, task_id},
};

/// One deployment (key prefix, artifact directory) on a real cluster.
struct Deployment {
    redis: RedisCluster,
    artifact_dir: PathBuf,
    /// REDIS_KEY_PREFIX as configured (the sidecar makes it the hash tag).
    prefix: String,
}

impl Deployment {
    fn new() -> Self {
        Self::on(RedisCluster::start())
    }

    fn on(redis: RedisCluster) -> Self {
        Self {
            redis,
            artifact_dir: temp_dir("cluster-artifacts"),
            prefix: format!("d{}:", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        }
    }

    /// A sidecar process in cluster mode, seeded with the first node only.
    fn sidecar(&self, workers: &str, extra: &[(&str, &str)]) -> SidecarProcess {
        let (seed, artifacts) = (self.redis.url(), self.artifact_dir.to_str().unwrap());
        let mut env = vec![
            ("REDIS_MODE", "cluster"),
            ("REDIS_URL", seed.as_str()),
            ("REDIS_KEY_PREFIX", self.prefix.as_str()),
            ("ARTIFACT_DIR", artifacts),
            ("JOB_LEASE", "2s"),
            ("RENDER_WORKERS", workers),
        ];
        env.extend_from_slice(extra);
        start_sidecar_process_with(&env, &[])
    }

    /// The key the sidecar uses for `suffix`: `{prefix}suffix`.
    fn key(&self, suffix: &str) -> String {
        format!("{{{}}}{suffix}", self.prefix)
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.artifact_dir);
    }
}

async fn wait_ready(sidecar: &SidecarProcess) {
    let (status, body) =
        readiness(sidecar, Duration::from_secs(30), |status, _| status == 200).await;
    assert_eq!(status, 200, "not ready: {body}");
}

fn slot(cluster: &RedisCluster, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut cluster.connection(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_share_jobs_and_tasks_on_a_three_master_cluster_with_every_key_in_one_slot() {
    let _heavy = one_heavy_test_at_a_time();
    let deployment = Deployment::new();
    let a = deployment.sidecar("1", &[]);
    let b = deployment.sidecar("1", &[]);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (on_a, on_b) = (
        mcp_client(&a.mcp_url()).await,
        mcp_client(&b.mcp_url()).await,
    );

    // The job contract, started on both sidecars.
    let mut jobs = vec![];
    for index in 0..8 {
        let client = if index % 2 == 0 { &on_a } else { &on_b };
        jobs.push(start(client, chart_spec(900, 600, "png")).await);
    }
    // A render task created on one sidecar and followed from the other: its push events
    // travel through the cluster's pub/sub.
    let (tasks_a, tasks_b) = (TaskClient::new(&a.mcp_url()), TaskClient::new(&b.mcp_url()));
    let task = task_id(&tasks_a.call_render_as_task(slow_spec(1)).await);
    let mut listener = tasks_b.listen("cluster-listen", &[&task]).await;
    let _ack = listener.next(LIMIT).await;
    let seen = listener.until_terminal(&task, LIMIT).await;

    let finished = wait_all_terminal(&on_a, &jobs, Duration::from_secs(60)).await;
    for status in &finished {
        assert_eq!(status["state"], "succeeded", "{status}");
    }
    let last = seen.last().unwrap();
    assert_eq!(last["status"], "completed", "{last}");
    assert_png_render_result(&last["result"], &task);
    // A job started on one sidecar is answered by the other, artifact included.
    let answer = result(&on_b, &jobs[0]).await;
    assert!(download(&answer).await.starts_with(b"\x89PNG"));
    // Both sidecars rendered.
    let (by_a, by_b) = (logged_successes(&[&a]), logged_successes(&[&b]));
    println!(
        "jobs rendered: {} by a, {} by b; the listener saw {:?}",
        by_a.len(),
        by_b.len(),
        seen.iter().map(|task| &task["status"]).collect::<Vec<_>>()
    );
    assert!(
        !by_a.is_empty() && !by_b.is_empty(),
        "both sidecars took work"
    );

    // Every key of the deployment is in one slot, on the master that owns it.
    let keys = [
        deployment.key("queue"),
        deployment.key("recent"),
        deployment.key(&format!("job:{}", jobs[0])),
        deployment.key(&format!("job:{task}")),
    ];
    let slots: BTreeSet<u16> = keys
        .iter()
        .map(|key| slot(&deployment.redis, key))
        .collect();
    assert_eq!(slots.len(), 1, "one slot for {keys:?}: {slots:?}");
    let owner = deployment.redis.master_for_key(&keys[0]);
    let mut on_owner = deployment.redis.connection(owner);
    for key in &keys {
        let exists: bool = redis::cmd("EXISTS").arg(key).query(&mut on_owner).unwrap();
        assert!(exists, "{key} is on node {owner}, the master of its slot");
    }
}

/// Renders `count` charts through `sidecar` and checks every one succeeded with a PNG.
async fn render_through(sidecar: &SidecarProcess, count: usize) -> Vec<String> {
    let client = mcp_client(&sidecar.mcp_url()).await;
    let mut jobs = vec![];
    for _ in 0..count {
        jobs.push(start(&client, chart_spec(200, 120, "png")).await);
    }
    for status in wait_all_terminal(&client, &jobs, Duration::from_secs(60)).await {
        assert_eq!(status["state"], "succeeded", "{status}");
    }
    let png = download(&result(&client, &jobs[0]).await).await;
    assert_eq!(decode_png(&png).width(), 200);
    client.cancel().await.unwrap();
    jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_with_iam_tokens_a_cluster_runs_jobs_rotates_its_token_in_place_and_fails_over() {
    let _heavy = one_heavy_test_at_a_time();
    // Short-lived tokens: Google's auth library then refreshes them every ~10 s.
    let metadata = FakeMetadataServer::start("ya29.cluster-one", 30);
    let ca = TestCa::generate();
    let mut deployment = Deployment::on(RedisCluster::start_secured(Secured {
        ca: ca.clone(),
        password: "ya29.cluster-one".into(),
    }));
    let home = temp_dir("home");
    let (ca_file, home_dir) = (ca.ca_cert.to_str().unwrap(), home.to_str().unwrap());
    let host = metadata.host();
    let sidecar = deployment.sidecar(
        "1",
        &[
            ("REDIS_AUTH_MODE", "iam"),
            ("REDIS_CA_FILE", ca_file),
            ("GCE_METADATA_HOST", host.as_str()),
            // No gcloud user credentials from the machine running the tests.
            ("HOME", home_dir),
        ],
    );
    assert!(deployment.redis.url().starts_with("rediss://"));
    wait_ready(&sidecar).await;
    let jobs = render_through(&sidecar, 4).await;
    assert!(metadata.token_requests() >= 1);

    // The jobs are on the master of the deployment's slot, reached here over TLS too.
    let master = deployment.redis.master_for_key(&deployment.key("queue"));
    for job in &jobs {
        let exists: bool = redis::cmd("EXISTS")
            .arg(deployment.key(&format!("job:{job}")))
            .query(&mut deployment.redis.connection(master))
            .unwrap();
        assert!(exists, "job {job} is on node {master}");
    }

    // Rotate: every node accepts both tokens while the metadata server hands out the new one;
    // the sidecar's connections to the master re-authenticate without reconnecting.
    deployment
        .redis
        .set_passwords(&["ya29.cluster-one", "ya29.cluster-two"]);
    // Asked on one connection kept open, so that asking adds no connection and no AUTH.
    let mut admin = deployment.redis.connection(master);
    let (connections_before, auths_before) =
        (connections_received(&mut admin), auth_calls(&mut admin));
    metadata.set_token("ya29.cluster-two");
    let deadline = Instant::now() + Duration::from_secs(45);
    let reauthenticated = loop {
        let (connections, auths) = (connections_received(&mut admin), auth_calls(&mut admin));
        // The store's connection and the worker's each re-authenticate.
        if auths >= auths_before + 2 {
            assert_eq!(
                connections, connections_before,
                "re-authenticated in place, without reconnecting"
            );
            break auths - auths_before;
        }
        assert!(
            Instant::now() < deadline,
            "the sidecar's connections to node {master} did not re-authenticate after the token \
             changed: AUTH calls {auths_before} → {auths}; token requests {}",
            metadata.token_requests()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    drop(admin);

    // Only the new token is valid now, and every client connection on every node is cut:
    // new ones use the fresh token, so the sidecar is ready and renders again.
    deployment.redis.set_passwords(&["ya29.cluster-two"]);
    for index in 0..RedisCluster::NODES {
        cut_client_connections(&mut deployment.redis.connection(index));
    }
    wait_ready(&sidecar).await;
    render_through(&sidecar, 2).await;

    // The master of the deployment's slot dies: the sidecar reaches the promoted replica
    // over TLS with the current token, and renders on.
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| {
        deployment.redis.kill(master);
        deployment.redis.wait_for_failover(master);
    });
    let promoted = deployment.redis.master_for_key(&deployment.key("queue"));
    assert_ne!(promoted, master);
    wait_ready(&sidecar).await;
    let after = render_through(&sidecar, 2).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(deployment.key(&format!("job:{}", after[0])))
        .query(&mut deployment.redis.connection(promoted))
        .unwrap();
    assert!(
        exists,
        "the new job is on node {promoted}, the promoted replica"
    );
    println!(
        "{reauthenticated} connections to node {master} re-authenticated in place; after its \
         kill, jobs ran on node {promoted} {:?} later; {} token requests in all",
        killed_at.elapsed(),
        metadata.token_requests()
    );

    sidecar.assert_never_logged("ya29.cluster");
    let _ = std::fs::remove_dir_all(home);
}

/// `start_render` with `key` as idempotency key until it is acknowledged (or `limit` passes):
/// the job id, and how many attempts were refused first.
async fn acknowledged(
    client: &crate::common::McpClient,
    key: &str,
    limit: Duration,
) -> (String, u32, Vec<String>) {
    let deadline = Instant::now() + limit;
    let mut refusals = vec![];
    loop {
        let attempt = tokio::time::timeout(
            Duration::from_secs(10),
            call(
                client,
                "start_render",
                json!({"spec": chart_spec(320, 200, "png"), "idempotency_key": key}),
            ),
        )
        .await;
        match attempt {
            Ok(answer) if answer.is_error != Some(true) => {
                let job = structured_ok(&answer)["job_id"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                return (job, u32::try_from(refusals.len()).unwrap(), refusals);
            }
            Ok(answer) => refusals.push(tool_error_message(&answer)),
            Err(_) => refusals.push("no answer within 10 s".into()),
        }
        assert!(
            Instant::now() < deadline,
            "{key} was never acknowledged: {refusals:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_killed_mid_run_loses_no_acknowledged_job_when_new_jobs_wait_for_a_replica() {
    let _heavy = one_heavy_test_at_a_time();
    let mut deployment = Deployment::new();
    let wait = [
        ("REDIS_WAIT_REPLICAS", "1"),
        ("REDIS_WAIT_TIMEOUT", "500ms"),
    ];
    let a = deployment.sidecar("2", &wait);
    let b = deployment.sidecar("2", &wait);
    wait_ready(&a).await;
    wait_ready(&b).await;
    let (on_a, on_b) = (
        mcp_client(&a.mcp_url()).await,
        mcp_client(&b.mcp_url()).await,
    );
    let master = deployment.redis.master_for_key(&deployment.key("queue"));

    // Jobs are submitted all along, alternating sidecars; the master dies after the tenth.
    let (acknowledged_tx, mut acknowledged_rx) = tokio::sync::mpsc::unbounded_channel();
    let submitter = tokio::spawn(async move {
        let mut refused = vec![];
        for index in 0..40 {
            let client = if index % 2 == 0 { &on_a } else { &on_b };
            let key = format!("failover-{index}");
            let (job, _, refusals) = acknowledged(client, &key, Duration::from_secs(90)).await;
            refused.extend(refusals);
            acknowledged_tx.send((key, job)).unwrap();
        }
        (on_a, on_b, refused)
    });
    let mut jobs: BTreeMap<String, String> = BTreeMap::new();
    while jobs.len() < 10 {
        let (key, job) = acknowledged_rx.recv().await.unwrap();
        jobs.insert(key, job);
    }
    println!("killing node {master}, the master of the deployment's slot");
    let killed_at = Instant::now();
    tokio::task::block_in_place(|| {
        deployment.redis.kill(master);
        deployment.redis.wait_for_failover(master);
        println!("a replica took over after {:?}", killed_at.elapsed());
        // The promoted replica has no replica of its own until the old master comes back as
        // one: until then WAIT cannot be satisfied and new jobs are refused.
        deployment.redis.restart(master);
        println!(
            "node {master} is back, as a replica, after {:?}",
            killed_at.elapsed()
        );
    });
    let (on_a, on_b, refused) = submitter.await.unwrap();
    while let Some((key, job)) = acknowledged_rx.recv().await {
        jobs.insert(key, job);
    }
    let ids: Vec<String> = jobs.values().cloned().collect();
    let finished = wait_all_terminal(&on_a, &ids, Duration::from_secs(90)).await;

    println!(
        "{} jobs acknowledged; {} submissions refused during the failover, e.g. {:?}",
        ids.len(),
        refused.len(),
        refused.iter().take(3).collect::<Vec<_>>()
    );
    let states: BTreeMap<&str, usize> = finished.iter().fold(BTreeMap::new(), |mut by, status| {
        *by.entry(status["state"].as_str().unwrap_or("?"))
            .or_default() += 1;
        by
    });
    assert_eq!(ids.len(), 40);
    assert_eq!(
        states.get("succeeded"),
        Some(&ids.len()),
        "every acknowledged job survived the failover and succeeded: {states:?}"
    );
    // The idempotency keys still name the same jobs (nothing was made twice).
    for (key, job) in jobs.iter().take(5) {
        let (again, _, _) = acknowledged(&on_b, key, Duration::from_secs(10)).await;
        assert_eq!(&again, job, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_and_jobs_carry_on_when_a_shard_the_deployment_does_not_use_fails_over() {
    let _heavy = one_heavy_test_at_a_time();
    let mut deployment = Deployment::new();
    let sidecar = deployment.sidecar("1", &[]);
    wait_ready(&sidecar).await;
    render_through(&sidecar, 1).await;
    let ours = deployment.redis.master_for_key(&deployment.key("queue"));
    let other = *deployment
        .redis
        .masters()
        .iter()
        .find(|&&master| master != ours)
        .unwrap();
    tokio::task::block_in_place(|| {
        deployment.redis.kill(other);
        deployment.redis.wait_for_failover(other);
    });
    // Nothing this deployment keeps was on the dead node: /readyz says so at once (it asked
    // every primary the client last knew of before, and stayed 503 for as long as that
    // client did not re-read the topology).
    let (status, body) =
        readiness(&sidecar, Duration::from_secs(3), |status, _| status == 200).await;
    assert_eq!(
        status, 200,
        "not ready after node {other} failed over: {body}"
    );
    // Jobs run on, even once the servers have forgotten the store's scripts (as a restarted
    // node or a promoted replica has): a script is sent again to the node of its keys only
    // (it was loaded on every primary the client knew of, which failed with one of them
    // down).
    for index in 0..RedisCluster::NODES {
        if deployment.redis.is_running(index) {
            let _: () = redis::cmd("SCRIPT")
                .arg("FLUSH")
                .query(&mut deployment.redis.connection(index))
                .unwrap();
        }
    }
    render_through(&sidecar, 1).await;
    let (status, body) = readiness(&sidecar, Duration::from_secs(1), |_, _| true).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn cluster_mode_against_a_server_that_is_not_a_cluster_is_named_on_readyz() {
    let redis = test_support::redis_server::RedisServer::start();
    let artifacts = temp_dir("artifacts");
    let sidecar = start_sidecar_process_with(
        &[
            ("REDIS_MODE", "cluster"),
            ("REDIS_URL", &redis.url()),
            ("ARTIFACT_DIR", artifacts.to_str().unwrap()),
        ],
        &[],
    );
    let (status, body) = readiness(&sidecar, Duration::from_secs(20), |status, body| {
        status == 503 && body.to_string().contains("REDIS_MODE")
    })
    .await;
    assert_eq!(status, 503, "{body}");
    println!("{body}");
    assert!(
        body.to_string().contains("REDIS_MODE=standalone"),
        "the mistake is named: {body}"
    );
    let _ = std::fs::remove_dir_all(artifacts);
}
