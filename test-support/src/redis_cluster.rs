//! A real Redis Cluster on loopback: three masters and three replicas, six `redis-server`
//! processes on free ports, each in its own temporary directory, joined with
//! `redis-cli --cluster create`. Nodes can be killed (SIGKILL) and restarted on the same port
//! and directory, so a test can watch a failover happen and the old master rejoin.
//!
//! Nodes are addressed by index (`0..RedisCluster::NODES`), the order they were started in;
//! which of them are masters is the cluster's business (ask [`RedisCluster::masters`],
//! [`RedisCluster::master_for_key`], [`RedisCluster::replicas_of`]).
//!
//! [`RedisCluster::start_secured`] starts it as Memorystore for Redis Cluster runs with
//! in-transit encryption and AUTH: clients, the cluster bus and replication speak only TLS
//! (a certificate from a [`TestCa`](crate::redis_server::TestCa)), and every node requires
//! the password, which [`RedisCluster::set_passwords`] can rotate.

use std::{
    collections::{BTreeMap, HashSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::redis_server::Secured;

/// How long [`RedisCluster::start`] and [`RedisCluster::restart`] wait for a healthy cluster.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);
/// How long [`RedisCluster::wait_for_failover`] waits.
const FAILOVER_WITHIN: Duration = Duration::from_secs(30);
/// Every Redis Cluster has this many hash slots.
const SLOTS: usize = 16384;

pub struct RedisCluster {
    nodes: Vec<Node>,
}

struct Node {
    port: u16,
    /// The cluster bus port, set explicitly (`--cluster-port`): `port + 10000` may not exist.
    bus_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// The node's cluster ID (`CLUSTER MYID`); kept across restarts in its `nodes.conf`.
    id: String,
    /// TLS and the password, for a secured cluster (the password as the harness last set it).
    secured: Option<Secured>,
}

impl Node {
    fn client(&self) -> redis::Client {
        match &self.secured {
            None => redis::Client::open(format!("redis://127.0.0.1:{}", self.port)),
            Some(Secured { ca, password }) => redis::Client::build_with_tls(
                format!("rediss://:{password}@127.0.0.1:{}", self.port),
                ca.client_certificates(),
            ),
        }
        .expect("a client for a test cluster node")
    }

    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let connection = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))?;
        connection.set_read_timeout(Some(Duration::from_secs(5)))?;
        connection.set_write_timeout(Some(Duration::from_secs(5)))?;
        Ok(connection)
    }

    fn try_query(&self, args: &[&str]) -> redis::RedisResult<String> {
        let mut connection = self.try_connection()?;
        let mut command = redis::cmd(args[0]);
        for arg in &args[1..] {
            command.arg(*arg);
        }
        command.query(&mut connection)
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        match &self.secured {
            None => command.args(["--port", &self.port.to_string()]),
            // TLS only, on every link: clients, the cluster bus, replication.
            Some(Secured { ca, password }) => {
                command
                    .args(["--port", "0", "--tls-port", &self.port.to_string()])
                    .args(["--tls-cluster", "yes", "--tls-replication", "yes"]);
                ca.server_args(&mut command);
                command.args(["--requirepass", password, "--masterauth", password])
            }
        };
        let child = command
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
                "--appendonly",
                "no",
                // A replica's full sync starts at once, not after the default 5 s wait for
                // more replicas to share the transfer.
                "--repl-diskless-sync-delay",
                "0",
                "--save",
                "",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
                "--bind",
                "127.0.0.1",
            ])
            .args(["--cluster-port", &self.bus_port.to_string()])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts (Debian: apt-get install redis-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.try_query(&["PING"]) {
                Ok(_) => return,
                Err(error) if Instant::now() > deadline => panic!(
                    "cluster node redis-server on port {} did not answer PING: {error}",
                    self.port
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One line of `CLUSTER NODES`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    flags: Vec<String>,
    /// The master's ID, for a replica.
    master: Option<String>,
    /// Inclusive slot ranges it serves (importing/migrating markers left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 8, "a CLUSTER NODES line: {line}");
            let slots = fields[8..]
                .iter()
                .filter(|slot| !slot.starts_with('['))
                .map(|slot| match slot.split_once('-') {
                    Some((from, to)) => (from.parse().unwrap(), to.parse().unwrap()),
                    None => {
                        let only = slot.parse().unwrap();
                        (only, only)
                    }
                })
                .collect();
            NodeLine {
                id: fields[0].to_owned(),
                flags: fields[2].split(',').map(str::to_owned).collect(),
                master: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            }
        })
        .collect()
}

