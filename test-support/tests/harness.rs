//! The harnesses themselves, proven against real clients: the six-node Redis Cluster (a
//! cluster client and plain node connections, a failover, a rejoin; TLS-only with a password
//! and its rotation) and the fake metadata server (raw HTTP, and `google-cloud-auth`'s
//! metadata-server credentials).
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use redis::Commands;
use test_support::{
    metadata_server::FakeMetadataServer,
    redis_cluster::RedisCluster,
    redis_server::{Secured, TestCa},
};

#[test]
fn redis_cluster_serves_fails_over_and_rejoins() {
    let started = Instant::now();
    let mut cluster = RedisCluster::start();
    eprintln!("cluster healthy after {:?}", started.elapsed());
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "{}", cluster.cluster_nodes());
    for &master in &masters {
        assert_eq!(
            cluster.replicas_of(master).len(),
            1,
            "{}",
            cluster.cluster_nodes()
        );
    }

    // Through a cluster client, and through plain node connections following MOVED.
    let key = "harness:{failover}";
    let mut client = cluster.cluster_connection();
    let _: () = client.set(key, "before").unwrap();
    let read: String = cluster.query_following_moved(redis::cmd("GET").arg(key));
    assert_eq!(read, "before");
    let other = "harness:{elsewhere}";
    let _: () = cluster.query_following_moved(redis::cmd("SET").arg(other).arg("too"));
    let read: String = client.get(other).unwrap();
    assert_eq!(read, "too");

    let old_master = cluster.master_for_key(key);
    let replica = cluster.replicas_of(old_master)[0];
    // The write has reached the replica before the master dies. WAIT only covers the writes
    // of its own connection, so the key is written again on the one that waits (a WAIT on a
    // fresh connection returns at once and proved nothing: the replica sometimes had no key).
    let mut on_master = cluster.connection(old_master);
    let _: () = on_master.set(key, "before").unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query(&mut on_master)
        .unwrap();
    assert_eq!(acked, 1);

    cluster.kill(old_master);
    let killed_at = Instant::now();
    cluster.wait_for_failover(old_master);
    eprintln!("failover done {:?} after the kill", killed_at.elapsed());
    assert_eq!(cluster.master_for_key(key), replica);
    let read: String = cluster.connection(replica).get(key).unwrap();
    assert_eq!(read, "before");

    let restarted_at = Instant::now();
    cluster.restart(old_master);
    eprintln!(
        "old master rejoined {:?} after its restart",
        restarted_at.elapsed()
    );
    assert_eq!(cluster.replicas_of(replica), vec![old_master]);
    let role: String = redis::cmd("ROLE")
        .query::<Vec<redis::Value>>(&mut cluster.connection(old_master))
        .map(|role| match &role[0] {
            redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            other => format!("{other:?}"),
        })
        .unwrap();
    assert_eq!(role, "slave");

    // A fresh cluster client finds the new layout.
    let mut client = cluster.cluster_connection();
    let _: () = client.set(key, "after").unwrap();
    let read: String = client.get(key).unwrap();
    assert_eq!(read, "after");
    eprintln!("whole cluster test {:?}", started.elapsed());
}

