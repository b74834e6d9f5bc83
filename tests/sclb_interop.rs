//! Interop with Spring Cloud LoadBalancer's request policies: a real Spring
//! Cloud Gateway and this crate, each configured from the very same
//! `application.yml` (`tests/gateway/sclb/*.yml`), balance the same requests
//! over the same three Java services registered in a real Eureka server,
//! and reach the same instances:
//!
//! - hint routing (`hint-header-name`, `hint.<serviceId>`): header
//!   `X-SC-LB-Hint` against instance metadata `hint` (SCLB 4.3 turns it on
//!   from Java only; the gateway fixture's `HintsConfiguration` does so when
//!   the file sets these keys, as the crate does);
//! - request-based sticky session (`configurations:
//!   request-based-sticky-session`, `sticky-session.instance-id-cookie-name`):
//!   cookie `sc-lb-instance-id` naming an instance id.
//!
//! The instances: `user-api:PORT` with hint `zone-a` (two) and `zone-b`
//! (one), each answering `GET /whoami` with its instance id. Every case
//! sends the same requests one after another through the gateway and
//! through the crate and asserts the exact count per instance on both:
//! both balancers round-robin over the list the policy leaves, so a batch
//! of 12 splits evenly over one, two or three instances whatever the
//! list's order (SCLB's round robin starts at a random position). The
//! gateway's SCLB instance cache (`cache.ttl` in the files) keeps its
//! list, and its order, for the whole test; the test sends nothing through
//! a gateway before the gateway's Eureka client holds all three instances.
//!
//! One test starts every JVM once: Eureka, then at the same time one JVM
//! for the three instances and one for the two gateways (one Spring
//! context each, see `scripts/user-api start-group`, `scripts/gateway
//! start-group`). (Starting Eureka alongside them was no faster on two
//! busy cores: it became the slowest to start.)
//! Under `CI=true` a missing Java or Maven fixture fails it.

mod support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use support::eureka::EurekaFixture;
use support::java::{JavaFixture, Launch};
use support::{HttpClient, counts, http_client};
use tower::ServiceExt;
use tower_ribbon::LoadBalancer;
use tower_ribbon::config::RibbonConfig;

/// The service every request goes to (its Eureka vip address).
const SERVICE: &str = "user-api";
/// Requests per case: a multiple of 1, 2 and 3, so round robin splits
/// evenly over whatever the policy leaves.
const N: usize = 12;
/// How long a gateway may take to fetch the three instances from Eureka.
const SEEN_BOUND: Duration = Duration::from_secs(30);

/// `tests/gateway/sclb/NAME`
fn config_file(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/gateway/sclb")
        .join(name)
}

/// What one request carries besides its path.
#[derive(Clone, Copy, Debug)]
enum With<'a> {
    Nothing,
    Header(&'a str, &'a str),
    Cookie(&'a str),
}

/// The same request sent through a gateway and through the crate.
struct Pair {
    name: &'static str,
    gateway: String,
    lb: LoadBalancer<HttpClient>,
    client: reqwest::Client,
}

impl Pair {
    /// Sends `N` requests carrying `with` through the gateway, then `N`
    /// through the crate; the counts of answering instance ids.
    async fn tally(&self, with: With<'_>) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        let mut gateway = BTreeMap::new();
        let mut crate_ = BTreeMap::new();
        let url = format!("{}/{SERVICE}/whoami", self.gateway);
        for _ in 0..N {
            let mut request = self.client.get(&url);
            match with {
                With::Nothing => {}
                With::Header(name, value) => request = request.header(name, value),
                With::Cookie(cookie) => request = request.header("cookie", cookie),
            }
            let key = match request.send().await {
                Ok(resp) if resp.status() == 200 => resp.text().await.unwrap_or_default(),
                Ok(resp) => format!("status {}", resp.status()),
                Err(e) => format!("error: {e}"),
            };
            *gateway.entry(key).or_insert(0) += 1;
        }
        for _ in 0..N {
            let mut request = http::Request::get(format!("http://{SERVICE}/whoami"));
            match with {
                With::Nothing => {}
                With::Header(name, value) => request = request.header(name, value),
                With::Cookie(cookie) => request = request.header("cookie", cookie),
            }
            let request = request.body(Empty::<Bytes>::new()).unwrap();
            let key = match self.lb.clone().oneshot(request).await {
                Ok(resp) if resp.status() == 200 => match resp.into_body().collect().await {
                    Ok(body) => String::from_utf8_lossy(&body.to_bytes()).into_owned(),
                    Err(e) => format!("error: body: {e}"),
                },
                Ok(resp) => format!("status {}", resp.status()),
                Err(e) => format!("error: {e}"),
            };
            *crate_.entry(key).or_insert(0) += 1;
        }
        (gateway, crate_)
    }

