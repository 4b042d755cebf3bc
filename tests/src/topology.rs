//! The suite as it is deployed: `deploy/local/topology.sh` starts every component as
//! its own `vern serve` process on PostgreSQL, with replicas of every service on
//! 127.0.0.2, 127.0.0.3, … behind one name, and the tests reach it through its gateway
//! like any client.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The name every service's replicas are reached by (see the script).
pub const NAME: &str = "vern-replicas.test";

/// A running topology; stopped (and its schemas dropped) when dropped.
pub struct Topology {
    child: Option<Child>,
    /// The schema prefix of this run.
    pub prefix: String,
    /// First port (the gateway is `base + 1`).
    pub base: u16,
    /// Replicas of each service.
    pub replicas: u8,
    /// Logs and data.
    pub dir: tempfile::TempDir,
    /// Every hop over TLS (`VERN_TOPOLOGY_TLS=1` in the environment given).
    pub tls: bool,
    /// What it was started with, for [`Topology::restart`].
    database_url: String,
    secret: String,
}

/// The six services in the script's port order.
pub const SERVICES: [&str; 6] = vern_cli::SERVICES;

impl Topology {
    /// Starts `replicas` replicas of every service and one gateway, with `secret` and
    /// `master_key`, on the PostgreSQL at `database_url`. Panics (the test fails) when
    /// it does not come up within two minutes.
    /// `env` adds configuration (`VERN_*` variables) to every component.
    pub fn start(
        replicas: u8,
        database_url: &str,
        secret: &str,
        master_key: &str,
        env: &[(&str, &str)],
    ) -> Self {
        // Ports are found free and then bound by another process: a test starting at
        // the same moment can take one in between. Such a start is tried again on
        // other ports; any other failure fails the test.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let fresh = Fresh {
                dir: tempfile::tempdir().expect("temp dir"),
                base: free_base(replicas),
                prefix: None,
            };
            match Self::try_start(replicas, database_url, secret, master_key, env, fresh) {
                Ok(t) => return t,
                Err(logs) if attempt < 4 && logs.contains("Address already in use") => {
                    eprintln!("topology ports were taken meanwhile; trying other ports");
                }
                Err(logs) => panic!("the topology exited before it was ready; logs:\n{logs}"),
            }
        }
    }

    /// Stops every component and starts them again on the same schemas, data dir and
    /// ports with `master_key` and `env` (and any `replica-<i>.env` files written into
    /// [`Topology::dir`] meanwhile): a configuration change, as a rollout makes it.
    pub fn restart(&mut self, master_key: &str, env: &[(&str, &str)]) {
        let keep = self.dir.path().join("keep");
        std::fs::write(&keep, b"").expect("keep file");
        self.stop();
        std::fs::remove_file(&keep).expect("keep file");
        let _ = std::fs::remove_file(self.dir.path().join("ready"));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        let again = Fresh {
            dir,
            base: self.base,
            prefix: Some(self.prefix.clone()),
        };
        let (url, secret) = (self.database_url.clone(), self.secret.clone());
        match Self::try_start(self.replicas, &url, &secret, master_key, env, again) {
            Ok(t) => *self = t,
            Err(logs) => panic!("the topology did not restart; logs:\n{logs}"),
        }
    }

    fn try_start(
        replicas: u8,
        database_url: &str,
        secret: &str,
        master_key: &str,
        env: &[(&str, &str)],
        fresh: Fresh,
    ) -> Result<Self, String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let bin = vern_binary();
        let Fresh { dir, base, prefix } = fresh;
        let ready = dir.path().join("ready");
        let mut cmd = Command::new("bash");
        cmd.envs(env.iter().copied());
        if let Some(p) = &prefix {
            cmd.env("VERN_TOPOLOGY_PREFIX", p);
        }
        let child = cmd
            .arg(root.join("deploy/local/topology.sh"))
            .env("VERN_BIN", &bin)
            .env("VERN_TOPOLOGY_REPLICAS", replicas.to_string())
            .env("VERN_TOPOLOGY_PORT_BASE", base.to_string())
            .env("VERN_TOPOLOGY_DATABASE_URL", database_url)
            .env("VERN_TOPOLOGY_DIR", dir.path())
            .env("VERN_TOPOLOGY_READY_FILE", &ready)
            .env("VERN_TOPOLOGY_NAME", NAME)
            .env("VERN_AUTH__HS256_SECRET", secret)
            .env("VERN_KEYS__MASTER_KEY", master_key)
            .env("VERN_LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting deploy/local/topology.sh");
        let mut t = Topology {
            child: Some(child),
            prefix: String::new(),
            base,
            replicas,
            dir,
            tls: env.contains(&("VERN_TOPOLOGY_TLS", "1")),
            database_url: database_url.to_owned(),
            secret: secret.to_owned(),
        };
        let started = Instant::now();
        loop {
            if let Ok(p) = std::fs::read_to_string(&ready)
                && !p.trim().is_empty()
            {
                t.prefix = p.trim().to_owned();
                return Ok(t);
            }
            if let Some(Ok(Some(status))) = t.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!("exit {status}\n{}", t.logs()));
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "the topology was not ready within 120 s; logs:\n{}",
                t.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The test CA, certificate and key of a TLS topology (`ca.crt`, `tls.crt`,
    /// `tls.key`).
    pub fn tls_file(&self, name: &str) -> PathBuf {
        self.dir.path().join("tls").join(name)
    }

    /// The gateway's address.
    pub fn gateway(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.base + 1))
    }

    /// The port of `service`.
    pub fn port(&self, service: &str) -> u16 {
        let i = SERVICES
            .iter()
            .position(|s| *s == service)
            .expect("a service");
        self.base + 11 + i as u16
    }

    /// The URL every component reaches `service` by (the shared name).
    pub fn url(&self, service: &str) -> String {
        let host = if self.replicas > 1 { NAME } else { "127.0.0.1" };
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}", self.port(service))
    }

    /// The address of replica `r` (0-based).
    pub fn replica_ip(&self, r: u8) -> IpAddr {
        if self.replicas > 1 {
            IpAddr::from([127, 0, 0, r + 2])
        } else {
            IpAddr::from([127, 0, 0, 1])
        }
    }

    /// The Prometheus endpoint of replica `r` of `service`.
    pub fn metrics_addr(&self, service: &str, r: u8) -> SocketAddr {
        let i = SERVICES
            .iter()
            .position(|s| *s == service)
            .expect("a service");
        SocketAddr::new(self.replica_ip(r), self.base + 21 + i as u16)
    }

    /// The schemas of this run.
    pub fn schemas(&self) -> Vec<String> {
        SERVICES
            .iter()
            .map(|s| format!("{}_{s}", self.prefix))
            .chain(std::iter::once(format!("{}_subject_keys", self.prefix)))
            .collect()
    }

    /// The data directory the processes share (dev keys).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Every component's log, for a failure message (JSON lines: no personal data).
    pub fn logs(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(self.dir.path()) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "log"))
            {
                let text = std::fs::read_to_string(&p).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                out.push_str(&format!("--- {}\n", p.display()));
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }

    /// Kills replica `r` (from 1) of `service` with SIGKILL, as a node lost or the OOM
    /// killer would; returns its pid. The other components run on.
    pub fn kill9(&self, service: &str, r: u8) -> u32 {
        let log = if self.replicas > 1 {
            format!("{service}-{r}")
        } else {
            service.to_owned()
        };
        let pid: u32 = std::fs::read_to_string(self.dir.path().join(format!("{log}.pid")))
            .expect("pid file")
            .trim()
            .parse()
            .expect("pid");
        let killed = Command::new("kill")
            .arg("-KILL")
            .arg(pid.to_string())
            .status()
            .expect("kill runs");
        assert!(
            killed.success(),
            "{service} replica {r} (pid {pid}) was running"
        );
        pid
    }

    /// Stops every component (the script's trap drops the schemas).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(30) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where a start puts its logs and data, its ports, and the schemas it reuses.
