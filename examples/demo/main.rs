//! The main job in half a minute, with nothing installed beyond the Rust
//! toolchain.
//!
//! A caller sends a steady stream of `GET http://user-service/api/user`
//! through tower-ribbon to six instances of a made-up `user-service` on
//! 127.0.0.1 that answer like real ones (log-normal latency). While it
//! runs, the same four things happen in every setup:
//!
//! 1. `east-2` slows down (median 4 ms -> 60 ms);
//! 2. `east-3` dies (connects refused, open connections cut);
//! 3. `west-1` is drained: removed from the instance list, still running;
//! 4. `east-4`, a new instance, joins the list.
//!
//! Four setups meet those events: round robin without retries; round
//! robin with retries and outlier ejection; peak-EWMA power of two
//! choices; zone avoidance with the caller in zone `east`. For each the
//! demo prints requests per instance, p50/p99 latency, errors and what
//! happened when, then a few sentences on what the numbers mean.
//!
//! Run: `cargo run --example demo` (`-- --help` for the knobs).

mod backend;
mod report;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;
use tower_ribbon::rule::{PeakEwmaP2c, RoundRobin, ZoneAvoidance};
use tower_ribbon::{Instance, LoadBalancer};

use report::{Event, Record, SetupResult};

type HttpClient = Client<HttpConnector, Empty<Bytes>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

const SERVICE: &str = "user-service";
/// How often the balancer re-reads the instance list.
const REFRESH: Duration = Duration::from_millis(250);
const MEDIAN: Duration = Duration::from_millis(4);
const SLOW_MEDIAN: Duration = Duration::from_millis(60);

/// Command-line knobs.
#[derive(Debug, Clone, Copy)]
struct Args {
    seconds: f64,
    rate: u32,
    seed: u64,
}

const HELP: &str = "\
demo: tower-ribbon balancing a live service while instances slow down, die, drain and join

USAGE: cargo run --example demo -- [--seconds S] [--rate R] [--seed N]

  --seconds S   run time of each of the four setups, seconds (default 7, at least 2)
  --rate R      requests per second sent by the caller (default 400, 10 to 5000)
  --seed N      seed of the instances' latency draws (default 1)
  -h, --help    this text";

