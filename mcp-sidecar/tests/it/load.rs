//! Load against the real `mcp-sidecar` binary with a real Redis, bounded in count and time:
//!
//! - 200 MCP clients (rmcp's own client, each with its own connection pool) at once, in each
//!   session mode: every call is answered correctly and the sidecar's memory stays bounded.
//! - A burst of 10,000 `start_render` calls against a bounded queue: each is accepted or
//!   refused with a clear error, the accepted ones are exactly what Redis holds, and every
//!   one of them then runs to `succeeded`.
//!
//! Throughput and latency are measured in `bench/` (release build, ratios); this only checks
//! correctness and bounds under load. `cargo test -p mcp-sidecar --test it load:: -- --nocapture`
//! prints the figures.
#![allow(clippy::unwrap_used)]
// a test: failures should panic loudly
// The guard of `one_heavy_test_at_a_time` is held for a whole test, on purpose, across awaits:
// each test is its own runtime on its own thread, so nothing else waits on this thread.
#![allow(clippy::await_holding_lock)]

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use crate::common::{
    call, cluster::Cluster, mcp_client, memory::MemorySampler, start_sidecar_process,
    structured_ok, tool_error_code, tool_error_message,
};
use serde_json::json;
use tokio::sync::Barrier;

/// Concurrent MCP clients.
const CLIENTS: usize = 200;
/// `add` calls each client makes (after all of them are connected).
const CALLS_PER_CLIENT: u64 = 25;
/// The whole run of one mode may take this long (a debug build on a busy 2-core machine).
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// Peak resident memory (`VmHWM`) the sidecar may reach under 200 clients, in MiB. Measured
/// (debug build, this machine, idle at 27 MiB): 47 MiB stateless and 63 MiB with 200 live
/// sessions. The release build idles at about 12 MiB (bench/RESULTS.md). The bound leaves
/// room for allocator and machine differences.
const PEAK_RSS_BOUND_MIB: u64 = 96;
/// How much a second round of the same 200 clients may raise the peak, in MiB: memory that
/// grows with the clients served, rather than with those at once, would show here.
const ROUND_GROWTH_BOUND_MIB: u64 = 8;

/// `start_render` calls in the burst.
const BURST: usize = 10_000;
/// Concurrent callers sending the burst.
const BURST_CALLERS: usize = 32;
/// The sidecar's `MAX_QUEUED_JOBS` in the burst test: part of the burst must be refused.
const QUEUE_BOUND: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_get_every_answer_with_bounded_memory() {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    for mode in ["stateless", "stateful"] {
        let sidecar = start_sidecar_process(&[("MCP_SESSION_MODE", mode)]);
        let memory = MemorySampler::start(sidecar.process.pid());
        let idle_mib = memory.rss_kib() / 1024;
        // Two rounds on one process: memory that grows with the number of clients served (a
        // session never freed, say) shows as a higher peak in the second.
        let mut peaks = vec![];
        for round in 1..=2 {
            let took = clients_round(&sidecar.mcp_url()).await;
            let peak_mib = memory.high_water_kib() / 1024;
            let calls = CLIENTS as u64 * CALLS_PER_CLIENT;
            println!(
                "{mode}, round {round}: {CLIENTS} clients, {calls} calls in {took:.2?} ({:.0} \
                 calls/s, debug build), every answer right; RSS idle {idle_mib} MiB, peak \
                 {peak_mib} MiB (bound {PEAK_RSS_BOUND_MIB} MiB), {} MiB after",
                calls as f64 / took.as_secs_f64(),
                memory.rss_kib() / 1024,
            );
            peaks.push(peak_mib);
        }
        assert!(
            peaks[1] <= PEAK_RSS_BOUND_MIB,
            "{mode}: peak RSS {} MiB over the bound of {PEAK_RSS_BOUND_MIB} MiB",
            peaks[1]
        );
        assert!(
            peaks[1] <= peaks[0] + ROUND_GROWTH_BOUND_MIB,
            "{mode}: the second round raised the peak from {} to {} MiB",
            peaks[0],
            peaks[1]
        );
        let health = reqwest::get(format!("http://{}/healthz", sidecar.addr))
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "{mode}: still up");
    }
}

/// [`CLIENTS`] clients connect, wait for each other, then each makes [`CALLS_PER_CLIENT`]
/// `add` calls and checks every answer; returns how long it took. Panics on any error.
async fn clients_round(url: &str) -> Duration {
    let started = Instant::now();
    let ready = Arc::new(Barrier::new(CLIENTS));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|client| {
            let (url, ready) = (url.to_owned(), ready.clone());
            tokio::spawn(async move {
                let mcp = mcp_client(&url).await;
                ready.wait().await;
                for call_number in 0..CALLS_PER_CLIENT {
                    let (a, b) = (client, call_number * 1000);
                    let result = call(&mcp, "add", json!({ "a": a, "b": b })).await;
                    assert_eq!(structured_ok(&result), json!({ "sum": a + b }));
                }
                mcp.cancel().await.unwrap();
            })
        })
        .collect();
    for client in clients {
        // A transport error, a tool error or a wrong sum panics in the task and fails the join.
        tokio::time::timeout_at((started + RUN_LIMIT).into(), client)
            .await
            .expect("the load ends within its time bound")
            .expect("every call of every client is answered right");
    }
    started.elapsed()
}

