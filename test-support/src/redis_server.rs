//! A real `redis-server` on a free loopback port, in its own temporary directory; plain, or
//! as Memorystore runs it with in-transit encryption and AUTH (TLS with a CA the test makes
//! with `openssl`, and `requirepass`).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
    appendonly: bool,
    secured: Option<Secured>,
    /// The port of the primary this server replicates (`--replicaof`), if any.
    replica_of: Option<u16>,
}

/// TLS and AUTH settings of a [`RedisServer::start_secured`] server.
#[derive(Debug, Clone)]
pub struct Secured {
    pub ca: TestCa,
    pub password: String,
}

/// A certificate authority and a server certificate it signed for `127.0.0.1` and
/// `localhost` (also good as a client certificate: cluster nodes present it to each other on
/// the cluster bus and for replication), made with `openssl` in a temporary directory.
#[derive(Debug, Clone)]
pub struct TestCa {
    /// The CA's certificate (PEM): what a client trusts.
    pub ca_cert: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
}

impl TestCa {
    /// What a Redis client is given to trust the servers this CA signed for (no client
    /// certificate of its own).
    pub fn client_certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(&self.ca_cert).expect("the test CA's certificate")),
        }
    }

    /// redis-server's arguments to serve with this CA's server certificate; clients are not
    /// asked for certificates.
    pub(crate) fn server_args(&self, command: &mut Command) {
        command
            .arg("--tls-cert-file")
            .arg(&self.server_cert)
            .arg("--tls-key-file")
            .arg(&self.server_key)
            .arg("--tls-ca-cert-file")
            .arg(&self.ca_cert)
            .args(["--tls-auth-clients", "no"]);
    }

    pub fn generate() -> Self {
        let dir = crate::temp_dir("test-ca");
        let openssl = |args: &[&str]| {
            let output = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("openssl runs (Debian: apt-get install openssl)");
            assert!(
                output.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-days",
                    "2",
                    "-subj",
                    "/CN=redis-test-ca",
                ],
            ]
            .concat(),
        );
        openssl(
            &[
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .expect("write server.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ]);
        Self {
            ca_cert: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
        }
    }
}

impl RedisServer {
    /// Starts redis-server without persistence.
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// Starts redis-server; with `appendonly`, every write is fsynced to an AOF so a restart
    /// keeps acknowledged data.
    pub fn start_with(appendonly: bool) -> Self {
        Self::launched(appendonly, None)
    }

    /// Starts redis-server that speaks only TLS (its certificate signed by `secured.ca`) and
    /// requires `secured.password`, as Memorystore does with in-transit encryption and AUTH.
    pub fn start_secured(secured: Secured) -> Self {
        Self::launched(false, Some(secured))
    }

    /// Starts redis-server as a replica of `primary` (a plain one, not
    /// [`RedisServer::start_secured`]) and waits until it has synced (`master_link_status:up`),
    /// so that `WAIT 1` on the primary is answered. The primary's full sync is set to start at
    /// once (`repl-diskless-sync-delay 0`) rather than after the default 5 s.
    pub fn start_replica_of(primary: &RedisServer) -> Self {
        assert!(
            primary.secured.is_none(),
            "start_replica_of takes a plain primary"
        );
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("repl-diskless-sync-delay")
            .arg("0")
            .query(&mut primary.connection())
            .expect("CONFIG SET on the primary");
        let mut server = Self::unlaunched(false, None);
        server.replica_of = Some(primary.port);
        server.launch();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut connection = server.connection();
        loop {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut connection)
                .expect("INFO replication on the replica");
            if info
                .lines()
                .any(|line| line.trim() == "master_link_status:up")
            {
                return server;
            }
            assert!(
                Instant::now() < deadline,
                "the replica on port {} did not sync with port {} within 10 s",
                server.port,
                primary.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn launched(appendonly: bool, secured: Option<Secured>) -> Self {
        let mut server = Self::unlaunched(appendonly, secured);
        server.launch();
        server
    }

    fn unlaunched(appendonly: bool, secured: Option<Secured>) -> Self {
        Self {
            port: crate::free_port(),
            dir: crate::temp_dir("redis-test"),
            child: None,
            appendonly,
            secured,
            replica_of: None,
        }
    }

    fn launch(&mut self) {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        match &self.secured {
            None => {
                command.args(["--bind", "127.0.0.1", "--port", &port]);
            }
            Some(Secured { ca, password }) => {
                command.args(["--bind", "127.0.0.1", "--port", "0", "--tls-port", &port]);
                ca.server_args(&mut command);
                command.args(["--requirepass", password]);
            }
        }
        command
            .args([
                "--save",
                "",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        if self.appendonly {
            command.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            command.args(["--appendonly", "no"]);
        }
        let child = command
            .spawn()
            .expect("redis-server starts (Debian: apt-get install redis-server)");
        self.child = Some(child);
        self.wait_until_ready();
    }

    fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = self.client();
        while Instant::now() < deadline {
            if let Ok(mut connection) = client.get_connection()
                && redis::cmd("PING").query::<String>(&mut connection).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not answer PING", self.port);
    }

    /// The URL a client uses: `redis://127.0.0.1:port`, or for a secured server
    /// `rediss://:password@127.0.0.1:port` (its CA is in [`RedisServer::secured`]).
    pub fn url(&self) -> String {
        match &self.secured {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(secured) => format!("rediss://:{}@127.0.0.1:{}", secured.password, self.port),
        }
    }

    pub fn secured(&self) -> Option<&Secured> {
        self.secured.as_ref()
    }

    fn client(&self) -> redis::Client {
        match &self.secured {
            None => redis::Client::open(self.url()),
            Some(secured) => {
                redis::Client::build_with_tls(self.url(), secured.ca.client_certificates())
            }
        }
        .expect("a client for the test redis")
    }

    /// Stops the server abruptly (SIGKILL): whatever was not persisted is lost.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        self.kill();
        self.launch();
    }

    /// A synchronous connection for assertions on raw keys.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection()
            .expect("a connection to the test redis")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