#[test]
fn secured_redis_cluster_speaks_only_tls_and_rotates_its_password() {
    let ca = TestCa::generate();
    let mut cluster = RedisCluster::start_secured(Secured {
        ca: ca.clone(),
        password: "first-secret".into(),
    });
    assert!(cluster.url().starts_with("rediss://127.0.0.1:"));
    assert_eq!(cluster.masters().len(), 3, "{}", cluster.cluster_nodes());
    let key = "harness:{secured}";
    let mut client = cluster.cluster_connection();
    let _: () = client.set(key, "over tls").unwrap();
    let read: String = cluster.query_following_moved(redis::cmd("GET").arg(key));
    assert_eq!(read, "over tls");

    // No plain text on a node's port, and no command without the password.
    let port = cluster.port(0);
    let plain = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .unwrap()
        .get_connection_with_timeout(Duration::from_secs(2))
        .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection));
    assert!(plain.is_err(), "plain text answered: {plain:?}");
    let tls_only = |password: &str| {
        let url = if password.is_empty() {
            format!("rediss://127.0.0.1:{port}")
        } else {
            format!("rediss://:{password}@127.0.0.1:{port}")
        };
        redis::Client::build_with_tls(url, ca.client_certificates())
            .unwrap()
            .get_connection()
            .and_then(|mut connection| redis::cmd("PING").query::<String>(&mut connection))
    };
    assert!(tls_only("").is_err());
    assert_eq!(tls_only("first-secret").unwrap(), "PONG");

    // Rotation: both accepted, then only the new one, on every node; the harness follows.
    cluster.set_passwords(&["first-secret", "second-secret"]);
    assert_eq!(tls_only("first-secret").unwrap(), "PONG");
    cluster.set_passwords(&["second-secret"]);
    let refused = tls_only("first-secret").unwrap_err();
    assert_eq!(
        refused.kind(),
        redis::ErrorKind::AuthenticationFailed,
        "the old password is refused: {refused}"
    );
    assert_eq!(tls_only("second-secret").unwrap(), "PONG");
    let mut client = cluster.cluster_connection();
    let read: String = client.get(key).unwrap();
    assert_eq!(read, "over tls");
    // A replica restarted with the new password syncs again over TLS.
    let replica = cluster.replicas_of(cluster.master_for_key(key))[0];
    cluster.restart(replica);
    let mut on_replica = cluster.connection(replica);
    let _: () = redis::cmd("READONLY").query(&mut on_replica).unwrap();
    let read: String = on_replica.get(key).unwrap();
    assert_eq!(read, "over tls");
}

#[tokio::test]
async fn metadata_server_answers_only_the_metadata_flavor() {
    let server = FakeMetadataServer::start("token-1", 3600);
    let http = reqwest::Client::new();
    let url = format!(
        "{}/computeMetadata/v1/instance/service-accounts/default/token?scopes=a,b",
        server.endpoint()
    );

    let refused = http.get(&url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(refused.headers()["metadata-flavor"], "Google");
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("Missing Metadata-Flavor:Google header")
    );
    let refused = http
        .get(&url)
        .header("Metadata-Flavor", "google-ish")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert_eq!(server.token_requests(), 0);

    let answered = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    assert_eq!(answered.headers()["metadata-flavor"], "Google");
    let token: serde_json::Value = answered.json().await.unwrap();
    assert_eq!(
        token,
        serde_json::json!({"access_token": "token-1", "expires_in": 3600, "token_type": "Bearer"})
    );
    assert_eq!(server.token_requests(), 1);

    server.set_token("token-2");
    let token: serde_json::Value = http
        .get(&url)
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(token["access_token"], "token-2");
    assert_eq!(server.token_requests(), 2);

    let missing = http
        .get(format!("{}/computeMetadata/v1/nothing", server.endpoint()))
        .header("Metadata-Flavor", "Google")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn google_cloud_auth_gets_its_tokens_from_the_metadata_server() {
    use google_cloud_auth::credentials::mds::Builder;

    let server = FakeMetadataServer::start("mds-token-1", 3600);
    let credentials = Builder::default()
        .with_endpoint(server.endpoint())
        .build_access_token_credentials()
        .unwrap();
    assert_eq!(
        credentials.access_token().await.unwrap().token,
        "mds-token-1"
    );
    // Cached: still one request.
    assert_eq!(
        credentials.access_token().await.unwrap().token,
        "mds-token-1"
    );
    assert_eq!(server.token_requests(), 1);

    server.set_token("mds-token-2");
    let scoped = Builder::default()
        .with_endpoint(server.endpoint())
        .with_scopes(["https://www.googleapis.com/auth/cloud-platform"])
        .build_access_token_credentials()
        .unwrap();
    assert_eq!(scoped.access_token().await.unwrap().token, "mds-token-2");
    assert_eq!(server.token_requests(), 2);

    // The URL signer asks the metadata server for the service account's email.
    let signer = Builder::default()
        .with_endpoint(server.endpoint())
        .build_signer()
        .unwrap();
    assert_eq!(
        signer.client_email().await.unwrap(),
        FakeMetadataServer::EMAIL
    );

    eprintln!("google-cloud-auth requested: {:#?}", server.requests());
    assert!(
        server
            .requests()
            .iter()
            .all(|request| request.ends_with("-> 200")),
        "{:#?}",
        server.requests()
    );
    let host = server.host();
    drop(server);
    // Dropped: nothing listens there any more.
    assert!(
        std::net::TcpStream::connect_timeout(&host.parse().unwrap(), Duration::from_secs(1))
            .is_err()
    );
}
