//! S1, a scaled replay of Linkerd's "Beyond Round Robin" test: N backends
//! (default 11) at the latency model; one of them (chosen by the seed)
//! answers 12× slower during the middle third of each run. Open loop at a
//! fixed rate. Every rule of the crate runs twice, without retries and with
//! the default retry policy plus a per-try timeout; tower's p2c (PeakEwma)
//! runs as the peer; then the best rule runs again with no slow backend
//! (the baseline).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;

use crate::backend::SimBackend;
use crate::client::{self, LbConfig, Peer, RuleKind, SERVICE};
use crate::load::{OpenLoop, Sample, mix, open_loop, percentiles_ms, quantile_ci};
use crate::report::{Report, Table, f, pct};
use crate::{BoxError, Goal, Options, plot};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Rule(RuleKind),
    Tower,
}

#[derive(Debug, Clone, Copy)]
struct Variant {
    algo: Algo,
    retries: bool,
    slow: bool,
}

impl Variant {
    fn name(&self) -> &'static str {
        match self.algo {
            Algo::Rule(kind) => kind.name(),
            Algo::Tower => "tower_p2c_peak_ewma",
        }
    }

    fn retry_label(&self, opts: &Options) -> String {
        if self.retries {
            format!("default, {} ms per try", opts.per_try_timeout().as_millis())
        } else {
            "none".to_owned()
        }
    }

    fn label(&self) -> String {
        let mut label = self.name().to_owned();
        if self.retries {
            label.push_str(" +retries");
        }
        if !self.slow {
            label.push_str(" (no slow backend)");
        }
        label
    }
}

struct Run {
    variant: Variant,
    requests: usize,
    pct: [f64; 4],
    /// 95 % confidence interval of the p99, ms.
    p99_ci: (f64, f64),
    ok: f64,
    errors: usize,
    dropped: u64,
    attempts: f64,
    p99_slow_third: f64,
    slow_share: f64,
    latencies_ms: Vec<f64>,
    /// Hits per backend per bucket.
    buckets: Vec<Vec<u64>>,
    max_lag: Duration,
}

async fn run_once(opts: &Options, n: usize, variant: Variant) -> Result<Run, BoxError> {
    let duration = Duration::from_secs_f64(opts.duration);
    let buckets = opts.buckets_for(opts.duration);
    let backends = crate::start_backends(opts, n, buckets, 0).await?;
    let slow_index = (mix(opts.seed, 0x51) % n as u64) as usize;
    let retry = if variant.retries {
        RetryPolicy::default().per_try_timeout(opts.per_try_timeout())
    } else {
        RetryPolicy::none()
    };
    let config = LbConfig {
        retry,
        outliers: OutlierDetection::default(),
        refresh: RefreshConfig::default(),
        wrt_interval: Duration::from_millis(opts.wrt_interval_ms),
    };
    let ports: Vec<(usize, u16)> = backends.iter().map(|b| (b.index(), b.port())).collect();
    let cfg = OpenLoop {
        rate: opts.rate,
        duration,
        hard_timeout: opts.hard_timeout(),
        max_in_flight: 20_000,
        keys: true,
        seed: mix(opts.seed, 0x4B),
    };
    let start = Instant::now() + Duration::from_millis(20);
    for b in &backends {
        b.begin(start);
    }
    let controller = variant.slow.then(|| {
        spawn_slowdown(
            Arc::clone(&backends[slow_index]),
            start,
            duration,
            opts.slow_factor,
        )
    });
    let result = match variant.algo {
        Algo::Rule(kind) => {
            let source = StaticSource::new().with_instances(SERVICE, client::instances(&ports));
            let target = client::build_lb(kind, opts.seed, source, &config).await?;
            open_loop(&target, cfg, start).await
        }
        Algo::Tower => {
            let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
            let target = Peer::new(&client::http_client(), &addrs);
            open_loop(&target, cfg, start).await
        }
    };
    if let Some(c) = controller {
        let _ = c.await;
    }
    let samples = result.samples;
    let hits: u64 = backends.iter().map(|b| b.hits()).sum();
    let slow_hits = backends[slow_index].hits();
    let third = (duration.as_micros() / 3) as u32;
    let during: Vec<u32> = samples
        .iter()
        .filter(|s| s.start_us >= third && s.start_us < 2 * third)
        .map(|s| s.latency_us)
        .collect();
    let all: Vec<u32> = samples.iter().map(|s| s.latency_us).collect();
    let mut sorted = all.clone();
    sorted.sort_unstable();
    let (lo, hi) = quantile_ci(&sorted, 0.99);
    let timeout = opts.success_timeout();
    Ok(Run {
        variant,
        requests: samples.len(),
        pct: percentiles_ms(&all),
        p99_ci: (f64::from(lo) / 1e3, f64::from(hi) / 1e3),
        ok: samples.iter().filter(|s| s.ok_within(timeout)).count() as f64
            / (samples.len() as f64 + result.dropped as f64).max(1.0),
        errors: samples.iter().filter(|s: &&Sample| s.status != 200).count(),
        dropped: result.dropped,
        attempts: hits as f64 / samples.len().max(1) as f64,
        p99_slow_third: percentiles_ms(&during)[2],
        slow_share: slow_hits as f64 / hits.max(1) as f64,
        latencies_ms: all.iter().map(|&us| f64::from(us) / 1e3).collect(),
        buckets: backends.iter().map(|b| b.bucket_hits()).collect(),
        max_lag: result.max_lag,
    })
}

