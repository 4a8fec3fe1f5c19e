//! Several real `mcp-sidecar` processes on one real Redis: a worker killed with SIGKILL in
//! the middle of jobs loses nothing, and sidecars sharing the queue run each job once.
#![allow(clippy::unwrap_used)]
// The heavy-test guard is held for a whole test, on purpose, across awaits.
#![allow(clippy::await_holding_lock)]

use std::{
    collections::HashSet,
    time::{Duration, Instant},
};

use crate::common::{
    cluster::{Cluster, logged_successes},
    jobs::*,
    mcp_client,
};

/// Waits for every job to succeed; a stall of `stall` (no job finishing) fails the test.
async fn wait_all_succeeded(client: &crate::common::McpClient, jobs: &[String], stall: Duration) {
    for (job, status) in jobs
        .iter()
        .zip(wait_all_terminal(client, jobs, stall).await)
    {
        assert_eq!(status["state"], "succeeded", "{job}: {status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_every_job_succeeds_exactly_once() {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    let cluster = Cluster::new();
    let mut doomed = cluster.sidecar("2", &[]);
    let client = mcp_client(&doomed.mcp_url()).await;

    // Big enough to be caught mid-render.
    let mut jobs = vec![];
    for index in 0..12 {
        jobs.push(start(&client, chart_spec(1600 + index, 1200, "png")).await);
    }
    // Wait until the doomed sidecar is in the middle of jobs, then kill it outright.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let running = futures_running(&client, &jobs).await;
        if running > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "no job ever started running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    doomed.kill();
    let killed_at = Instant::now();
    drop(client);
    // What the dead worker held, read from Redis before anyone else can start anything.
    let interrupted: Vec<String> = cluster
        .states(&jobs)
        .into_iter()
        .filter(|(_, state)| state == "running")
        .map(|(job, _)| job)
        .collect();
    assert!(
        !interrupted.is_empty(),
        "some jobs were running on the killed worker"
    );

    // A second sidecar on the same Redis takes over once the dead worker's leases lapse.
    let survivor = cluster.sidecar("2", &[]);
    let client = mcp_client(&survivor.mcp_url()).await;
    wait_all_succeeded(&client, &jobs, Duration::from_secs(60)).await;
    println!(
        "{} jobs, {} interrupted by SIGKILL, all succeeded {:?} after the kill",
        jobs.len(),
        interrupted.len(),
        killed_at.elapsed()
    );

    // Exactly once: one success per job across both processes, one artifact per job.
    let mut successes = logged_successes(&[&doomed, &survivor]);
    successes.sort();
    let mut expected = jobs.clone();
    expected.sort();
    assert_eq!(successes, expected, "each job succeeded once");
    let artifacts: HashSet<String> = cluster.artifacts().into_iter().collect();
    let wanted: HashSet<String> = jobs.iter().map(|job| format!("{job}.png")).collect();
    assert_eq!(
        artifacts, wanted,
        "exactly one artifact per job and nothing else"
    );
    // The interrupted jobs were delivered again; the others ran once.
    let attempts = cluster.attempts(&jobs);
    for job in &jobs {
        let expected = if interrupted.contains(job) { 2 } else { 1 };
        assert_eq!(attempts[job], expected, "{job}: attempts");
    }
    // Downloads work from the survivor's URLs.
    for job in jobs.iter().take(3) {
        let pixmap = decode_png(&download(&result(&client, job).await).await);
        assert_eq!(pixmap.height(), 1200);
    }
    client.cancel().await.unwrap();
}

async fn futures_running(client: &crate::common::McpClient, jobs: &[String]) -> usize {
    let mut running = 0;
    for job in jobs {
        if status(client, job).await["state"] == "running" {
            running += 1;
        }
    }
    running
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sidecars_on_one_redis_share_200_jobs_with_none_lost_and_none_twice() {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    let cluster = Cluster::new();
    let first = cluster.sidecar("2", &[]);
    let second = cluster.sidecar("2", &[]);
    let clients = [
        mcp_client(&first.mcp_url()).await,
        mcp_client(&second.mcp_url()).await,
    ];

    let mut jobs = vec![];
    for index in 0..200 {
        // Alternate the sidecar that accepts the job; both sets of workers take from one queue.
        let client = &clients[index % 2];
        let format = if index % 4 == 0 { "svg" } else { "png" };
        jobs.push(
            start(
                client,
                chart_spec(160 + u32::try_from(index).unwrap(), 120, format),
            )
            .await,
        );
    }
    wait_all_succeeded(&clients[0], &jobs, Duration::from_secs(60)).await;

    let from_first = logged_successes(&[&first]);
    let from_second = logged_successes(&[&second]);
    println!(
        "first sidecar ran {}, second ran {}",
        from_first.len(),
        from_second.len()
    );
    assert!(
        !from_first.is_empty() && !from_second.is_empty(),
        "both sidecars did work"
    );
    let mut all: Vec<String> = from_first.into_iter().chain(from_second).collect();
    all.sort();
    let mut expected = jobs.clone();
    expected.sort();
    assert_eq!(all, expected, "every job succeeded exactly once");
    assert_eq!(cluster.artifacts().len(), 200, "one artifact each");
    assert!(
        cluster
            .attempts(&jobs)
            .values()
            .all(|attempts| *attempts == 1)
    );
    for client in clients {
        client.cancel().await.unwrap();
    }
}