/// The slot owners a `CLUSTER NODES` view names: owner ID -> its slot ranges, sorted; and
/// how many slots they cover.
fn slot_owners(view: &[NodeLine]) -> (BTreeMap<String, Vec<(u16, u16)>>, usize) {
    let mut owners = BTreeMap::new();
    let mut covered = 0;
    for line in view.iter().filter(|line| !line.slots.is_empty()) {
        let mut slots = line.slots.clone();
        slots.sort_unstable();
        covered += slots
            .iter()
            .map(|(from, to)| usize::from(to - from) + 1)
            .sum::<usize>();
        owners.insert(line.id.clone(), slots);
    }
    (owners, covered)
}

fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .filter_map(|line| line.trim().split_once(':'))
        .find(|(key, _)| *key == field)
        .map(|(_, value)| value)
}

impl RedisCluster {
    /// How many nodes the cluster has: 3 masters, each with 1 replica.
    pub const NODES: usize = 6;

    /// Starts six cluster-enabled `redis-server`s (no persistence, 1 s node timeout), joins
    /// them with `redis-cli --cluster create ... --cluster-replicas 1 --cluster-yes`, and waits
    /// (up to 20 s) until every node reports `cluster_state:ok` with all 16384 slots assigned,
    /// all nodes agree on who serves which slots, and every replica's link to its master is up.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// Starts the cluster as [`RedisCluster::start`] does, but speaking only TLS (clients on
    /// each node's port, the cluster bus and replication, with `secured.ca`'s certificate; no
    /// client certificates asked for) and requiring `secured.password` (`requirepass`, and
    /// `masterauth` for the replicas).
    pub fn start_secured(secured: Secured) -> Self {
        Self::start_with(Some(secured))
    }

