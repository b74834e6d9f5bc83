//! The real Spring Cloud Netflix Eureka server, for tests.
//!
//! [`EurekaFixture::start`] runs `scripts/eureka-server start` (which builds
//! the jar from `tests/eureka-server/` with Maven if needed), and the fixture
//! stops the server when dropped. Under `CI=true` a server that cannot start
//! fails the test; elsewhere the test is skipped with a message.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::backend::closed_port::ClosedPort;

/// A running Eureka server on 127.0.0.1.
pub struct EurekaFixture {
    port: u16,
    running: bool,
    /// Base URLs of the other peers of its cluster (empty: standalone).
    peers: Vec<String>,
    /// Environment variables its JVM starts with (Spring settings such as
    /// `EUREKA_SERVER_MAXTIMEFORREPLICATION`), kept for a restart.
    env: Vec<(String, String)>,
    /// Holds the port, bound and never listening, from the first
    /// [`stop`](EurekaFixture::stop) on: while the server is down, connects
    /// are refused and no server another test starts is given the port. The
    /// JVM binds through it on [`restart`](EurekaFixture::restart) (both
    /// sockets set `SO_REUSEADDR` and this one never listens).
    reserved: Option<ClosedPort>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/eureka-server")
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

fn run_start(port: Option<u16>) -> Result<u16, String> {
    run_start_with(port, &[], &[])
}

fn run_start_with(
    port: Option<u16>,
    peers: &[String],
    env: &[(String, String)],
) -> Result<u16, String> {
    let mut cmd = Command::new(script());
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    cmd.arg("start");
    if let Some(port) = port {
        cmd.arg(port.to_string());
        cmd.args(peers);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "eureka-server start failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let url = stdout.lines().last().unwrap_or_default().trim().to_owned();
    url.strip_prefix("http://127.0.0.1:")
        .and_then(|rest| rest.strip_suffix("/eureka"))
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| format!("unexpected output from eureka-server start: {stdout}"))
}

impl EurekaFixture {
    /// Starts a server on a free port. `None` (test skipped) only outside
    /// CI; under `CI=true` a failure panics so the test fails.
    pub fn start() -> Option<EurekaFixture> {
        match run_start(None) {
            Ok(port) => Some(EurekaFixture {
                port,
                running: true,
                peers: Vec::new(),
                env: Vec::new(),
                reserved: None,
            }),
            Err(e) if in_ci() => panic!("Eureka server fixture is required under CI=true: {e}"),
            Err(e) => {
                eprintln!(
                    "SKIPPED: Eureka server fixture unavailable (set CI=true to fail instead): {e}"
                );
                None
            }
        }
    }

    /// Starts a two-peer cluster on two free ports, each peer replicating
    /// to the other and syncing from it at start. `None` (test skipped)
    /// only outside CI, as [`start`](Self::start).
    pub fn start_cluster() -> Option<[EurekaFixture; 2]> {
        Self::start_cluster_with(
            |i, ports| format!("http://127.0.0.1:{}/eureka/", ports[1 - i]),
            &[],
        )
    }

    /// [`start_cluster`](Self::start_cluster) with peer `i` replicating to
    /// `peer_url(i, ports)` (a proxy to the other peer, say), each JVM
    /// started with the environment variables `env`.
    pub fn start_cluster_with(
        peer_url: impl Fn(usize, [u16; 2]) -> String,
        env: &[(&str, &str)],
    ) -> Option<[EurekaFixture; 2]> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        // Each peer must know the other's URL before it starts, so the two
        // ports are picked first and held (bound, never listening: each JVM
        // binds through its reservation) until both peers run, so no other
        // server takes one meanwhile. Should a peer still find its port
        // taken, the whole cluster is tried again on new ports.
        let mut last = String::new();
        for _ in 0..5 {
            let reserved = match (ClosedPort::new(), ClosedPort::new()) {
                (Ok(a), Ok(b)) => [a, b],
                other => panic!("no free ports: {:?}", (other.0.err(), other.1.err())),
            };
            let ports = [reserved[0].port(), reserved[1].port()];
            let mut peers = Vec::new();
            let mut taken = false;
            for (i, port) in ports.iter().enumerate() {
                let others = vec![peer_url(i, ports)];
                match run_start_with(Some(*port), &others, &env) {
                    Ok(_) => peers.push(EurekaFixture {
                        port: *port,
                        running: true,
                        peers: others,
                        env: env.clone(),
                        reserved: None,
                    }),
                    Err(e) if e.contains("already in use") || e.contains("was taken") => {
                        // (the started peer is stopped as it is dropped)
                        last = e;
                        taken = true;
                        break;
                    }
                    Err(e) if in_ci() => {
                        panic!("Eureka cluster fixture is required under CI=true: {e}")
                    }
                    Err(e) => {
                        eprintln!("SKIPPED: Eureka cluster fixture unavailable: {e}");
                        return None;
                    }
                }
            }
            if taken {
                continue;
            }
            let [first_port, second_port] = reserved;
            let mut second = peers.pop()?;
            let mut first = peers.pop()?;
            first.reserved = Some(first_port);
            second.reserved = Some(second_port);
            return Some([first, second]);
        }
        if in_ci() {
            panic!(
                "Eureka cluster fixture is required under CI=true: no free ports in 5 tries: {last}"
            );
        }
        eprintln!("SKIPPED: Eureka cluster fixture unavailable: {last}");
        None
    }

