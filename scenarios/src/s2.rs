//! S2, unequal capacity: a third of the backends (the first ones) answer at
//! half speed (2× latency) for the whole run. In-flight requests per
//! backend are sampled every 10 ms: from the balancer's endpoint stats
//! (`lb.snapshot(..)`, `stats().in_flight()`) for the crate's rules, and at
//! the backends (requests being answered) for tower's p2c, whose in-flight
//! counts are not readable from outside.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;

use crate::backend::SimBackend;
use crate::client::{self, Lb, LbConfig, Peer, RuleKind, SERVICE};
use crate::load::{OpenLoop, mix, open_loop, percentiles_ms};
use crate::report::{Report, Table, f, pct};
use crate::{BoxError, Options};

/// Per backend: sum and max of the sampled in-flight counts, and samples.
#[derive(Default, Clone)]
struct InFlight {
    sum: Vec<u64>,
    max: Vec<u64>,
    samples: u64,
}

fn spawn_sampler(
    backends: Vec<Arc<SimBackend>>,
    lb: Option<Lb>,
    stop: Arc<AtomicBool>,
    until: Instant,
) -> tokio::task::JoinHandle<InFlight> {
    tokio::spawn(async move {
        let n = backends.len();
        let by_port: HashMap<u16, usize> = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.port(), i))
            .collect();
        let mut acc = InFlight {
            sum: vec![0; n],
            max: vec![0; n],
            samples: 0,
        };
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        while !stop.load(Ordering::Relaxed) && Instant::now() < until {
            tick.tick().await;
            let mut now = vec![0u64; n];
            match &lb {
                Some(lb) => {
                    if let Some(snapshot) = lb.lb.snapshot(SERVICE) {
                        for e in snapshot.endpoints() {
                            if let Some(&i) = by_port.get(&e.instance().port()) {
                                now[i] = e.stats().in_flight() as u64;
                            }
                        }
                    }
                }
                None => {
                    for (i, b) in backends.iter().enumerate() {
                        now[i] = b.in_flight() as u64;
                    }
                }
            }
            for (i, &v) in now.iter().enumerate() {
                acc.sum[i] += v;
                acc.max[i] = acc.max[i].max(v);
            }
            acc.samples += 1;
        }
        acc
    })
}

pub async fn run(opts: &Options, report: &mut Report) -> Result<(), BoxError> {
    let n = opts.backends.unwrap_or(12);
    let slow = n.div_ceil(3).min(n);
    let duration = Duration::from_secs_f64(opts.s2_duration);
    let config = LbConfig {
        retry: RetryPolicy::none(),
        outliers: OutlierDetection::default(),
        refresh: RefreshConfig::default(),
        wrt_interval: Duration::from_millis(opts.wrt_interval_ms),
    };
    let mut algos: Vec<Option<RuleKind>> = RuleKind::ALL.iter().copied().map(Some).collect();
    algos.push(None);
    let mut table = Table::new(&[
        "rule",
        ">p99 ms",
        ">share to slow third",
        ">mean in flight, fast",
        ">mean in flight, slow",
        ">max in flight, fast",
        ">max in flight, slow",
        ">errors",
        "in flight read at",
    ]);
    let mut csv = Vec::new();
    for (k, algo) in algos.iter().enumerate() {
        let name = algo.map_or("tower_p2c_peak_ewma", RuleKind::name);
        eprintln!("s2: {}/{} {name}", k + 1, algos.len());
        let backends = crate::start_backends(opts, n, 2, 0).await?;
        for b in &backends[..slow] {
            b.set_factor(2.0);
        }
        let cfg = OpenLoop {
            rate: opts.rate,
            duration,
            hard_timeout: opts.hard_timeout(),
            max_in_flight: 20_000,
            keys: true,
            seed: mix(opts.seed, 0x52),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let until = Instant::now() + duration + opts.hard_timeout() + Duration::from_secs(1);
        let (result, sampled) = match algo {
            Some(kind) => {
                let ports: Vec<(usize, u16)> =
                    backends.iter().map(|b| (b.index(), b.port())).collect();
                let source = StaticSource::new().with_instances(SERVICE, client::instances(&ports));
                let target = client::build_lb(*kind, opts.seed, source, &config).await?;
                let sampler = spawn_sampler(
                    backends.clone(),
                    Some(target.clone()),
                    Arc::clone(&stop),
                    until,
                );
                let result = open_loop(&target, cfg, Instant::now()).await;
                stop.store(true, Ordering::Relaxed);
                (result, sampler.await?)
            }
            None => {
                let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
                let target = Peer::new(&client::http_client(), &addrs);
                let sampler = spawn_sampler(backends.clone(), None, Arc::clone(&stop), until);
                let result = open_loop(&target, cfg, Instant::now()).await;
                stop.store(true, Ordering::Relaxed);
                (result, sampler.await?)
            }
        };
        let latencies: Vec<u32> = result.samples.iter().map(|s| s.latency_us).collect();
        let p = percentiles_ms(&latencies);
        let errors =
            result.samples.iter().filter(|s| s.status != 200).count() as u64 + result.dropped;
        let hits: Vec<u64> = backends.iter().map(|b| b.hits()).collect();
        let total: u64 = hits.iter().sum();
        let slow_hits: u64 = hits[..slow].iter().sum();
        let samples = sampled.samples.max(1) as f64;
        let mean = |range: std::ops::Range<usize>| {
            let len = range.len().max(1) as f64;
            range.map(|i| sampled.sum[i] as f64 / samples).sum::<f64>() / len
        };
        let max = |range: std::ops::Range<usize>| range.map(|i| sampled.max[i]).max().unwrap_or(0);
        table.row(vec![
            name.to_owned(),
            f(p[2], 1),
            pct(slow_hits as f64 / total.max(1) as f64, 1),
            f(mean(slow..n), 2),
            f(mean(0..slow), 2),
            max(slow..n).to_string(),
            max(0..slow).to_string(),
            errors.to_string(),
            if algo.is_some() {
                "balancer"
            } else {
                "backends"
            }
            .to_owned(),
        ]);
        for (i, backend_hits) in hits.iter().enumerate() {
            csv.push(format!(
                "{name},b{i},{},{},{:.3},{},{}",
                i < slow,
                backend_hits,
                sampled.sum[i] as f64 / samples,
                sampled.max[i],
                if algo.is_some() {
                    "balancer"
                } else {
                    "backends"
                }
            ));
        }
    }
    report.csv(
        "s2.csv",
        "rule,backend,half_speed,hits,mean_in_flight,max_in_flight,read_at",
        &csv,
    );
    report.add(&format!(
        "## S2: unequal capacity\n\n\
         {n} backends; b0-b{} (a third) answer at half speed (2× latency, median {} ms) for the whole run. \
         Open loop at {}/s for {} s per rule, no retries, default outlier detection. In flight sampled every \
         10 ms per backend; \"fast\"/\"slow\" columns average the mean over the backends of the group and take \
         the max over them. The fair share of the slow third is {:.1} %; a balancer that evens out latency \
         sends it less. Per-backend figures in `s2.csv`.\n\n{}\n",
        slow - 1,
        opts.median_ms * 2.0,
        opts.rate,
        opts.s2_duration,
        slow as f64 / n as f64 * 100.0,
        table.markdown()
    ));
    Ok(())
}
