//! Java test fixtures next to the Eureka server: a Spring Cloud Gateway
//! (`scripts/gateway`) and a Spring Boot service registered by the real
//! Java Eureka client (`scripts/auth-service`). Each is started by its
//! script on a free 127.0.0.1 port and stopped when dropped; under
//! `CI=true` a fixture that cannot start fails the test.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// A running Java fixture.
pub struct JavaFixture {
    script: &'static str,
    port: u16,
}

fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

impl JavaFixture {
    /// Starts `scripts/{name} start EUREKA_URL` and waits until it is ready.
    /// `None` (test skipped) only outside CI.
    pub fn start(name: &'static str, eureka_url: &str) -> Option<JavaFixture> {
        let out = Command::new(script(name))
            .arg("start")
            .arg(eureka_url)
            .output();
        let result = match out {
            Ok(out) if out.status.success() => {
                let stdout = String::from_utf8_lossy(&out.stdout);
                let last = stdout.lines().last().unwrap_or_default().trim().to_owned();
                last.strip_prefix("http://127.0.0.1:")
                    .and_then(|p| p.parse::<u16>().ok())
                    .ok_or_else(|| format!("unexpected output: {stdout}"))
            }
            Ok(out) => Err(format!(
                "{name} start failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
            Err(e) => Err(format!("cannot run scripts/{name}: {e}")),
        };
        match result {
            Ok(port) => Some(JavaFixture { script: name, port }),
            Err(e) if super::eureka::in_ci() => {
                panic!("{name} fixture is required under CI=true: {e}")
            }
            Err(e) => {
                eprintln!("SKIPPED: {name} fixture unavailable: {e}");
                None
            }
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for JavaFixture {
    fn drop(&mut self) {
        let _ = Command::new(script(self.script))
            .arg("stop")
            .arg(self.port.to_string())
            .output();
    }
}
