//! How the sidecar reaches Redis, as Google provisions it:
//!
//! - **Memorystore for Redis** (one primary, `REDIS_MODE=standalone`): `redis://` or
//!   `rediss://` (TLS, as in-transit encryption requires), the server's CA from
//!   `REDIS_CA_FILE` (else the system's roots), and AUTH from the URL or from
//!   `REDIS_USERNAME`/`REDIS_PASSWORD` (a Secret Manager secret is usually mounted as an
//!   environment variable, not spliced into a URL).
//! - **Memorystore for Valkey / Redis Cluster** (`REDIS_MODE=cluster`): the cluster-aware
//!   client, seeded with any one node or the discovery endpoint; it follows MOVED/ASK and
//!   re-reads the topology after a failover. Every key of a deployment carries one hash tag
//!   (see [`key_prefix`]), so each script stays in one slot.
//! - **IAM authentication** (`REDIS_AUTH_MODE=iam`): the password is an OAuth access token of
//!   the service's identity (Application Default Credentials: the metadata server on Cloud
//!   Run). When the token is refreshed, every open connection re-authenticates with the new
//!   one and new connections use it ([`IamTokens`]).
//!
//! Nothing here connects: connections are made on first use and again after every failure, so
//! a wrong CA or password shows up as `/readyz`'s reason (see [`explain`]) rather than as a
//! crash loop while Redis is merely slow to come up.

use std::{path::Path, pin::Pin, time::Duration};

use futures::Stream;
use redis::{
    Client, ConnectionInfo, IntoConnectionInfo, RedisError, RedisFuture, TlsCertificates, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    auth::{BasicAuth, StreamingCredentialsProvider},
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr},
};

/// Whether Redis is one primary (with or without replicas) or a cluster of shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One primary: Memorystore for Redis, a local redis-server.
    Standalone,
    /// Cluster mode: Memorystore for Valkey, Memorystore for Redis Cluster.
    Cluster,
}

/// Where the AUTH password comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// The password in REDIS_URL or REDIS_PASSWORD, if any.
    Password,
    /// Memorystore IAM authentication: an access token of the service's identity.
    Iam,
}

/// Why the Redis settings cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error(
        "REDIS_URL is not a Redis URL ({0}); write it like redis://10.0.0.3:6379 or rediss://10.0.0.3:6378"
    )]
    Url(String),
    #[error("cannot read REDIS_CA_FILE {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error(
        "REDIS_CA_FILE {0} holds no PEM certificate (it should start with -----BEGIN CERTIFICATE-----)"
    )]
    NotPem(String),
    #[error("cannot set up TLS for Redis: {0}")]
    Tls(String),
    #[error(
        "REDIS_AUTH_MODE=iam needs Application Default Credentials (on Cloud Run: the service's \
         identity, from the metadata server): {0}"
    )]
    Iam(String),
}

/// Everything that says how to reach Redis.
#[derive(Debug, Clone, Copy)]
pub struct RedisSettings<'a> {
    pub url: &'a str,
    pub ca_file: Option<&'a Path>,
    pub username: Option<&'a str>,
    pub password: Option<&'a str>,
    pub mode: RedisMode,
    pub auth: AuthMode,
}

impl<'a> RedisSettings<'a> {
    /// A plain standalone server at `url`, credentials (if any) in the URL.
    pub fn url(url: &'a str) -> Self {
        Self {
            url,
            ca_file: None,
            username: None,
            password: None,
            mode: RedisMode::Standalone,
            auth: AuthMode::Password,
        }
    }
}

/// The key prefix a deployment's keys get. In cluster mode every key must share one hash tag,
/// so that each script (which touches a job's record, the queue and the recent list at once)
/// stays in one slot: the prefix becomes the tag, `{mcp:}job:…`, unless it already has one.
pub fn key_prefix(prefix: &str, mode: RedisMode) -> String {
    let tagged = prefix
        .find('{')
        .is_some_and(|open| prefix[open + 1..].find('}').is_some_and(|len| len > 0));
    match mode {
        RedisMode::Cluster if !tagged => format!("{{{prefix}}}"),
        _ => prefix.to_owned(),
    }
}

/// A Redis to connect to: one server or a cluster, with its TLS and credentials. Cheap to
/// clone; connects nothing until a connection is used.
#[derive(Clone)]
pub struct Redis {
    target: Target,
    /// Set in IAM mode: where every connection gets (and renews) its password.
    iam: Option<IamTokens>,
}

#[derive(Clone)]
enum Target {
    Standalone(Box<Client>),
    Cluster(Box<ClusterClients>),
}