/// Makes `backend` slow for the middle third of the run.
fn spawn_slowdown(
    backend: Arc<SimBackend>,
    start: Instant,
    duration: Duration,
    factor: f64,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::time::sleep_until((start + duration / 3).into()).await;
        backend.set_factor(factor);
        tokio::time::sleep_until((start + duration * 2 / 3).into()).await;
        backend.set_factor(1.0);
    })
}

/// The rule run (with retries or not, or either) with the lowest p99.
fn best_of(runs: &[Run], retries: Option<bool>) -> usize {
    runs.iter()
        .enumerate()
        .filter(|(_, r)| r.variant.slow && matches!(r.variant.algo, Algo::Rule(_)))
        .filter(|(_, r)| retries.is_none_or(|x| r.variant.retries == x))
        .min_by(|a, b| a.1.pct[2].total_cmp(&b.1.pct[2]))
        .map(|(i, _)| i)
        .expect("rules ran")
}

/// Per bucket, each backend's share of the requests the backends got.
fn shares(buckets: &[Vec<u64>], len: usize) -> Vec<Vec<f64>> {
    let totals: Vec<u64> = (0..len)
        .map(|t| buckets.iter().map(|b| b[t]).sum())
        .collect();
    buckets
        .iter()
        .map(|b| {
            (0..len)
                .map(|t| b[t] as f64 / totals[t].max(1) as f64)
                .collect()
        })
        .collect()
}