fn parse_args() -> Result<Option<Args>, String> {
    let mut args = Args {
        seconds: 7.0,
        rate: 400,
        seed: 1,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--seconds" => {
                args.seconds = value("--seconds")?
                    .parse()
                    .map_err(|e| format!("--seconds: {e}"))?;
            }
            "--rate" => {
                args.rate = value("--rate")?
                    .parse()
                    .map_err(|e| format!("--rate: {e}"))?;
            }
            "--seed" => {
                args.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?;
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if !(2.0..=600.0).contains(&args.seconds) {
        return Err("--seconds must be between 2 and 600".into());
    }
    if !(10..=5000).contains(&args.rate) {
        return Err("--rate must be between 10 and 5000".into());
    }
    Ok(Some(args))
}

/// The four setups, in the order they run.
const SETUPS: [&str; 4] = [
    "round robin, no retries, no ejection",
    "round robin + retries + outlier ejection",
    "peak-EWMA P2C + retries + outlier ejection",
    "zone avoidance (caller in east) + retries + outlier ejection",
];

fn balancer(
    setup: usize,
    source: StaticSource,
    client: HttpClient,
) -> Result<LoadBalancer<HttpClient>, Error> {
    let base = || {
        LoadBalancer::builder()
            .source(source.clone())
            .service(SERVICE)
            .refresh({
                let mut c = RefreshConfig::default();
                c.interval = REFRESH;
                c
            })
    };
    let with_retries = || {
        base()
            .retry(RetryPolicy::default().max_next(2))
            .outlier_detection(OutlierDetection::default())
    };
    let lb = match setup {
        0 => base()
            .rule(RoundRobin::new)
            .retry(RetryPolicy::none())
            .outlier_detection(OutlierDetection::disabled())
            .build(client)?,
        1 => with_retries().rule(RoundRobin::new).build(client)?,
        2 => with_retries().rule(PeakEwmaP2c::new).build(client)?,
        _ => with_retries()
            .rule(|| ZoneAvoidance::new(RoundRobin::new()).preferred_zone(Some("east")))
            .build(client)?,
    };
    Ok(lb)
}

/// The instances every setup starts with: name, zone.
const START: [(&str, &str); 5] = [
    ("east-1", "east"),
    ("east-2", "east"),
    ("east-3", "east"),
    ("west-1", "west"),
    ("west-2", "west"),
];

fn listed(instances: &[(String, &str, backend::Instance)], drained: bool) -> Vec<Instance> {
    instances
        .iter()
        .filter(|(name, _, _)| !(drained && name == "west-1"))
        .filter_map(|(name, zone, running)| {
            let addr = running.addr();
            Instance::new(SERVICE, addr.ip().to_string(), addr.port())
                .ok()
                .map(|i| i.with_id(name.clone()).with_zone(*zone))
        })
        .collect()
}

async fn run_setup(index: usize, args: Args, client: HttpClient) -> Result<SetupResult, Error> {
    let mut instances = Vec::new();
    for (n, (name, zone)) in START.iter().enumerate() {
        let seed = args
            .seed
            .wrapping_mul(1000)
            .wrapping_add(n as u64 * 100_003);
        instances.push((
            (*name).to_owned(),
            *zone,
            backend::Instance::start(name, MEDIAN, seed).await?,
        ));
    }
    let source = StaticSource::new().with_instances(SERVICE, listed(&instances, false));
    let lb = balancer(index, source.clone(), client)?;

    let total = Duration::from_secs_f64(args.seconds);
    let at = |fraction: f64| total.mul_f64(fraction);
    let plan = [
        (at(0.20), Event::Slowed("east-2")),
        (at(0.40), Event::Died("east-3")),
        (at(0.55), Event::Drained("west-1")),
        (at(0.70), Event::Joined("east-4")),
    ];
    let records = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_event = 0;
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    while start.elapsed() < total {
        ticker.tick().await;
        let now = start.elapsed();
        while next_event < plan.len() && now >= plan[next_event].0 {
            let (_, event) = plan[next_event];
            apply(event, &mut instances, &source, args.seed).await?;
            next_event += 1;
        }
        sent += 1;
        let (lb, shared) = (lb.clone(), Arc::clone(&records));
        tasks.spawn(async move {
            let record = one_request(lb, start).await;
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(record);
        });
        if sent % u64::from(args.rate / 10).max(1) == 0 {
            report::progress(index, &SETUPS, now, total, sent, &records);
        }
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    report::clear_progress();
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    let zones = instances
        .iter()
        .map(|(name, zone, _)| (name.clone(), (*zone).to_owned()))
        .collect();
    Ok(SetupResult {
        name: SETUPS[index],
        events: plan.to_vec(),
        records,
        zones,
        refresh: REFRESH,
    })
}

async fn apply(
    event: Event,
    instances: &mut Vec<(String, &'static str, backend::Instance)>,
    source: &StaticSource,
    seed: u64,
) -> Result<(), Error> {
    match event {
        Event::Slowed(name) => {
            if let Some((_, _, i)) = instances.iter().find(|(n, _, _)| n == name) {
                i.set_median(SLOW_MEDIAN);
            }
        }
        Event::Died(name) => {
            if let Some((_, _, i)) = instances.iter_mut().find(|(n, _, _)| n == name) {
                i.kill();
            }
        }
        Event::Drained(_) => source.set_instances(SERVICE, listed(instances, true)),
        Event::Joined(name) => {
            let running = backend::Instance::start(name, MEDIAN, seed ^ 0xabcd).await?;
            instances.push((name.to_owned(), "east", running));
            source.set_instances(SERVICE, listed(instances, true));
        }
    }
    Ok(())
}

async fn one_request(lb: LoadBalancer<HttpClient>, start: Instant) -> Record {
    let sent_at = start.elapsed();
    let began = Instant::now();
    let outcome = async {
        let request = http::Request::get(format!("http://{SERVICE}/api/user"))
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = lb.oneshot(request).await.map_err(|e| short_error(&e))?;
        if !response.status().is_success() {
            return Err(format!("status {}", response.status()));
        }
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
    }
    .await;
    Record {
        sent_at,
        latency: began.elapsed(),
        outcome,
    }
}

/// The first line of an error, without the list of attempts, cut at 200
/// characters (on a character boundary, marked with `…`).
fn short_error(e: &tower_ribbon::Error) -> String {
    let text = e.to_string();
    let text = &text[..text.find(" (attempts").unwrap_or(text.len())];
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = match parse_args() {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{HELP}");
            return Ok(());
        }
        Err(e) => {
            eprintln!("demo: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    println!(
        "tower-ribbon demo: {SERVICE}, 5 instances in zones east and west (median latency {} ms),\n\
         a sixth joining during each run;\n\
         {} requests/s for {:.0} s per setup; the list refreshes every {} ms.\n",
        MEDIAN.as_millis(),
        args.rate,
        args.seconds,
        REFRESH.as_millis()
    );
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut results = Vec::new();
    for index in 0..SETUPS.len() {
        let result = run_setup(index, args, client.clone()).await?;
        report::print_setup(index, SETUPS.len(), &result);
        results.push(result);
    }
    report::print_summary(&results);
    Ok(())
}