#[derive(Clone)]
struct ClusterClients {
    /// RESP2, for commands and scripts.
    commands: ClusterClient,
    /// RESP3, for the pub/sub subscription (the cluster client delivers pushes only so).
    pushes: ClusterClient,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("iam", &self.iam.is_some())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// A client for these settings (reads the CA file; contacts nothing).
    pub fn open(settings: RedisSettings<'_>) -> Result<Self, ConnectionError> {
        // The URL may hold a password: errors describe it without echoing it.
        let mut info = settings
            .url
            .into_connection_info()
            .map_err(|error| ConnectionError::Url(error.to_string()))?;
        let mut redis = info.redis_settings().clone();
        if let Some(username) = settings.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = settings.password {
            redis = redis.set_password(password);
        }
        info = info.set_redis_settings(redis);
        let root_cert = settings.ca_file.map(read_ca).transpose()?;
        let iam = match settings.auth {
            AuthMode::Password => None,
            AuthMode::Iam => Some(IamTokens::from_environment()?),
        };
        let target = match settings.mode {
            RedisMode::Standalone => {
                Target::Standalone(Box::new(standalone_client(info, root_cert)?))
            }
            RedisMode::Cluster => Target::Cluster(Box::new(ClusterClients {
                commands: cluster_client(&info, root_cert.clone(), iam.as_ref(), false)?,
                pushes: cluster_client(&info, root_cert, iam.as_ref(), true)?,
            })),
        };
        Ok(Self { target, iam })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// A multiplexed connection that connects on first use and reconnects after failures,
    /// waiting at most `response_timeout` for each answer.
    pub fn connection(&self, response_timeout: Duration) -> Result<Connection, RedisError> {
        match &self.target {
            Target::Standalone(client) => {
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(response_timeout))
                    .set_number_of_retries(1)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_millis(500));
                if let Some(iam) = &self.iam {
                    config = config.set_credentials_provider(iam.clone());
                }
                Ok(Connection::Standalone(
                    ConnectionManager::new_lazy_with_config((**client).clone(), config)?,
                ))
            }
            Target::Cluster(clients) => Ok(Connection::Cluster(
                clients.commands.get_pending_async_connection_with_config(
                    ClusterConfig::new()
                        .set_connection_timeout(Duration::from_secs(1))
                        .set_response_timeout(response_timeout),
                ),
            )),
        }
    }

    /// Subscribes to `channel`; messages (and, in cluster mode, re-subscriptions) arrive on
    /// the returned stream, which ends when the subscription is lost.
    pub async fn subscribe(&self, channel: &str) -> Result<Subscription, RedisError> {
        match &self.target {
            Target::Standalone(client) => {
                let client = match &self.iam {
                    // A pub/sub connection takes no credentials provider: it authenticates with
                    // the token current now, and a new one is made after any disconnect.
                    Some(iam) => {
                        let token = iam.current().await?;
                        let info = client.get_connection_info().clone().set_redis_settings(
                            client
                                .get_connection_info()
                                .redis_settings()
                                .clone()
                                .set_username(IAM_USER)
                                .set_password(token.password()),
                        );
                        Client::open(info)?
                    }
                    None => (**client).clone(),
                };
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Ok(Subscription::Standalone(pubsub))
            }
            Target::Cluster(clients) => {
                let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
                let mut connection = clients
                    .pushes
                    .get_async_connection_with_config(
                        ClusterConfig::new()
                            .set_connection_timeout(Duration::from_secs(1))
                            .set_push_sender(sender),
                    )
                    .await?;
                connection.subscribe(channel).await?;
                Ok(Subscription::Cluster {
                    _connection: connection,
                    pushes: receiver,
                })
            }
        }
    }
}

/// What [`Redis::subscribe`] delivers.
pub enum Subscription {
    Standalone(redis::aio::PubSub),
    Cluster {
        /// Kept alive: the subscription lives on its connections.
        _connection: ClusterConnection,
        pushes: tokio::sync::mpsc::UnboundedReceiver<redis::PushInfo>,
    },
}

/// One thing a subscription delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    /// A message's payload.
    Message(String),
    /// The client subscribed again (after a reconnect or failover): messages may have been
    /// missed in between.
    Resubscribed,
}

