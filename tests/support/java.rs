//! Java test fixtures next to the Eureka server: a Spring Cloud Gateway
//! (`scripts/gateway`) and Spring Boot services registered by the real
//! Java Eureka client (`scripts/auth-service`, `scripts/user-api`). Each is
//! started by its script on free 127.0.0.1 ports and stopped when dropped;
//! under `CI=true` a fixture that cannot start fails the test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// A running Java fixture: one JVM serving one port, or a group of
/// instances (one Spring context each) on several ports.
pub struct JavaFixture {
    script: &'static str,
    /// Every port it serves; the first names it to `scripts/NAME stop`.
    ports: Vec<u16>,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// How to start one fixture: `scripts/{script} {args}`, which prints one
/// `http://127.0.0.1:PORT` line per instance (the last lines).
#[derive(Clone, Debug)]
pub struct Launch {
    pub script: &'static str,
    pub args: Vec<String>,
    /// How many instances (URL lines) it starts.
    pub instances: usize,
}

impl Launch {
    /// `scripts/{script} start EUREKA_URL {spring_args}`: one instance;
    /// `scripts/gateway` and `scripts/user-api` hand `--key=value`
    /// arguments to Spring.
    pub fn start(script: &'static str, eureka_url: &str, spring_args: Vec<String>) -> Self {
        let mut args = vec!["start".to_owned(), eureka_url.to_owned()];
        args.extend(spring_args);
        Self {
            script,
            args,
            instances: 1,
        }
    }

    /// `scripts/{script} start-group EUREKA_URL {each}`: one instance per
    /// item, all in one JVM (`scripts/user-api`: one per hint;
    /// `scripts/gateway`: one per application file).
    pub fn group(script: &'static str, eureka_url: &str, each: Vec<String>) -> Self {
        let instances = each.len();
        let mut args = vec!["start-group".to_owned(), eureka_url.to_owned()];
        args.extend(each);
        Self {
            script,
            args,
            instances,
        }
    }
}

/// Runs `launch` and reads the ports of the URLs it prints last.
fn run(launch: &Launch) -> Result<Vec<u16>, String> {
    let name = launch.script;
    let out = Command::new(script(name))
        .args(&launch.args)
        .output()
        .map_err(|e| format!("cannot run scripts/{name}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{name} {:?} failed ({}):\n{}",
            launch.args,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut ports: Vec<u16> = stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix("http://127.0.0.1:"))
        .filter_map(|rest| rest.split('/').next()?.parse().ok())
        .collect();
    ports.drain(..ports.len().saturating_sub(launch.instances));
    if ports.len() == launch.instances && !ports.is_empty() {
        Ok(ports)
    } else {
        Err(format!("unexpected output: {stdout}"))
    }
}

impl JavaFixture {
    /// Starts `scripts/{name} start EUREKA_URL` and waits until it is ready.
    /// `None` (test skipped) only outside CI.
    pub fn start(name: &'static str, eureka_url: &str) -> Option<JavaFixture> {
        Self::launch(&Launch::start(name, eureka_url, Vec::new()))
    }

    /// Runs `launch` and waits until every instance is ready. `None` (test
    /// skipped) only outside CI.
    pub fn launch(launch: &Launch) -> Option<JavaFixture> {
        match run(launch) {
            Ok(ports) => Some(JavaFixture {
                script: launch.script,
                ports,
            }),
            Err(e) if super::eureka::in_ci() => {
                panic!("{} fixture is required under CI=true: {e}", launch.script)
            }
            Err(e) => {
                eprintln!("SKIPPED: {} fixture unavailable: {e}", launch.script);
                None
            }
        }
    }

    /// Runs every launch at once, one thread each, so their JVMs boot in
    /// parallel; returns the fixtures in `launches` order once all are
    /// ready. `None` (test skipped) when one is unavailable outside CI;
    /// under `CI=true` that panics. Either way the fixtures that did start
    /// are stopped.
    pub fn launch_all(launches: &[Launch]) -> Option<Vec<JavaFixture>> {
        let joined: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = launches
                .iter()
                .map(|launch| scope.spawn(move || Self::launch(launch)))
                .collect();
            handles.into_iter().map(|h| h.join()).collect()
        });
        let mut started = Vec::with_capacity(launches.len());
        let mut panic = None;
        let mut missing = false;
        for result in joined {
            match result {
                Ok(Some(fixture)) => started.push(fixture),
                Ok(None) => missing = true,
                Err(payload) => panic = Some(payload),
            }
        }
        if let Some(payload) = panic {
            Self::stop_all(started);
            std::panic::resume_unwind(payload);
        }
        if missing {
            Self::stop_all(started);
            return None;
        }
        Some(started)
    }

    /// Stops `fixtures` at once, one thread each (a graceful Spring Boot
    /// shutdown takes a second or more). Dropping them stops them one after
    /// another.
    pub fn stop_all(fixtures: Vec<JavaFixture>) {
        std::thread::scope(|scope| {
            for fixture in fixtures {
                scope.spawn(move || drop(fixture));
            }
        });
    }

    /// `http://127.0.0.1:PORT` of the (first) instance.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The port of the (first) instance.
    pub fn port(&self) -> u16 {
        self.ports[0]
    }

    /// The ports of every instance, in the order they were asked for.
    pub fn ports(&self) -> &[u16] {
        &self.ports
    }
}

impl Drop for JavaFixture {
    fn drop(&mut self) {
        let _ = Command::new(script(self.script))
            .arg("stop")
            .arg(self.port().to_string())
            .output();
    }
}