struct Fresh {
    dir: tempfile::TempDir,
    base: u16,
    prefix: Option<String>,
}

/// The `vern` binary cargo built beside this test (`cargo nextest run --workspace`
/// builds it for the CLI's own tests), or `$VERN_BIN`.
pub fn vern_binary() -> PathBuf {
    if let Ok(bin) = std::env::var("VERN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/<test> → target/<profile>/vern
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("vern"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p vern-cli --bin vern) or set VERN_BIN",
        bin.display()
    );
    bin
}

/// A port base whose ports are free on every address the topology uses.
fn free_base(replicas: u8) -> u16 {
    use std::net::TcpListener;
    let ips: Vec<IpAddr> = if replicas > 1 {
        (0..replicas)
            .map(|r| IpAddr::from([127, 0, 0, r + 2]))
            .collect()
    } else {
        vec![IpAddr::from([127, 0, 0, 1])]
    };
    for _ in 0..200 {
        // Below Linux's ephemeral range (32768–60999), where every outgoing
        // connection (to PostgreSQL, between components) takes its local port.
        let base = 20_000 + 100 * (uuid::Uuid::new_v4().as_u128() % 120) as u16;
        // Gateway, console, OpenID provider, metrics, services (the script's header).
        let ports = (1..=3).chain(20..=26).chain(11..=16).map(|o| base + o);
        let free = ports.clone().all(|p| {
            TcpListener::bind((IpAddr::from([127, 0, 0, 1]), p)).is_ok()
                && ips.iter().all(|ip| TcpListener::bind((*ip, p)).is_ok())
        });
        if free {
            return base;
        }
    }
    panic!("no free port range for the topology");
}