impl Subscription {
    /// The next delivery; `None` once the subscription is gone.
    pub async fn next(&mut self) -> Option<Delivered> {
        use futures::StreamExt;
        match self {
            Self::Standalone(pubsub) => loop {
                let message = pubsub.on_message().next().await?;
                if let Ok(payload) = message.get_payload::<String>() {
                    return Some(Delivered::Message(payload));
                }
            },
            Self::Cluster { pushes, .. } => {
                loop {
                    let push = pushes.recv().await?;
                    match push.kind {
                        redis::PushKind::Message => {
                            if let Some(payload) = push.data.get(1).and_then(|value| {
                                redis::from_redis_value::<String>(value.clone()).ok()
                            }) {
                                return Some(Delivered::Message(payload));
                            }
                        }
                        redis::PushKind::Subscribe => return Some(Delivered::Resubscribed),
                        _ => {}
                    }
                }
            }
        }
    }
}

/// A multiplexed connection to a server or a cluster. Every command API of the crate works on
/// it (it is a [`ConnectionLike`]).
#[derive(Clone)]
pub enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(connection) => connection.req_packed_command(cmd),
            Self::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(connection) => connection.get_db(),
            Self::Cluster(connection) => connection.get_db(),
        }
    }
}

impl Connection {
    /// `WAIT replicas timeout` on the connection that wrote `key` (in a cluster: the primary
    /// holding its slot): how many replicas have acknowledged this connection's writes.
    pub async fn wait_for_replicas(
        &mut self,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> Result<u64, RedisError> {
        let mut wait = redis::cmd("WAIT");
        wait.arg(replicas)
            .arg(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
        match self {
            Self::Standalone(connection) => wait.query_async(connection).await,
            Self::Cluster(connection) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(
                    Route::with_key(key, SlotAddr::Master),
                ));
                let value = connection.route_command(wait, route).await?;
                Ok(redis::from_redis_value(value)?)
            }
        }
    }
}

fn read_ca(ca_file: &Path) -> Result<Vec<u8>, ConnectionError> {
    let shown = ca_file.display().to_string();
    let pem = std::fs::read(ca_file).map_err(|error| ConnectionError::CaFile {
        path: shown.clone(),
        reason: error.to_string(),
    })?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|window| window == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(ConnectionError::NotPem(shown));
    }
    Ok(pem)
}

fn standalone_client(
    info: ConnectionInfo,
    root_cert: Option<Vec<u8>>,
) -> Result<Client, ConnectionError> {
    match root_cert {
        None => Client::open(info).map_err(|error| ConnectionError::Url(error.to_string())),
        Some(root_cert) => Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
        .map_err(|error| ConnectionError::Tls(error.to_string())),
    }
}

fn cluster_client(
    seed: &ConnectionInfo,
    root_cert: Option<Vec<u8>>,
    iam: Option<&IamTokens>,
    resp3: bool,
) -> Result<ClusterClient, ConnectionError> {
    let mut builder = ClusterClientBuilder::new(vec![seed.clone()])
        .connection_timeout(Duration::from_secs(1))
        .retries(3)
        .min_retry_wait(50)
        .max_retry_wait(500);
    if let Some(root_cert) = root_cert {
        builder = builder.certs(TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        });
    }
    if let Some(iam) = iam {
        builder = builder.set_credentials_provider(iam.clone());
    }
    if resp3 {
        builder = builder.use_protocol(redis::ProtocolVersion::RESP3);
    }
    builder
        .build()
        .map_err(|error| ConnectionError::Url(error.to_string()))
}

/// The user IAM tokens authenticate as (`AUTH default <token>`).
const IAM_USER: &str = "default";
/// How often the cached token is checked for a refresh. Cheap: the credentials refresh the
/// token themselves, minutes before it expires, and answer from their cache meanwhile.
const IAM_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Memorystore IAM authentication: each connection's password is the current access token of
/// the service's identity; every connection re-authenticates when the token changes.
#[derive(Clone)]
pub struct IamTokens {
    credentials: google_cloud_auth::credentials::AccessTokenCredentials,
}

impl IamTokens {
    /// Application Default Credentials: the metadata server on Cloud Run (its address
    /// overridable with `GCE_METADATA_HOST`), a key file named by
    /// `GOOGLE_APPLICATION_CREDENTIALS`, or gcloud's user credentials.
    pub fn from_environment() -> Result<Self, ConnectionError> {
        let credentials = google_cloud_auth::credentials::Builder::default()
            .build_access_token_credentials()
            .map_err(|error| ConnectionError::Iam(error.to_string()))?;
        Ok(Self { credentials })
    }

