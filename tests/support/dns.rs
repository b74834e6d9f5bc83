//! A real DNS server for tests: dnsmasq on a free port of 127.0.0.1, with
//! records the test rewrites while it runs, and HTTP backends on other
//! loopback addresses (127.0.0.2, 127.0.0.3, ...) sharing one port, as the
//! pods of a Kubernetes headless service do.
//!
//! Address records live in an `--addn-hosts` file: [`Dnsmasq::set_hosts`]
//! rewrites it and sends SIGHUP, which makes dnsmasq re-read it and clear
//! its cache. SRV records are `--srv-host` lines of the configuration
//! file, which SIGHUP does not reload: [`Dnsmasq::set_srv`] rewrites the
//! file and restarts the process on the same port. Every local answer has
//! the TTL given to [`Dnsmasq::start`] (`--local-ttl`); names it does not
//! hold get NXDOMAIN (`--local=/#/`, no upstream servers).
//!
//! Under `CI=true` a missing dnsmasq fails the test; elsewhere the test is
//! skipped with a message (install it with `scripts/dns-server install`).
#![allow(dead_code)]

// `support::backend` loads it too, privately; a second copy is harmless.
#[allow(clippy::duplicate_mod)]
#[path = "serve.rs"]
mod serve;

use std::convert::Infallible;
use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// One SRV record: `--srv-host=name,target,port,priority,weight`.
#[derive(Debug, Clone)]
pub struct Srv {
    pub name: String,
    pub target: String,
    pub port: u16,
    pub priority: u16,
    pub weight: u16,
}

impl Srv {
    pub fn new(name: &str, target: &str, port: u16, priority: u16, weight: u16) -> Self {
        Self {
            name: name.to_owned(),
            target: target.to_owned(),
            port,
            priority,
            weight,
        }
    }
}

/// A running dnsmasq. Dropping it kills the process and removes its files.
pub struct Dnsmasq {
    dir: PathBuf,
    port: u16,
    ttl: u32,
    child: Option<Child>,
    restarts: usize,
}

/// A free port on 127.0.0.1 for both UDP and TCP (best effort: another
/// process may take it before dnsmasq binds; `start` retries).
fn free_port() -> io::Result<u16> {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        let port = udp.local_addr()?.port();
        if StdTcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free UDP+TCP port on 127.0.0.1"))
}

