//! Two real Spring Cloud Netflix Eureka servers that replicate to each
//! other, for tests.
//!
//! [`EurekaCluster::start`] runs `scripts/eureka-cluster start` (the jar of
//! `tests/eureka-server/`, built by `scripts/eureka-server build` if needed):
//! peer 1 on `127.0.0.1`, peer 2 on `127.0.0.2`, each the other's replica.
//! The fixture stops both peers when dropped. Under `CI=true` a cluster that
//! cannot start fails the test; elsewhere the test is skipped with a message.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::backend::closed_port::ClosedPort;

/// A running two-peer cluster.
pub struct EurekaCluster {
    id: String,
    urls: [String; 2],
    started_in: Duration,
    /// Holds a stopped or killed peer's address (bound, never listening)
    /// until the fixture is dropped: connects are refused, and no server of
    /// a parallel test is given the port. The JVM binds through it when the
    /// peer starts again (both sockets set `SO_REUSEADDR`; this one never
    /// listens).
    reserved: [Option<ClosedPort>; 2],
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/eureka-cluster")
}

/// `CI` set to anything but empty, `false` or `0`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Runs `scripts/eureka-cluster ARGS`; its stdout lines, or an error with
/// its stderr.
fn run(args: &[&str]) -> Result<Vec<String>, String> {
    let out = Command::new(script())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script().display()))?;
    if !out.status.success() {
        return Err(format!(
            "eureka-cluster {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .collect())
}

fn parse_start(lines: &[String]) -> Result<(String, [String; 2]), String> {
    match lines {
        [id, one, two]
            if id.bytes().all(|b| b.is_ascii_digit())
                && one.starts_with("http://127.0.0.1:")
                && two.starts_with("http://127.0.0.2:") =>
        {
            Ok((id.clone(), [one.clone(), two.clone()]))
        }
        _ => Err(format!(
            "unexpected output from eureka-cluster start: {lines:?}"
        )),
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("reqwest client")
}

impl EurekaCluster {
    /// Starts both peers on free ports. `None` (test skipped) only outside
    /// CI; under `CI=true` a failure panics so the test fails.
    pub fn start() -> Option<EurekaCluster> {
        let begin = Instant::now();
        match run(&["start"]).and_then(|lines| parse_start(&lines)) {
            Ok((id, urls)) => Some(EurekaCluster {
                id,
                urls,
                started_in: begin.elapsed(),
                reserved: [None, None],
            }),
            Err(e) if in_ci() => panic!("Eureka cluster fixture is required under CI=true: {e}"),
            Err(e) => {
                eprintln!(
                    "SKIPPED: Eureka cluster fixture unavailable (set CI=true to fail instead): {e}"
                );
                None
            }
        }
    }

    /// How long [`start`](Self::start) took (both peers, in parallel).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// Peer `n`'s log (all its runs), `target/eureka-cluster/ID/peerN.log`.
    pub fn log(&self, n: usize) -> String {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target/eureka-cluster")
            .join(&self.id)
            .join(format!("peer{n}.log"));
        std::fs::read_to_string(path).unwrap_or_default()
    }

    /// Peer `n`'s base URL (`n` is 1 or 2): `http://127.0.0.N:PORT/eureka`.
    pub fn url(&self, n: usize) -> &str {
        &self.urls[n - 1]
    }

    /// Both base URLs, peer 1 first, comma-separated (the form of
    /// `server_urls` and of Spring's `defaultZone`).
    pub fn server_urls(&self) -> String {
        self.urls.join(",")
    }

    /// Stops peer `n` in an orderly way (TERM; its registry is lost). Runs
    /// the script off the async workers.
    pub async fn stop_peer(&mut self, n: usize) {
        self.stop_peer_with(n, None).await;
    }

    /// Kills peer `n` (KILL: a crash, no shutdown hooks). Runs the script
    /// off the async workers.
    pub async fn kill_peer(&mut self, n: usize) {
        self.stop_peer_with(n, Some("--kill")).await;
    }

    async fn stop_peer_with(&mut self, n: usize, how: Option<&'static str>) {
        let id = self.id.clone();
        let result = tokio::task::spawn_blocking(move || {
            let n = n.to_string();
            let mut args = vec!["stop-peer", &id, &n];
            args.extend(how);
            run(&args)
        })
        .await
        .expect("stop-peer task");
        result.unwrap_or_else(|e| panic!("{e}"));
        let addr = self.urls[n - 1]
            .strip_prefix("http://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.parse().ok());
        if let (Some(addr), None) = (addr, &self.reserved[n - 1]) {
            self.reserved[n - 1] = ClosedPort::at(addr).ok();
        }
    }

    /// Starts peer `n` again on its address and port, and waits until it
    /// answers `/eureka/apps`. Runs the script off the async workers.
    pub async fn start_peer(&mut self, n: usize) {
        let id = self.id.clone();
        let result = tokio::task::spawn_blocking(move || run(&["start-peer", &id, &n.to_string()]))
            .await
            .expect("start-peer task");
        result.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts peer `n` again (see [`start_peer`]) after `after`, in a task,
    /// while the test goes on; the task ends with the instant the peer
    /// answered.
    ///
    /// [`start_peer`]: Self::start_peer
    pub fn start_peer_later(
        &self,
        n: usize,
        after: Duration,
    ) -> tokio::task::JoinHandle<Result<Instant, String>> {
        let id = self.id.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tokio::task::spawn_blocking(move || {
                run(&["start-peer", &id, &n.to_string()]).map(|_| Instant::now())
            })
            .await
            .map_err(|e| e.to_string())?
        })
    }

    /// `(instance id, status)` of every instance of `app` that peer `n`
    /// lists, sorted; empty if it does not know the app (404); `None` if the
    /// peer does not answer.
    pub async fn statuses(&self, n: usize, app: &str) -> Option<Vec<(String, String)>> {
        let resp = client()
            .get(format!("{}/apps/{}", self.url(n), app.to_ascii_uppercase()))
            .header("Accept", "application/json")
            .send()
            .await
            .ok()?;
        if resp.status().as_u16() == 404 {
            return Some(Vec::new());
        }
        if resp.status().as_u16() != 200 {
            return None;
        }
        let body: serde_json::Value = serde_json::from_slice(&resp.bytes().await.ok()?).ok()?;
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
        Some(out)
    }

    /// Polls peer `n` every 100 ms until it lists exactly `want` for `app`;
    /// how long that took, or `None` after `bound`.
    pub async fn until_listed(
        &self,
        n: usize,
        app: &str,
        want: &[(String, String)],
        bound: Duration,
    ) -> Option<Duration> {
        let start = Instant::now();
        loop {
            if self.statuses(n, app).await.as_deref() == Some(want) {
                return Some(start.elapsed());
            }
            if start.elapsed() >= bound {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for EurekaCluster {
    fn drop(&mut self) {
        // Stopping a stopped peer is a no-op. KILL: the registries are
        // thrown away, no need for an orderly stop.
        let _ = run(&["stop", &self.id, "--kill"]);
    }
}