/// What became of one `start_render` call.
enum Answer {
    Accepted(String),
    Refused { code: String, message: String },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_ten_thousand_start_render_calls_is_accepted_or_clearly_refused_and_none_is_lost()
 {
    let _heavy = crate::common::one_heavy_test_at_a_time();
    let cluster = Cluster::new();
    // No workers: the burst meets a queue that nothing drains, so the bound is reached.
    let accepting = cluster.sidecar("0", &[("MAX_QUEUED_JOBS", &QUEUE_BOUND.to_string())]);
    let url = accepting.mcp_url();
    let started = Instant::now();
    let callers: Vec<_> = (0..BURST_CALLERS)
        .map(|caller| {
            let url = url.clone();
            tokio::spawn(async move {
                let mcp = mcp_client(&url).await;
                let mut answers = vec![];
                for index in (caller..BURST).step_by(BURST_CALLERS) {
                    let spec = json!({"kind": "chart", "width": 48, "height": 32, "format": "svg",
                        "chart": {"type": "bar", "title": format!("burst {index}"),
                                  "series": [{"name": "a", "points": [[1, index]]}]}});
                    let result = call(&mcp, "start_render", json!({ "spec": spec })).await;
                    answers.push(if result.is_error == Some(true) {
                        Answer::Refused {
                            code: tool_error_code(&result),
                            message: tool_error_message(&result),
                        }
                    } else {
                        let started = structured_ok(&result);
                        assert_eq!(started["state"], "queued", "{started}");
                        Answer::Accepted(started["job_id"].as_str().unwrap().to_owned())
                    });
                }
                mcp.cancel().await.unwrap();
                answers
            })
        })
        .collect();
    let mut accepted = vec![];
    let mut refusals = 0;
    for caller in callers {
        let answers = tokio::time::timeout_at((started + RUN_LIMIT).into(), caller)
            .await
            .expect("the burst ends within its time bound")
            .expect("every call is answered");
        for answer in answers {
            match answer {
                Answer::Accepted(job) => accepted.push(job),
                Answer::Refused { code, message } => {
                    assert_eq!(code, "unavailable", "{message}");
                    assert!(
                        message.contains("queue is full") && message.contains("MAX_QUEUED_JOBS"),
                        "{message}"
                    );
                    refusals += 1;
                }
            }
        }
    }
    let burst_took = started.elapsed();

    // Exactly the bound was accepted, the rest refused; Redis holds each accepted job, queued,
    // with its queue entry, and nothing else.
    assert_eq!(accepted.len() + refusals, BURST, "every call was answered");
    assert_eq!(
        accepted.len(),
        QUEUE_BOUND,
        "the bound holds under concurrency"
    );
    assert_eq!(
        accepted.iter().collect::<HashSet<_>>().len(),
        accepted.len(),
        "distinct job ids"
    );
    assert_eq!(cluster.queue_length(), QUEUE_BOUND);
    let states = cluster.states(&accepted);
    assert!(
        states.iter().all(|(_, state)| state == "queued"),
        "{:?}",
        states.iter().find(|(_, state)| state != "queued")
    );

    // Workers join: every accepted job runs to `succeeded`, once.
    let draining = Instant::now();
    let workers = cluster.sidecar("2", &[]);
    // Bounded by progress: a stall of a minute with jobs left is a fault, a slow machine not.
    cluster
        .wait_finished(&accepted, Duration::from_secs(60))
        .await;
    let drain_took = draining.elapsed();
    let states = cluster.states(&accepted);
    assert!(
        states.iter().all(|(_, state)| state == "succeeded"),
        "{:?}",
        states.iter().find(|(_, state)| state != "succeeded")
    );
    assert_eq!(cluster.queue_length(), 0, "the queue is empty again");
    let artifacts = cluster.artifacts();
    assert_eq!(artifacts.len(), QUEUE_BOUND, "one artifact per job");
    println!(
        "{BURST} start_render calls from {BURST_CALLERS} clients in {burst_took:.2?}: {} \
         accepted (MAX_QUEUED_JOBS={QUEUE_BOUND}), {refusals} refused with `unavailable`; all \
         {} accepted jobs succeeded {drain_took:.2?} after 2 workers joined; 0 lost",
        accepted.len(),
        accepted.len(),
    );

    // With the queue empty, new work is accepted again.
    let mcp = mcp_client(&url).await;
    let spec = json!({"kind": "chart", "width": 48, "height": 32, "format": "svg",
        "chart": {"type": "bar", "series": [{"name": "a", "points": [[1, 1]]}]}});
    structured_ok(&call(&mcp, "start_render", json!({ "spec": spec })).await);
    mcp.cancel().await.unwrap();
    drop(workers);
}