impl Dnsmasq {
    /// Starts dnsmasq with `hosts` (address, name) and `srv` records, every
    /// answer with TTL `ttl` seconds. `None` (test skipped) only outside CI
    /// when dnsmasq is not installed; any other failure panics.
    pub fn start(ttl: u32, hosts: &[(IpAddr, &str)], srv: &[Srv]) -> Option<Dnsmasq> {
        if let Err(e) = Command::new("dnsmasq")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
        {
            let message = format!(
                "dnsmasq is not installed ({e}); run `scripts/dns-server install` \
                 (Debian/Ubuntu: apt-get install -y dnsmasq-base)"
            );
            if in_ci() {
                panic!("dnsmasq is required under CI=true: {message}");
            }
            eprintln!("SKIPPED: {message} (set CI=true to fail instead)");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-ribbon-dns-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&dir).expect("create dnsmasq dir");
        // dnsmasq run as root drops to `nobody`, which must read the files.
        set_mode(&dir, 0o755);
        let mut server = Dnsmasq {
            dir,
            port: 0,
            ttl,
            child: None,
            restarts: 0,
        };
        server.write_hosts(hosts);
        server.write_conf(srv);
        let mut last = String::new();
        for _ in 0..5 {
            server.port = free_port().expect("free port");
            match server.spawn() {
                Ok(()) => return Some(server),
                Err(e) => last = e,
            }
        }
        panic!("dnsmasq did not start: {last}");
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), self.port)
    }

    /// Replaces every address record and makes dnsmasq re-read them
    /// (SIGHUP, which also clears its cache); while stopped, only the file
    /// is written.
    pub fn set_hosts(&self, hosts: &[(IpAddr, &str)]) {
        // Count the re-reads before the signal: dnsmasq may handle it at once.
        let want = self.log().matches("read ").count() + 1;
        self.write_hosts(hosts);
        let Some(child) = self.child.as_ref() else {
            return; // stopped: read at the next start
        };
        let pid = child.id();
        let status = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .expect("run kill -HUP");
        assert!(status.success(), "kill -HUP {pid} failed");
        // SIGHUP is handled asynchronously; wait until the log says so.
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.log().matches("read ").count() < want {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not re-read its hosts file"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Replaces every SRV record: rewrites the configuration and restarts
    /// dnsmasq on the same port (SIGHUP does not reload `--srv-host`).
    pub fn set_srv(&mut self, srv: &[Srv]) {
        self.write_conf(srv);
        self.stop();
        self.spawn().expect("restart dnsmasq");
    }

    /// Kills dnsmasq (a DNS outage): queries get ICMP port unreachable.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the current files.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn().expect("restart dnsmasq");
    }

    /// dnsmasq's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn write_hosts(&self, hosts: &[(IpAddr, &str)]) {
        let text: String = hosts
            .iter()
            .map(|(ip, name)| format!("{ip} {name}\n"))
            .collect();
        // Write then rename, so dnsmasq never reads half a file.
        let tmp = self.dir.join("hosts.tmp");
        fs::write(&tmp, text).expect("write hosts");
        set_mode(&tmp, 0o644);
        fs::rename(&tmp, self.dir.join("hosts")).expect("rename hosts");
    }

    fn write_conf(&self, srv: &[Srv]) {
        let mut text = String::from("# written by tests/support/dns.rs\n");
        for s in srv {
            text.push_str(&format!(
                "srv-host={},{},{},{},{}\n",
                s.name, s.target, s.port, s.priority, s.weight
            ));
        }
        let path = self.dir.join("dnsmasq.conf");
        fs::write(&path, text).expect("write dnsmasq.conf");
        set_mode(&path, 0o644);
    }

    fn spawn(&mut self) -> Result<(), String> {
        let pid_file = self.dir.join("pid");
        let _ = fs::remove_file(&pid_file);
        let child = Command::new("dnsmasq")
            .arg("--keep-in-foreground")
            .arg(format!("--port={}", self.port))
            .arg("--listen-address=127.0.0.1")
            .arg("--bind-interfaces")
            .arg("--no-resolv")
            .arg("--no-hosts")
            .arg("--no-negcache")
            .arg("--local=/#/")
            .arg(format!(
                "--conf-file={}",
                self.dir.join("dnsmasq.conf").display()
            ))
            .arg(format!("--addn-hosts={}", self.dir.join("hosts").display()))
            .arg(format!("--local-ttl={}", self.ttl))
            .arg(format!("--pid-file={}", pid_file.display()))
            .arg(format!("--log-facility={}", self.dir.join("log").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn dnsmasq: {e}"))?;
        self.child = Some(child);
        // Ready once it accepts TCP on its port (it binds UDP first).
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if std::net::TcpStream::connect_timeout(&self.addr(), Duration::from_millis(100))
                .is_ok()
            {
                self.restarts += 1;
                return Ok(());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let mut stderr = String::new();
                if let Some(mut child) = self.child.take() {
                    if let Some(mut err) = child.stderr.take() {
                        let _ = io::Read::read_to_string(&mut err, &mut stderr);
                    }
                }
                return Err(format!("dnsmasq exited ({status}): {stderr}"));
            }
            if Instant::now() > deadline {
                self.stop();
                return Err("dnsmasq did not listen within 5 s".to_owned());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn set_mode(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let _ = fs::set_permissions(path, fs::Permissions::from_mode(mode));
}

/// An HTTP/1 backend on `ip:port` (any 127.0.0.0/8 address) that answers
/// every request with its name and counts them. Dropping it stops it.
pub struct IpBackend {
    name: String,
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl IpBackend {
    /// Starts `name` on `ip:port` (`port` 0: a free one).
    pub async fn start(name: &str, ip: Ipv4Addr, port: u16) -> io::Result<IpBackend> {
        let listener = TcpListener::bind((ip, port)).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let (stop, stopped) = oneshot::channel();
        let body = Bytes::from(name.to_owned());
        let counter = Arc::clone(&hits);
        let task = tokio::spawn(serve::serve(
            listener,
            stopped,
            |_| {},
            move |_req| {
                counter.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
            },
        ));
        Ok(IpBackend {
            name: name.to_owned(),
            addr,
            hits,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Starts one backend per address of `ips`, all on one free port, named
    /// `b<last octet>` (`b2` for 127.0.0.2).
    pub async fn start_same_port(ips: &[Ipv4Addr]) -> io::Result<Vec<IpBackend>> {
        'retry: for _ in 0..20 {
            let mut started = Vec::new();
            let mut port = 0;
            for ip in ips {
                match IpBackend::start(&format!("b{}", ip.octets()[3]), *ip, port).await {
                    Ok(b) => {
                        port = b.addr.port();
                        started.push(b);
                    }
                    Err(_) if port != 0 => continue 'retry,
                    Err(e) => return Err(e),
                }
            }
            return Ok(started);
        }
        Err(io::Error::other("no port free on every address"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for IpBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