pub async fn run(
    opts: &Options,
    report: &mut Report,
    plot_dir: &Path,
) -> Result<Vec<Goal>, BoxError> {
    let n = opts.backends.unwrap_or(11);
    let slow_index = (mix(opts.seed, 0x51) % n as u64) as usize;
    let mut variants = Vec::new();
    for kind in RuleKind::ALL {
        for retries in [false, true] {
            variants.push(Variant {
                algo: Algo::Rule(kind),
                retries,
                slow: true,
            });
        }
    }
    variants.push(Variant {
        algo: Algo::Tower,
        retries: false,
        slow: true,
    });
    let mut runs = Vec::new();
    for (i, v) in variants.iter().enumerate() {
        eprintln!("s1: {}/{} {}", i + 1, variants.len() + 1, v.label());
        runs.push(run_once(opts, n, *v).await?);
    }
    // The best rule overall and the best without retries (like for like
    // with tower's p2c, which has none), by p99; each gets a baseline run.
    let best = best_of(&runs, None);
    let best_plain = best_of(&runs, Some(false));
    let best_retry = best_of(&runs, Some(true));
    let mut baselines = Vec::new();
    for i in [best, best_plain] {
        if baselines.iter().any(|&(j, _)| j == i) {
            continue;
        }
        let v = Variant {
            slow: false,
            ..runs[i].variant
        };
        eprintln!("s1: baseline {}", v.label());
        baselines.push((i, runs.len()));
        runs.push(run_once(opts, n, v).await?);
    }
    let baseline_of = |i: usize| baselines.iter().find(|&&(j, _)| j == i).map(|&(_, b)| b);
    let tower = runs
        .iter()
        .position(|r| r.variant.algo == Algo::Tower)
        .expect("tower ran");

    let timeout_ms = opts.success_timeout().as_millis();
    let mut table = Table::new(&[
        "rule",
        "retries",
        ">requests",
        ">p50 ms",
        ">p90 ms",
        ">p99 ms",
        ">p99 95 % CI",
        ">p99.9 ms",
        &format!(">ok ≤ {timeout_ms} ms"),
        ">errors",
        ">attempts / request",
        ">share to slow backend",
        ">p99 middle third ms",
    ]);
    let mut csv = Vec::new();
    for r in &runs {
        let v = r.variant;
        let name = if v.slow {
            v.name().to_owned()
        } else {
            format!("{} (baseline: no slow backend)", v.name())
        };
        table.row(vec![
            name,
            v.retry_label(opts),
            r.requests.to_string(),
            f(r.pct[0], 1),
            f(r.pct[1], 1),
            f(r.pct[2], 1),
            format!("{:.1}-{:.1}", r.p99_ci.0, r.p99_ci.1),
            f(r.pct[3], 1),
            pct(r.ok, 2),
            (r.errors as u64 + r.dropped).to_string(),
            f(r.attempts, 3),
            pct(r.slow_share, 1),
            f(r.p99_slow_third, 1),
        ]);
        csv.push(format!(
            "{},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.5},{},{},{:.4},{:.4},{:.3},{:.3}",
            v.name(),
            v.retries,
            v.slow,
            r.requests,
            r.pct[0],
            r.pct[1],
            r.pct[2],
            r.p99_ci.0,
            r.p99_ci.1,
            r.pct[3],
            r.ok,
            r.errors,
            r.dropped,
            r.attempts,
            r.slow_share,
            r.p99_slow_third,
            r.max_lag.as_secs_f64() * 1e3,
        ));
    }
    report.csv(
        "s1.csv",
        "rule,retries,slow_backend,requests,p50_ms,p90_ms,p99_ms,p99_ci_low_ms,p99_ci_high_ms,p999_ms,ok_within_timeout,errors,dropped,attempts_per_request,slow_share,p99_middle_third_ms,max_schedule_lag_ms",
        &csv,
    );

    // Shares over time of every run, long form.
    let len = opts.buckets_for(opts.duration) - 8;
    let bucket_s = opts.bucket().as_secs_f64();
    let starts: Vec<f64> = (0..len).map(|t| t as f64 * bucket_s).collect();
    let mut share_rows = Vec::new();
    for r in &runs {
        for (b, series) in shares(&r.buckets, len).iter().enumerate() {
            for (t, s) in series.iter().enumerate() {
                share_rows.push(format!(
                    "{},{},{:.3},b{b},{},{:.5}",
                    r.variant.label(),
                    r.variant.retries,
                    starts[t],
                    r.buckets[b][t],
                    s
                ));
            }
        }
    }
    report.csv(
        "s1-shares.csv",
        "run,retries,bucket_start_s,backend,hits,share",
        &share_rows,
    );

    // Plots: CDF of every run without retries, the best run with retries,
    // tower's p2c and the baseline; shares of round robin, the best
    // latency-aware rule and tower's p2c.
    let mut cdf: Vec<(String, Vec<f64>)> = runs
        .iter()
        .filter(|r| r.variant.slow && !r.variant.retries)
        .map(|r| (r.variant.label(), r.latencies_ms.clone()))
        .collect();
    cdf.push((
        runs[best_retry].variant.label(),
        runs[best_retry].latencies_ms.clone(),
    ));
    if let Some(b) = baseline_of(best_plain) {
        cdf.push((runs[b].variant.label(), runs[b].latencies_ms.clone()));
    }
    let mut cdf_rows = Vec::new();
    for (name, values) in &cdf {
        for v in values {
            cdf_rows.push(format!("{name},{v:.3}"));
        }
    }
    report.csv("s1-latency-cdf.csv", "series,latency_ms", &cdf_rows);
    let best_aware = runs
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            r.variant.slow
                && !r.variant.retries
                && matches!(r.variant.algo, Algo::Rule(k) if k.latency_aware())
        })
        .min_by(|a, b| a.1.pct[2].total_cmp(&b.1.pct[2]))
        .map(|(i, _)| i)
        .expect("latency-aware rules ran");
    let round_robin = runs
        .iter()
        .position(|r| r.variant.algo == Algo::Rule(RuleKind::RoundRobin) && !r.variant.retries)
        .expect("round robin ran");
    let mut plotted = Vec::new();
    if opts.plots {
        if let Err(e) = std::fs::create_dir_all(plot_dir) {
            eprintln!("warning: cannot create {}: {e}", plot_dir.display());
        }
        let path = plot_dir.join("s1-latency-cdf.png");
        let title = format!(
            "S1: latency CDF, {n} backends, one {}x slow for the middle third",
            opts.slow_factor
        );
        match plot::latency_cdf(&path, &title, &cdf) {
            Ok(()) => plotted.push(path),
            Err(e) => eprintln!("warning: plot {}: {e}", path.display()),
        }
        for i in [round_robin, best_aware, tower] {
            let r = &runs[i];
            let series: Vec<(String, Vec<f64>)> = shares(&r.buckets, len)
                .into_iter()
                .enumerate()
                .map(|(b, s)| {
                    let name = if b == slow_index {
                        format!("b{b} (slow)")
                    } else {
                        format!("b{b}")
                    };
                    (name, s)
                })
                .collect();
            let path = plot_dir.join(format!("s1-share-{}.png", r.variant.name()));
            let title = format!("S1: share of requests per backend, {}", r.variant.name());
            match plot::share_over_time(&path, &title, &starts, &series) {
                Ok(()) => plotted.push(path),
                Err(e) => eprintln!("warning: plot {}: {e}", path.display()),
            }
            let rows: Vec<String> = (0..len)
                .map(|t| {
                    let cells: Vec<String> =
                        series.iter().map(|(_, s)| format!("{:.5}", s[t])).collect();
                    format!("{:.3},{}", starts[t], cells.join(","))
                })
                .collect();
            let header: Vec<String> = series.iter().map(|(name, _)| name.clone()).collect();
            report.csv(
                &format!("s1-share-{}.csv", r.variant.name()),
                &format!("bucket_start_s,{}", header.join(",")),
                &rows,
            );
        }
    }

    let root = crate::repo_root();
    let plots = plotted
        .iter()
        .map(|p| format!("`{}`", p.strip_prefix(&root).unwrap_or(p).display()))
        .collect::<Vec<_>>()
        .join(", ");
    let max_lag = runs.iter().map(|r| r.max_lag).max().unwrap_or_default();
    report.add(&format!(
        "## S1: one slow backend (scaled \"Beyond Round Robin\")\n\n\
         {n} backends; b{slow_index} answers {}× slower (median {} ms) from {:.1} s to {:.1} s of each {:.0} s run. \
         Open loop at {}/s; each rule runs with its default settings (seeded where it draws; zones a/b/c by \
         position; `consistent_hash` keyed by a random `x-key` per request; `weighted_response_time` recomputing \
         every {} ms instead of Ribbon's 30 s, which would never fire in a run) and default outlier detection. \
         Latency counts every request (errors at the time they ended); attempts / request = requests the \
         backends received ÷ requests sent; the p99 95 % CI is distribution-free (order statistics at ranks \
         n·0.99 ± 1.96·√(n·0.99·0.01)). Largest lag of the generator behind its schedule: {:.1} ms.{}\n\n{}\n",
        opts.slow_factor,
        opts.median_ms * opts.slow_factor,
        opts.duration / 3.0,
        opts.duration * 2.0 / 3.0,
        opts.duration,
        opts.rate,
        opts.wrt_interval_ms,
        max_lag.as_secs_f64() * 1e3,
        if plots.is_empty() {
            String::new()
        } else {
            format!(" Plots: {plots}.")
        },
        table.markdown()
    ));

    let mut goals = Vec::new();
    let mut judged = vec![(best, "best rule")];
    if best_plain != best {
        judged.push((best_plain, "best rule without retries"));
    }
    let ci = |r: &Run| {
        format!(
            "{:.1} ms [95 % CI {:.1}-{:.1}]",
            r.pct[2], r.p99_ci.0, r.p99_ci.1
        )
    };
    for (i, what) in judged {
        let r = &runs[i];
        if let Some(b) = baseline_of(i) {
            let base = runs[b].pct[2];
            goals.push(Goal {
                goal: format!("S1 {what} p99 ≤ 1.5× its no-slow-backend baseline"),
                figure: format!(
                    "{}: {} vs baseline {} ({:.2}×)",
                    r.variant.label(),
                    ci(r),
                    ci(&runs[b]),
                    r.pct[2] / base.max(1e-9)
                ),
                met: r.pct[2] <= 1.5 * base,
                note: None,
            });
        }
        let t = &runs[tower];
        let overlap = r.p99_ci.1 >= t.p99_ci.0 && t.p99_ci.1 >= r.p99_ci.0;
        goals.push(Goal {
            goal: format!("S1 {what} p99 ahead of tower's p2c"),
            figure: format!("{}: {} vs tower p2c {}", r.variant.label(), ci(r), ci(t)),
            met: r.pct[2] < t.pct[2],
            note: overlap.then(|| "confidence intervals overlap: a tie within noise".to_owned()),
        });
    }
    Ok(goals)
}