    /// Asserts that `N` requests carrying `with` reach the instances in
    /// `want` exactly that often, through the gateway and through the crate.
    async fn expect(&self, case: &str, with: With<'_>, want: &[(&str, usize)]) {
        let (gateway, crate_) = self.tally(with).await;
        println!(
            "{} / {case}: gateway {gateway:?}, crate {crate_:?}",
            self.name
        );
        let want = counts(want);
        assert_eq!(gateway, want, "{} / {case}: the gateway", self.name);
        assert_eq!(crate_, want, "{} / {case}: the crate", self.name);
    }
}

/// Waits until the gateway's Eureka client holds `n` instances of
/// USER-API, read from its health details (which do not touch its
/// balancer, so its instance cache stays empty until the first request).
async fn until_gateway_sees(client: &reqwest::Client, gateway: &str, n: u64) {
    let url = format!("{gateway}/actuator/health");
    let start = Instant::now();
    loop {
        let body = match client.get(&url).send().await {
            Ok(resp) => resp.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        let seen = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/components/discoveryComposite/components/eureka/details/applications/USER-API")
                    .and_then(serde_json::Value::as_u64)
            });
        if seen == Some(n) {
            println!("{gateway} holds {n} instances after {:?}", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < SEEN_BOUND,
            "{gateway} never held {n} instances of USER-API: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The crate's balancer for `user-api`, configured from `file` as the
/// gateway is: the file's text, then the Eureka URL that the gateway gets
/// on its command line (a later YAML document wins, as a command-line
/// argument does in Spring).
async fn crate_balancer(file: &str, eureka_url: &str) -> LoadBalancer<HttpClient> {
    let path = config_file(file);
    let text = std::fs::read_to_string(&path).unwrap();
    let text = format!(
        "{text}\n---\neureka:\n  client:\n    service-url:\n      defaultZone: {eureka_url}/\n"
    );
    let config = RibbonConfig::from_yaml_str(&text).unwrap();
    println!("{file}: crate warnings {:?}", config.warnings());
    let lb = config
        .builder_for(SERVICE)
        .unwrap()
        .build(http_client())
        .unwrap();
    assert!(lb.ready_service(SERVICE).await, "{file}: no first fetch");
    let start = Instant::now();
    while lb.snapshot(SERVICE).map_or(0, |s| s.len()) < 3 {
        assert!(
            start.elapsed() < SEEN_BOUND,
            "{file}: the crate never held 3 instances: {:?}",
            lb.snapshot(SERVICE)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    lb
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spring_cloud_gateway_and_the_crate_configured_from_one_file_route_alike() {
    let start = Instant::now();
    let Some(eureka) = EurekaFixture::start() else {
        return;
    };
    let eureka_url = eureka.url();
    let files = ["hints.yml", "sticky-session.yml"].map(|f| config_file(f).display().to_string());
    let launches = [
        // Three instances, one JVM: user-api:PORT with these metadata hints.
        Launch::group(
            "user-api",
            &eureka_url,
            ["zone-a", "zone-a", "zone-b"].map(String::from).to_vec(),
        ),
        // Two gateways, one JVM, each run from one of the files.
        Launch::group("gateway", &eureka_url, files.to_vec()),
    ];
    let Some(fixtures) = JavaFixture::launch_all(&launches) else {
        return;
    };
    println!("JVMs ready after {:?}", start.elapsed());
    let [users, gateways] = &fixtures[..] else {
        unreachable!("launch_all returns one fixture per launch");
    };
    let [a1, a2, b] = users.ports() else {
        unreachable!("one port per hint");
    };
    let id = |port: &u16| format!("user-api:{port}");
    let (a1, a2, b) = (id(a1), id(a2), id(b));
    let (a1, a2, b) = (a1.as_str(), a2.as_str(), b.as_str());
    let [hints_gateway, sticky_gateway] = gateways.ports() else {
        unreachable!("one port per file");
    };
    let hints_gateway = format!("http://127.0.0.1:{hints_gateway}");
    let sticky_gateway = format!("http://127.0.0.1:{sticky_gateway}");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    until_gateway_sees(&client, &hints_gateway, 3).await;
    until_gateway_sees(&client, &sticky_gateway, 3).await;
    let hints = Pair {
        name: "hints.yml",
        gateway: hints_gateway,
        lb: crate_balancer("hints.yml", &eureka_url).await,
        client: client.clone(),
    };
    let sticky = Pair {
        name: "sticky-session.yml",
        gateway: sticky_gateway,
        lb: crate_balancer("sticky-session.yml", &eureka_url).await,
        client,
    };
    println!("all ready after {:?}", start.elapsed());

    // Hint routing. The header's hint picks the instances whose metadata
    // `hint` equals it.
    let hint = |value| With::Header("X-SC-LB-Hint", value);
    hints.expect("hint zone-b", hint("zone-b"), &[(b, N)]).await;
    hints
        .expect("hint zone-a", hint("zone-a"), &[(a1, N / 2), (a2, N / 2)])
        .await;
    // A hint no instance carries keeps every instance: SCLB does not fall
    // back from the header to the configured hint.
    hints
        .expect(
            "unknown hint",
            hint("zone-x"),
            &[(a1, N / 3), (a2, N / 3), (b, N / 3)],
        )
        .await;
    // An empty header is no hint: the configured `hint.user-api` applies.
    hints.expect("empty hint", hint(""), &[(b, N)]).await;
    // Without the header, the configured `hint.user-api: zone-b` applies.
    hints.expect("no hint", With::Nothing, &[(b, N)]).await;
    // The sticky cookie means nothing to the hints configuration.
    hints
        .expect(
            "cookie, no hint",
            With::Cookie(&format!("sc-lb-instance-id={a1}")),
            &[(b, N)],
        )
        .await;

    // Request-based sticky session. The cookie names the instance id.
    let cookie = |value: &str| format!("sc-lb-instance-id={value}");
    for target in [a1, a2, b] {
        sticky
            .expect(
                &format!("cookie {target}"),
                With::Cookie(&cookie(target)),
                &[(target, N)],
            )
            .await;
    }
    // Among other cookies. (Not tested: a request naming the cookie twice.
    // SCLB takes the first value of its cookie map, but the gateway's
    // Reactor Netty server builds that map keeping the last one.)
    let among = format!("theme=dark; {}; lang=en", cookie(b));
    sticky
        .expect("cookie among others", With::Cookie(&among), &[(b, N)])
        .await;
    let all = [(a1, N / 3), (a2, N / 3), (b, N / 3)];
    // An id no instance has keeps every instance.
    sticky
        .expect(
            "unknown instance id",
            With::Cookie(&cookie("user-api:1")),
            &all,
        )
        .await;
    sticky.expect("no cookie", With::Nothing, &all).await;
    // The hint header means nothing to the sticky-session configuration.
    sticky.expect("hint, no cookie", hint("zone-b"), &all).await;

    println!("cases done after {:?}", start.elapsed());
    drop((hints, sticky));
    // Everything at once: the instances' deregistration may then fail,
    // which nothing reads.
    std::thread::scope(|scope| {
        scope.spawn(move || drop(eureka));
        JavaFixture::stop_all(fixtures);
    });
    println!("stopped after {:?}", start.elapsed());
}