    /// `http://127.0.0.1:PORT/eureka`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/eureka", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (its registry is lost, as with a real restart).
    /// Its port stays reserved: connects to it are refused, and no server
    /// another test starts meanwhile is given it.
    pub fn stop(&mut self) {
        self.stop_process();
        if self.reserved.is_none() {
            self.reserved = ClosedPort::at(SocketAddr::from(([127, 0, 0, 1], self.port))).ok();
        }
    }

    /// Stops the server's process (the script waits until it exited).
    fn stop_process(&mut self) {
        if self.running {
            // A paused server would not see the stop.
            self.signal("-CONT");
            let _ = Command::new(script())
                .arg("stop")
                .arg(self.port.to_string())
                .output();
            self.running = false;
        }
    }

    /// Freezes the server's process (SIGSTOP): a hung peer. Connections
    /// are still accepted by the kernel, but nothing answers; the registry
    /// is kept. [`resume`](Self::resume) lets it go on.
    pub fn pause(&self) {
        assert!(self.signal("-STOP"), "cannot pause the server");
    }

    /// Lets a [`pause`](Self::pause)d server go on (SIGCONT).
    pub fn resume(&self) {
        assert!(self.signal("-CONT"), "cannot resume the server");
    }

    /// Sends `signal` to the server's process; whether it was sent.
    fn signal(&self, signal: &str) -> bool {
        let pid_file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("target/eureka-server/eureka-{}.pid", self.port));
        let Ok(pid) = std::fs::read_to_string(&pid_file) else {
            return false;
        };
        Command::new("kill")
            .arg(signal)
            .arg(pid.trim())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let port = run_start_with(Some(self.port), &self.peers, &self.env)
            .unwrap_or_else(|e| panic!("restart failed: {e}"));
        assert_eq!(port, self.port);
        self.running = true;
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client")
    }

    /// Registers an instance of `app` at 127.0.0.1:`port` through the REST
    /// API (`POST /apps/{APP}`), with id `127.0.0.1:{app}:{port}`.
    pub async fn register(&self, app: &str, port: u16) -> String {
        self.register_with(app, port, serde_json::json!({})).await
    }

    /// As [`register`](Self::register), with extra metadata.
    pub async fn register_with(&self, app: &str, port: u16, metadata: serde_json::Value) -> String {
        self.register_stamped(app, port, metadata, None).await
    }

    /// As [`register_with`](Self::register_with), with `lastDirtyTimestamp`
    /// (ms since the epoch) set to `last_dirty` when given (else the
    /// server's clock stamps it).
    pub async fn register_stamped(
        &self,
        app: &str,
        port: u16,
        metadata: serde_json::Value,
        last_dirty: Option<u64>,
    ) -> String {
        let app_upper = app.to_ascii_uppercase();
        let vip = app.to_ascii_lowercase();
        let id = format!("127.0.0.1:{vip}:{port}");
        let body = serde_json::json!({
            "instance": {
                "instanceId": id,
                "hostName": "127.0.0.1",
                "app": app_upper,
                "ipAddr": "127.0.0.1",
                "vipAddress": vip,
                "secureVipAddress": vip,
                "status": "UP",
                "port": {"$": port, "@enabled": "true"},
                "securePort": {"$": 443, "@enabled": "false"},
                "healthCheckUrl": format!("http://127.0.0.1:{port}/health"),
                "statusPageUrl": format!("http://127.0.0.1:{port}/info"),
                "homePageUrl": format!("http://127.0.0.1:{port}/"),
                "dataCenterInfo": {
                    "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                    "name": "MyOwn"
                },
                "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": 90},
                "metadata": metadata,
            }
        });
        let mut body = body;
        if let Some(stamp) = last_dirty {
            body["instance"]["lastDirtyTimestamp"] = stamp.to_string().into();
        }
        let resp = Self::client()
            .post(format!("{}/apps/{app_upper}", self.url()))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).expect("json"))
            .send()
            .await
            .expect("register request");
        assert_eq!(resp.status().as_u16(), 204, "register {id}");
        id
    }

    /// Overrides an instance's status (`PUT .../status?value=STATUS`).
    pub async fn set_status(&self, app: &str, id: &str, status: &str) {
        let resp = Self::client()
            .put(format!(
                "{}/apps/{}/{id}/status?value={status}",
                self.url(),
                app.to_ascii_uppercase()
            ))
            .send()
            .await
            .expect("status request");
        assert_eq!(resp.status().as_u16(), 200, "set status of {id}");
    }

    /// Cancels an instance (`DELETE /apps/{APP}/{id}`).
    pub async fn delete(&self, app: &str, id: &str) {
        let resp = Self::client()
            .delete(format!(
                "{}/apps/{}/{id}",
                self.url(),
                app.to_ascii_uppercase()
            ))
            .send()
            .await
            .expect("delete request");
        assert_eq!(resp.status().as_u16(), 200, "delete {id}");
    }

    /// The server's last `max` WARN and ERROR log lines (each cut to 300
    /// bytes), for a failing test's message: a replication that timed out
    /// or was dropped says so there (`ReplicationTaskProcessor`).
    pub fn warnings(&self, max: usize) -> String {
        let log = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join(format!("target/eureka-server/eureka-{}.log", self.port));
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        let mut out = format!("server {} ({}):", self.port, log.display());
        for line in &lines[lines.len().saturating_sub(max)..] {
            let mut end = line.len().min(300);
            while !line.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str("\n  ");
            out.push_str(&line[..end]);
        }
        out
    }

    /// `(instance id, status)` of every instance of `app` the server lists,
    /// sorted; empty if the server does not know the app (404).
    pub async fn statuses(&self, app: &str) -> Vec<(String, String)> {
        let resp = Self::client()
            .get(format!("{}/apps/{}", self.url(), app.to_ascii_uppercase()))
            .header("Accept", "application/json")
            .send()
            .await
            .expect("app request");
        if resp.status().as_u16() == 404 {
            return Vec::new();
        }
        assert_eq!(resp.status().as_u16(), 200, "GET app {app}");
        let body: serde_json::Value =
            serde_json::from_slice(&resp.bytes().await.expect("body")).expect("json");
        let instances = match &body["application"]["instance"] {
            serde_json::Value::Array(list) => list.clone(),
            one @ serde_json::Value::Object(_) => vec![one.clone()],
            _ => Vec::new(),
        };
        let mut out: Vec<(String, String)> = instances
            .iter()
            .map(|i| {
                (
                    i["instanceId"].as_str().unwrap_or_default().to_owned(),
                    i["status"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        out.sort();
        out
    }
}

impl Drop for EurekaFixture {
    fn drop(&mut self) {
        self.stop_process();
    }
}

/// The Eureka server over https with basic auth (tests/eureka-server-secure),
/// started by `scripts/eureka-server start-secure DIR`; stopped when
/// dropped. Under `CI=true` a server that cannot start fails the test;
/// elsewhere the test is skipped with a message.
pub struct SecureEurekaFixture {
    port: u16,
    running: bool,
}

impl SecureEurekaFixture {
    /// Starts the server on a free port with the PEM files in `dir`
    /// (`server.pem`, `server-key.pem`, optionally `client-ca.pem` with
    /// `client.pem` + `client-key.pem`: client certificates required) and
    /// one user. The password reaches the server through its environment.
    pub fn start(dir: &std::path::Path, user: &str, password: &str) -> Option<SecureEurekaFixture> {
        let started = Command::new(script())
            .arg("start-secure")
            .arg(dir)
            .env("EUREKA_USER", user)
            .env("EUREKA_PASSWORD", password)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script().display()))
            .and_then(|out| {
                let stdout = String::from_utf8_lossy(&out.stdout);
                if !out.status.success() {
                    return Err(format!(
                        "eureka-server start-secure failed ({}):\n{}",
                        out.status,
                        String::from_utf8_lossy(&out.stderr)
                    ));
                }
                let url = stdout.lines().last().unwrap_or_default().trim().to_owned();
                url.strip_prefix("https://127.0.0.1:")
                    .and_then(|rest| rest.strip_suffix("/eureka"))
                    .and_then(|p| p.parse().ok())
                    .ok_or_else(|| format!("unexpected output from start-secure: {stdout}"))
            });
        match started {
            Ok(port) => Some(SecureEurekaFixture {
                port,
                running: true,
            }),
            Err(e) if in_ci() => {
                panic!("secure Eureka server fixture is required under CI=true: {e}")
            }
            Err(e) => {
                eprintln!(
                    "SKIPPED: secure Eureka server fixture unavailable (set CI=true to fail instead): {e}"
                );
                None
            }
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `https://{userinfo}@127.0.0.1:PORT/eureka` (no `@` when `userinfo`
    /// is empty); `userinfo` is put in as given.
    pub fn url_with(&self, userinfo: &str) -> String {
        if userinfo.is_empty() {
            format!("https://127.0.0.1:{}/eureka", self.port)
        } else {
            format!("https://{userinfo}@127.0.0.1:{}/eureka", self.port)
        }
    }

    /// Stops the server.
    pub fn stop(&mut self) {
        if self.running {
            let _ = Command::new(script())
                .arg("stop")
                .arg(self.port.to_string())
                .output();
            self.running = false;
        }
    }
}

impl Drop for SecureEurekaFixture {
    fn drop(&mut self) {
        self.stop();
    }
}
