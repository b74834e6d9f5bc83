//! S3, retry storm: 30 % of the backends answer 503 at once (without the
//! latency draw) for the whole run. Every request may be retried three
//! times on other instances (`max_next(3)`); the runs differ in the retry
//! budget: none (`RetryBudgetConfig::unlimited()`) vs the default (20 % of
//! requests + 10/s over 10 s). Outlier detection is off in the main rows,
//! so the budget alone limits the retries; one row shows round robin with
//! the default outlier detection as well. Attempts are counted at the
//! backends.

use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};

use crate::client::{self, LbConfig, RuleKind, SERVICE};
use crate::load::{OpenLoop, mix, open_loop, percentiles_ms};
use crate::report::{Report, Table, f, pct};
use crate::{BoxError, Options};

pub async fn run(opts: &Options, report: &mut Report) -> Result<(), BoxError> {
    let n = opts.backends.unwrap_or(10);
    let failing = ((n as f64 * 0.3).round() as usize).clamp(1, n - 1);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut SmallRng::seed_from_u64(mix(opts.seed, 0x53)));
    let mut failing_set: Vec<usize> = order[..failing].to_vec();
    failing_set.sort_unstable();
    let duration = Duration::from_secs_f64(opts.s3_duration);
    let rows = [
        (RuleKind::RoundRobin, false, false),
        (RuleKind::RoundRobin, true, false),
        (RuleKind::PeakEwmaP2c, false, false),
        (RuleKind::PeakEwmaP2c, true, false),
        (RuleKind::RoundRobin, true, true),
    ];
    let mut table = Table::new(&[
        "rule",
        "retry budget",
        "outlier detection",
        ">requests",
        ">attempts / request",
        ">retries / s",
        ">success",
        ">p50 ms",
        ">p99 ms",
    ]);
    let mut csv = Vec::new();
    for (k, &(kind, budget, outliers)) in rows.iter().enumerate() {
        let budget_label = if budget {
            "default (20 % + 10/s)"
        } else {
            "none (unlimited)"
        };
        let outlier_label = if outliers { "default" } else { "off" };
        eprintln!(
            "s3: {}/{} {} budget {budget_label}",
            k + 1,
            rows.len(),
            kind.name()
        );
        let backends = crate::start_backends(opts, n, 2, 0).await?;
        for &i in &failing_set {
            backends[i].set_status(503);
        }
        let config = LbConfig {
            retry: RetryPolicy::default().max_next(3).budget(if budget {
                RetryBudgetConfig::default()
            } else {
                RetryBudgetConfig::unlimited()
            }),
            outliers: if outliers {
                OutlierDetection::default()
            } else {
                OutlierDetection::disabled()
            },
            refresh: RefreshConfig::default(),
            wrt_interval: Duration::from_millis(opts.wrt_interval_ms),
        };
        let ports: Vec<(usize, u16)> = backends.iter().map(|b| (b.index(), b.port())).collect();
        let source = StaticSource::new().with_instances(SERVICE, client::instances(&ports));
        let target = client::build_lb(kind, opts.seed, source, &config).await?;
        let cfg = OpenLoop {
            rate: opts.rate,
            duration,
            hard_timeout: opts.hard_timeout(),
            max_in_flight: 20_000,
            keys: false,
            seed: mix(opts.seed, 0x54),
        };
        let result = open_loop(&target, cfg, Instant::now()).await;
        let requests = result.samples.len() as u64 + result.dropped;
        let hits: u64 = backends.iter().map(|b| b.hits()).sum();
        let ok = result.samples.iter().filter(|s| s.status == 200).count() as f64;
        let latencies: Vec<u32> = result.samples.iter().map(|s| s.latency_us).collect();
        let p = percentiles_ms(&latencies);
        let attempts = hits as f64 / requests.max(1) as f64;
        let retries_per_s = hits.saturating_sub(requests) as f64 / opts.s3_duration.max(1e-9);
        table.row(vec![
            kind.name().to_owned(),
            budget_label.to_owned(),
            outlier_label.to_owned(),
            requests.to_string(),
            f(attempts, 3),
            f(retries_per_s, 0),
            pct(ok / requests.max(1) as f64, 2),
            f(p[0], 1),
            f(p[2], 1),
        ]);
        csv.push(format!(
            "{},{budget},{outliers},{requests},{hits},{attempts:.4},{:.5},{:.3},{:.3}",
            kind.name(),
            ok / requests.max(1) as f64,
            p[0],
            p[2]
        ));
    }
    report.csv(
        "s3.csv",
        "rule,default_budget,outlier_detection,requests,backend_hits,attempts_per_request,success,p50_ms,p99_ms",
        &csv,
    );
    let names: Vec<String> = failing_set.iter().map(|i| format!("b{i}")).collect();
    report.add(&format!(
        "## S3: retry storm\n\n\
         {n} backends; {failing} of them ({}) answer 503 at once for the whole run. Open loop at {}/s for {} s \
         per row; `RetryPolicy::default().max_next(3)` (up to 4 attempts, backoff 10-250 ms full jitter) with \
         no budget (`RetryBudgetConfig::unlimited()`) or the default one. Attempts / request = requests the \
         backends received ÷ requests sent; success = a 200 in the end.\n\n{}\n",
        names.join(", "),
        opts.rate,
        opts.s3_duration,
        table.markdown()
    ));
    Ok(())
}