    fn start_with(secured: Option<Secured>) -> Self {
        let mut taken = HashSet::new();
        let mut fresh_port = || loop {
            let port = crate::free_port();
            if taken.insert(port) {
                return port;
            }
        };
        let mut nodes: Vec<Node> = (0..Self::NODES)
            .map(|_| Node {
                port: fresh_port(),
                bus_port: fresh_port(),
                dir: crate::temp_dir("redis-cluster-node"),
                child: None,
                id: String::new(),
                secured: secured.clone(),
            })
            .collect();
        for node in &mut nodes {
            node.launch();
            node.id = node
                .try_query(&["CLUSTER", "MYID"])
                .expect("CLUSTER MYID on a cluster-enabled node");
        }
        let cluster = Self { nodes };

        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port))
            .collect();
        let mut redis_cli = Command::new("redis-cli");
        if let Some(Secured { ca, password }) = &secured {
            redis_cli
                .args(["--tls", "--cacert"])
                .arg(&ca.ca_cert)
                .args(["-a", password, "--no-auth-warning"]);
        }
        let mut create = redis_cli
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("redis-cli runs (Debian: apt-get install redis-tools)");
        // redis-cli waits for the nodes to meet for as long as it takes; nodes that cannot
        // reach each other's cluster bus would hang the test.
        let deadline = Instant::now() + HEALTHY_WITHIN;
        while create.try_wait().expect("waiting for redis-cli").is_none() {
            if Instant::now() > deadline {
                let _ = create.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let output = create.wait_with_output().expect("redis-cli's output");
        assert!(
            output.status.success(),
            "redis-cli --cluster create {addrs:?} failed or took over {HEALTHY_WITHIN:?} \
             ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        cluster.wait_until_healthy();
        cluster
    }

    /// The URL of node 0, `redis://127.0.0.1:port` (`rediss://` for a secured cluster, without
    /// the password): the seed a cluster client is given.
    pub fn url(&self) -> String {
        self.node_url(0)
    }

    /// The URLs of all nodes, by index (running or not).
    pub fn urls(&self) -> Vec<String> {
        (0..self.nodes.len()).map(|i| self.node_url(i)).collect()
    }

    /// The URL of node `index`.
    pub fn node_url(&self, index: usize) -> String {
        let scheme = if self.secured().is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}", self.nodes[index].port)
    }

    /// TLS and the current password of a secured cluster.
    pub fn secured(&self) -> Option<&Secured> {
        self.nodes[0].secured.as_ref()
    }

    /// On every running node, makes `passwords` the ones the default user is accepted with
    /// (the old ones are dropped, so connections still on one of them fail at their next
    /// AUTH), and the last of them the replicas' `masterauth` and the harness's own password.
    /// A node started later (a restart) requires the last one only.
    pub fn set_passwords(&mut self, passwords: &[&str]) {
        let newest = *passwords.last().expect("at least one password");
        let indexes: Vec<usize> = self.running().map(|(index, _)| index).collect();
        for index in indexes {
            let mut connection = self.connection(index);
            let mut acl = redis::cmd("ACL");
            acl.arg("SETUSER").arg("default").arg("resetpass");
            for password in passwords {
                acl.arg(format!(">{password}"));
            }
            let _: () = acl
                .query(&mut connection)
                .unwrap_or_else(|error| panic!("ACL SETUSER on node {index}: {error}"));
            let _: () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("masterauth")
                .arg(newest)
                .query(&mut connection)
                .unwrap_or_else(|error| panic!("CONFIG SET masterauth on node {index}: {error}"));
        }
        for node in &mut self.nodes {
            if let Some(secured) = &mut node.secured {
                newest.clone_into(&mut secured.password);
            }
        }
    }

    /// The client port of node `index`.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port
    }

    /// The cluster node ID of node `index` (stable across [`RedisCluster::restart`]).
    pub fn node_id(&self, index: usize) -> &str {
        &self.nodes[index].id
    }

    /// Whether node `index`'s process is running (not [`RedisCluster::kill`]ed).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// The index of the node at `addr` (`127.0.0.1:port`, as a `MOVED` error names it).
    pub fn index_of_addr(&self, addr: &str) -> Option<usize> {
        let port: u16 = addr.rsplit_once(':')?.1.parse().ok()?;
        self.nodes.iter().position(|node| node.port == port)
    }

    fn index_of_id(&self, id: &str) -> usize {
        self.nodes
            .iter()
            .position(|node| node.id == id)
            .unwrap_or_else(|| panic!("node ID {id} is not one of this cluster's nodes"))
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.child.is_some())
    }

    /// The IDs of the running nodes.
    fn running_ids(&self) -> HashSet<&str> {
        self.running().map(|(_, node)| node.id.as_str()).collect()
    }

    /// `CLUSTER NODES` as the first running node answers it (for assertions and messages).
    pub fn cluster_nodes(&self) -> String {
        let (index, node) = self.running().next().expect("a running cluster node");
        node.try_query(&["CLUSTER", "NODES"])
            .unwrap_or_else(|error| panic!("CLUSTER NODES on node {index}: {error}"))
    }

    /// `CLUSTER NODES` from every running node, labelled, for a panic message.
    fn every_view(&self) -> String {
        self.running()
            .map(|(index, node)| {
                let view = node
                    .try_query(&["CLUSTER", "NODES"])
                    .unwrap_or_else(|error| format!("(no answer: {error})\n"));
                format!("-- node {index} (port {}) sees:\n{view}", node.port)
            })
            .collect()
    }

    /// The index of the node that is currently master for `key`'s slot (`CLUSTER KEYSLOT`),
    /// as the first running node's `CLUSTER NODES` tells it. Right after a kill, before
    /// [`RedisCluster::wait_for_failover`], that may still be the killed node.
    pub fn master_for_key(&self, key: &str) -> usize {
        let (_, node) = self.running().next().expect("a running cluster node");
        let mut connection = node
            .try_connection()
            .expect("a connection to a cluster node");
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut connection)
            .expect("CLUSTER KEYSLOT");
        let view = parse_nodes(&self.cluster_nodes());
        let owner = view
            .iter()
            .find(|line| {
                line.slots
                    .iter()
                    .any(|&(from, to)| (from..=to).contains(&slot))
            })
            .unwrap_or_else(|| {
                panic!(
                    "no node serves slot {slot} (key {key:?}):\n{}",
                    self.cluster_nodes()
                )
            });
        self.index_of_id(&owner.id)
    }

    /// The indexes of the nodes that serve slots (masters), as the first running node sees it.
    pub fn masters(&self) -> Vec<usize> {
        let mut masters: Vec<usize> = parse_nodes(&self.cluster_nodes())
            .iter()
            .filter(|line| !line.slots.is_empty())
            .map(|line| self.index_of_id(&line.id))
            .collect();
        masters.sort_unstable();
        masters
    }

    /// The indexes of the nodes listed as replicas of node `master`, as the first running node
    /// sees it (a killed replica stays listed, flagged `fail`).
    pub fn replicas_of(&self, master: usize) -> Vec<usize> {
        let master_id = self.node_id(master);
        let mut replicas: Vec<usize> = parse_nodes(&self.cluster_nodes())
            .iter()
            .filter(|line| line.has_flag("slave") && line.master.as_deref() == Some(master_id))
            .map(|line| self.index_of_id(&line.id))
            .collect();
        replicas.sort_unstable();
        replicas
    }

    /// Stops node `index` abruptly (SIGKILL). Nothing is persisted, so its data is gone; its
    /// `nodes.conf` (written on every configuration change) stays.
    pub fn kill(&mut self, index: usize) {
        self.nodes[index].kill();
    }

    /// Starts node `index` again (killing it first if it runs) on the same port and directory,
    /// so it rejoins with its `nodes.conf`: an old master whose slots were failed over comes
    /// back as a replica of the promoted node. Waits (up to 20 s) for the cluster to be
    /// healthy again, as [`RedisCluster::start`] does.
    pub fn restart(&mut self, index: usize) {
        self.nodes[index].kill();
        self.nodes[index].launch();
        self.wait_until_healthy();
    }

    /// Waits (up to 30 s) until every surviving node reports `cluster_state:ok` and sees all
    /// 16384 slots served by running nodes, none by `killed`, and all agree on who serves
    /// which. Panics with every node's `CLUSTER NODES` on timeout. `killed` must have been
    /// [`RedisCluster::kill`]ed.
    pub fn wait_for_failover(&self, killed: usize) {
        assert!(
            !self.is_running(killed),
            "wait_for_failover({killed}): node {killed} is running; kill it first"
        );
        let running_ids = self.running_ids();
        let deadline = Instant::now() + FAILOVER_WITHIN;
        let started = Instant::now();
        loop {
            let failed_over = self.check_views(|view| {
                let (owners, covered) = slot_owners(view);
                if covered != SLOTS {
                    return Err(format!("{covered} slots served"));
                }
                match owners.keys().find(|id| !running_ids.contains(id.as_str())) {
                    Some(id) => Err(format!("slots still served by stopped node {id}")),
                    None => Ok(()),
                }
            });
            match failed_over {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => panic!(
                    "no failover of node {killed} within {:?}: {why}\n{}",
                    started.elapsed(),
                    self.every_view()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits (up to 20 s) until the running nodes make a healthy cluster: each reports
    /// `cluster_state:ok` with all 16384 slots assigned, none flags a running node as failing
    /// (`fail` or `fail?`), all agree on who serves which slots, and each running replica's
    /// `master_link_status` is `up`. Panics with every node's `CLUSTER NODES` on timeout.
    pub fn wait_until_healthy(&self) {
        let running_ids = self.running_ids();
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let started = Instant::now();
        loop {
            let healthy = self
                .check_views(|view| {
                    let (_, covered) = slot_owners(view);
                    if covered != SLOTS {
                        return Err(format!("{covered} slots served"));
                    }
                    for line in view {
                        let failing = line.has_flag("fail") || line.has_flag("fail?");
                        if failing && running_ids.contains(line.id.as_str()) {
                            return Err(format!("running node {} flagged failing", line.id));
                        }
                    }
                    if let Some(missing) = running_ids
                        .iter()
                        .find(|id| !view.iter().any(|line| line.id == **id))
                    {
                        return Err(format!("node {missing} unknown"));
                    }
                    Ok(())
                })
                .and_then(|()| self.check_replication());
            match healthy {
                Ok(()) => return,
                Err(why) if Instant::now() > deadline => panic!(
                    "the test Redis Cluster was not healthy within {:?}: {why}\n{}",
                    started.elapsed(),
                    self.every_view()
                ),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Checks every running node: `cluster_state:ok`, `cluster_slots_assigned:16384`, its
    /// `CLUSTER NODES` view passes `check`, and all views name the same slot owners and the
    /// same master for each running replica. (A replica knows its master as soon as it is
    /// told `CLUSTER REPLICATE`, and its link can be up, while another node still lists it
    /// as a master without slots until gossip reaches it.)
    fn check_views(&self, check: impl Fn(&[NodeLine]) -> Result<(), String>) -> Result<(), String> {
        let running_ids = self.running_ids();
        type Layout = (
            BTreeMap<String, Vec<(u16, u16)>>,
            BTreeMap<String, Option<String>>,
        );
        let mut agreed: Option<Layout> = None;
        for (index, node) in self.running() {
            let info = node
                .try_query(&["CLUSTER", "INFO"])
                .map_err(|error| format!("CLUSTER INFO on node {index}: {error}"))?;
            let state = info_field(&info, "cluster_state");
            if state != Some("ok") {
                return Err(format!("node {index} reports cluster_state:{state:?}"));
            }
            let assigned = info_field(&info, "cluster_slots_assigned");
            if assigned != Some("16384") {
                return Err(format!(
                    "node {index} reports cluster_slots_assigned:{assigned:?}"
                ));
            }
            let view = parse_nodes(
                &node
                    .try_query(&["CLUSTER", "NODES"])
                    .map_err(|error| format!("CLUSTER NODES on node {index}: {error}"))?,
            );
            check(&view).map_err(|why| format!("node {index}: {why}"))?;
            let (owners, _) = slot_owners(&view);
            let replica_of: BTreeMap<String, Option<String>> = view
                .iter()
                .filter(|line| running_ids.contains(line.id.as_str()))
                .map(|line| {
                    let master = line.master.clone().filter(|_| line.has_flag("slave"));
                    (line.id.clone(), master)
                })
                .collect();
            match &agreed {
                None => agreed = Some((owners, replica_of)),
                Some((first, _)) if *first != owners => {
                    return Err(format!("node {index} disagrees on slot owners"));
                }
                Some((_, first)) if *first != replica_of => {
                    return Err(format!("node {index} disagrees on who replicates whom"));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Every running replica's link to its master is up.
    fn check_replication(&self) -> Result<(), String> {
        for (index, node) in self.running() {
            let info = node
                .try_query(&["INFO", "replication"])
                .map_err(|error| format!("INFO replication on node {index}: {error}"))?;
            if info_field(&info, "role") == Some("slave") {
                let link = info_field(&info, "master_link_status");
                if link != Some("up") {
                    return Err(format!("replica {index} has master_link_status:{link:?}"));
                }
            }
        }
        Ok(())
    }

    /// A plain (non-cluster) synchronous connection to node `index`, for assertions on that
    /// node alone: a key another node serves answers `MOVED`; on a replica, send `READONLY`
    /// first to read.
    pub fn connection(&self, index: usize) -> redis::Connection {
        self.nodes[index]
            .try_connection()
            .unwrap_or_else(|error| panic!("a connection to cluster node {index}: {error}"))
    }

    /// Runs `command` on the first running node, following `MOVED` redirects (up to 5) to the
    /// node that serves the key, over plain node connections.
    pub fn query_following_moved<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> T {
        let (mut index, _) = self.running().next().expect("a running cluster node");
        for _ in 0..5 {
            match command.query(&mut self.connection(index)) {
                Ok(value) => return value,
                Err(error) => match error.redirect_node() {
                    Some((addr, _slot)) => {
                        index = self.index_of_addr(addr).unwrap_or_else(|| {
                            panic!("MOVED to {addr}, not a node of this cluster")
                        });
                    }
                    None => panic!("a command on cluster node {index}: {error}"),
                },
            }
        }
        panic!("more than 5 MOVED redirects:\n{}", self.cluster_nodes());
    }

    /// A cluster client seeded with every running node (with TLS and the password, for a
    /// secured cluster).
    pub fn cluster_client(&self) -> redis::cluster::ClusterClient {
        let seeds: Vec<String> = self.running().map(|(i, _)| self.node_url(i)).collect();
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds);
        if let Some(Secured { ca, password }) = self.secured() {
            builder = builder
                .password(password.clone())
                .certs(ca.client_certificates());
        }
        builder
            .build()
            .expect("a cluster client for the test cluster")
    }

    /// A synchronous cluster connection (slot-routed, follows redirects).
    pub fn cluster_connection(&self) -> redis::cluster::ClusterConnection {
        self.cluster_client()
            .get_connection()
            .expect("a cluster connection to the test cluster")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
            let _ = std::fs::remove_dir_all(&node.dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes_lines() {
        let text = "\
a 127.0.0.1:1@2 myself,master - 0 0 1 connected 0-5460 [5461->-b]
b 127.0.0.1:3@4 master - 0 0 2 connected 5461 5462-16383
c 127.0.0.1:5@6 slave,fail a 0 0 1 disconnected
";
        let view = parse_nodes(text);
        assert_eq!(view.len(), 3);
        assert_eq!(view[0].slots, vec![(0, 5460)]);
        assert!(view[0].has_flag("master") && view[0].has_flag("myself"));
        assert_eq!(view[1].slots, vec![(5461, 5461), (5462, 16383)]);
        assert_eq!(view[2].master.as_deref(), Some("a"));
        assert!(view[2].has_flag("fail") && view[2].slots.is_empty());
        let (owners, covered) = slot_owners(&view);
        assert_eq!(covered, SLOTS);
        assert_eq!(owners.len(), 2);
    }
}