    /// The token now, as the credentials to AUTH with.
    async fn current(&self) -> Result<BasicAuth, RedisError> {
        let token = self.credentials.access_token().await.map_err(|error| {
            RedisError::from((
                redis::ErrorKind::AuthenticationFailed,
                "cannot get an IAM access token for Redis (REDIS_AUTH_MODE=iam)",
                error.to_string(),
            ))
        })?;
        Ok(BasicAuth::new(IAM_USER.to_owned(), token.token))
    }
}

impl StreamingCredentialsProvider for IamTokens {
    /// The current token at once, then each new one as the credentials refresh it. A failure
    /// to get the first token fails the connection (named, see [`explain`]); a failure later
    /// keeps the connection on its last token and tries again.
    fn subscribe(
        &self,
    ) -> Pin<Box<dyn Stream<Item = Result<BasicAuth, RedisError>> + Send + 'static>> {
        let tokens = self.clone();
        Box::pin(futures::stream::unfold(
            (tokens, None::<String>),
            |(tokens, last)| async move {
                loop {
                    match (tokens.current().await, &last) {
                        (Ok(auth), Some(previous)) if auth.password() == previous => {}
                        (Ok(auth), _) => {
                            let password = auth.password().to_owned();
                            return Some((Ok(auth), (tokens, Some(password))));
                        }
                        (Err(error), None) => return Some((Err(error), (tokens, None))),
                        (Err(error), Some(_)) => {
                            tracing::warn!(
                                error = %error,
                                "cannot refresh the IAM token for Redis; connections keep the last one"
                            );
                        }
                    }
                    tokio::time::sleep(IAM_CHECK_EVERY).await;
                }
            },
        ))
    }
}

/// A Redis failure in words an operator can act on: the common set-up mistakes are named
/// (wrong password, a certificate the CA does not vouch for, plain text against a TLS port, a
/// cluster-mode setting against a server that is not a cluster), followed by the client's own
/// message.
pub fn explain(error: &redis::RedisError) -> String {
    let text = error.to_string();
    let lower = text.to_lowercase();
    let hint = if lower.contains("iam access token") {
        Some(
            "REDIS_AUTH_MODE=iam could not get a token: on Cloud Run the service's identity \
             comes from the metadata server; elsewhere set GOOGLE_APPLICATION_CREDENTIALS",
        )
    } else if error.kind() == redis::ErrorKind::AuthenticationFailed
        || lower.contains("wrongpass")
        || lower.contains("noauth")
    {
        Some(
            "Redis refused the credentials: check the password (and user) in REDIS_URL, \
             REDIS_PASSWORD or REDIS_USERNAME (with REDIS_AUTH_MODE=iam: that the service \
             account has the Memorystore DB connection user role)",
        )
    } else if lower.contains("certificate") || lower.contains("unknownissuer") {
        Some(
            "the Redis server's TLS certificate was not accepted: REDIS_CA_FILE must hold the \
             CA that signed it (Memorystore: the instance's server CA), and the URL's host \
             must be one the certificate names",
        )
    } else if lower.contains("cluster support disabled")
        || lower.contains("clusterconnectionnotfound")
        || lower.contains("no nodes found")
    {
        Some(
            "REDIS_MODE=cluster could not learn the cluster's layout from REDIS_URL: either \
             Redis is not reachable, or it is not in cluster mode (Memorystore for Redis is \
             not: use REDIS_MODE=standalone); for a cluster, REDIS_URL names any node or the \
             discovery endpoint",
        )
    } else if lower.contains("moved") || lower.contains("crossslot") {
        Some(
            "Redis answered as a cluster: with REDIS_MODE=standalone set REDIS_MODE=cluster \
             (Memorystore for Valkey and Memorystore for Redis Cluster run in cluster mode); \
             in cluster mode this is a failover or resharding in progress",
        )
    } else if lower.contains("connection reset")
        || lower.contains("broken pipe")
        || lower.contains("connection closed")
        || lower.contains("unexpected end of file")
        || lower.contains("eof")
    {
        Some(
            "Redis closed the connection before answering: if the server requires TLS \
             (in-transit encryption), REDIS_URL must start with rediss://",
        )
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} ({text})"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_keys_share_one_hash_tag_and_standalone_keys_keep_their_prefix() {
        assert_eq!(key_prefix("mcp:", RedisMode::Standalone), "mcp:");
        assert_eq!(key_prefix("mcp:", RedisMode::Cluster), "{mcp:}");
        // A prefix that already has a tag keeps it.
        assert_eq!(key_prefix("{prod}:mcp:", RedisMode::Cluster), "{prod}:mcp:");
        // `{}` is no tag (Redis hashes the whole key then).
        assert_eq!(key_prefix("a{}b:", RedisMode::Cluster), "{a{}b:}");
    }
}
