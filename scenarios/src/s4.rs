//! S4, churn: a few instances are listed at a time; every second some are
//! replaced (new backends started and added, listed ones removed) through
//! `StaticSource::set_instances`, while the balancer refreshes every
//! 200 ms (default jitter ±10 %). Removed backends keep running (or, in the
//! last row, stop two refresh intervals after their removal, as a graceful
//! deregistration would) and record every request they receive after their
//! removal, with its delay.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use tower_ribbon::discovery::{RefreshConfig, StaticSource};
use tower_ribbon::health::OutlierDetection;
use tower_ribbon::retry::RetryPolicy;

use crate::backend::{SimBackend, micros};
use crate::client::{self, LbConfig, RuleKind, SERVICE};
use crate::load::{OpenLoop, mix, open_loop, percentiles_ms};
use crate::report::{Report, Table, f, pct};
use crate::{BoxError, Goal, Options};

/// Every backend of a run with the µs (since the run start) it was listed
/// from and until (`None`: still listed at the end).
type Pool = Arc<Mutex<Vec<(Arc<SimBackend>, u64, Option<u64>)>>>;

fn list(pool: &Pool) -> Vec<(usize, u16)> {
    pool.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|(_, _, until)| until.is_none())
        .map(|(b, _, _)| (b.index(), b.port()))
        .collect()
}

/// Replaces `churn` listed instances every second until `start + duration`;
/// with `stop_after`, stops each removed backend that long after its
/// removal.
#[allow(clippy::too_many_arguments)]
fn spawn_churn(
    opts: Options,
    pool: Pool,
    source: StaticSource,
    start: Instant,
    duration: Duration,
    churn: usize,
    stop_after: Option<Duration>,
    seed: u64,
) -> tokio::task::JoinHandle<Result<usize, String>> {
    tokio::spawn(async move {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut next_index = pool.lock().unwrap_or_else(|e| e.into_inner()).len();
        let mut stops: Vec<(Instant, Arc<SimBackend>)> = Vec::new();
        let mut events = 0usize;
        let mut second = 1u32;
        let end = start + duration;
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            stops.retain(|(at, b)| {
                if *at <= now {
                    b.stop();
                    false
                } else {
                    true
                }
            });
            let due = start + Duration::from_secs(u64::from(second));
            if now >= due && due < end {
                second += 1;
                let fresh = crate::start_backends(&opts, churn, 2, next_index)
                    .await
                    .map_err(|e| e.to_string())?;
                next_index += churn;
                let at = Instant::now();
                let since = micros(at).saturating_sub(micros(start));
                let mut entries = pool.lock().unwrap_or_else(|e| e.into_inner());
                let mut listed: Vec<usize> = entries
                    .iter()
                    .enumerate()
                    .filter(|(_, e)| e.2.is_none())
                    .map(|(i, _)| i)
                    .collect();
                listed.shuffle(&mut rng);
                for &i in listed.iter().take(churn) {
                    entries[i].0.mark_removed(at);
                    entries[i].2 = Some(since);
                    if let Some(after) = stop_after {
                        stops.push((at + after, Arc::clone(&entries[i].0)));
                    }
                }
                for b in fresh {
                    entries.push((b, since, None));
                }
                drop(entries);
                source.set_instances(SERVICE, client::instances(&list(&pool)));
                events += 1;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok(events)
    })
}

pub async fn run(opts: &Options, report: &mut Report) -> Result<Vec<Goal>, BoxError> {
    let refresh = Duration::from_millis(opts.refresh_ms);
    let jitter = 0.1;
    let max_gap = refresh.mul_f64(1.0 + jitter);
    let duration = Duration::from_secs_f64(opts.s4_duration);
    let rows = [
        (RuleKind::RoundRobin, false),
        (RuleKind::PeakEwmaP2c, false),
        (RuleKind::ConsistentHash, false),
        (RuleKind::RoundRobin, true),
    ];
    let mut table = Table::new(&[
        "rule",
        "removed backends",
        ">requests",
        ">errors",
        ">p99 ms",
        ">instances removed",
        ">requests after removal",
        &format!(">of them > {} ms after", refresh.as_millis()),
        &format!(">of them > {} ms after", max_gap.as_millis()),
        ">latest after removal ms",
        ">share to added instances",
        ">their share of listed time",
    ]);
    let mut csv = Vec::new();
    let mut goals = Vec::new();
    for (k, &(kind, stop)) in rows.iter().enumerate() {
        let stop_label = if stop {
            format!("stop {} ms after removal", (refresh * 2).as_millis())
        } else {
            "keep serving".to_owned()
        };
        eprintln!(
            "s4: {}/{} {} ({stop_label})",
            k + 1,
            rows.len(),
            kind.name()
        );
        let seed = mix(opts.seed, 0x5400 + k as u64);
        let initial = crate::start_backends(opts, opts.s4_instances, 2, 0).await?;
        let pool: Pool = Arc::new(Mutex::new(
            initial.into_iter().map(|b| (b, 0, None)).collect(),
        ));
        let source = StaticSource::new().with_instances(SERVICE, client::instances(&list(&pool)));
        let config = LbConfig {
            retry: RetryPolicy::default(),
            outliers: OutlierDetection::default(),
            refresh: {
                let mut config = RefreshConfig::default();
                config.interval = refresh;
                config.jitter = jitter;
                config
            },
            wrt_interval: Duration::from_millis(opts.wrt_interval_ms),
        };
        let target = client::build_lb(kind, opts.seed, source.clone(), &config).await?;
        let start = Instant::now() + Duration::from_millis(20);
        let churn = spawn_churn(
            opts.clone(),
            Arc::clone(&pool),
            source,
            start,
            duration,
            opts.churn,
            stop.then_some(refresh * 2),
            seed,
        );
        let cfg = OpenLoop {
            rate: opts.s4_rate,
            duration,
            hard_timeout: opts.hard_timeout(),
            max_in_flight: 20_000,
            keys: true,
            seed: mix(seed, 1),
        };
        let result = open_loop(&target, cfg, start).await;
        let events = churn.await?.map_err(|e| -> BoxError { e.into() })?;
        let requests = result.samples.len() as u64 + result.dropped;
        let errors =
            result.samples.iter().filter(|s| s.status != 200).count() as u64 + result.dropped;
        let latencies: Vec<u32> = result.samples.iter().map(|s| s.latency_us).collect();
        let p = percentiles_ms(&latencies);
        let entries = pool.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let end_us = duration.as_micros() as u64;
        let mut removed = 0;
        let mut after = 0usize;
        let mut late_interval = 0usize;
        let mut late_gap = 0usize;
        let mut latest = Duration::ZERO;
        let (mut added_hits, mut all_hits) = (0u64, 0u64);
        let (mut added_time, mut all_time) = (0u64, 0u64);
        for (b, from, until) in &entries {
            let listed = until.unwrap_or(end_us).min(end_us).saturating_sub(*from);
            all_time += listed;
            all_hits += b.hits();
            if b.index() >= opts.s4_instances {
                added_time += listed;
                added_hits += b.hits();
            }
            if until.is_some() {
                removed += 1;
                for d in b.late_arrivals() {
                    after += 1;
                    late_interval += usize::from(d > refresh);
                    late_gap += usize::from(d > max_gap);
                    latest = latest.max(d);
                }
            }
        }
        let added_share = added_hits as f64 / all_hits.max(1) as f64;
        let added_time_share = added_time as f64 / all_time.max(1) as f64;
        table.row(vec![
            kind.name().to_owned(),
            stop_label.clone(),
            requests.to_string(),
            errors.to_string(),
            f(p[2], 1),
            removed.to_string(),
            after.to_string(),
            late_interval.to_string(),
            late_gap.to_string(),
            f(latest.as_secs_f64() * 1e3, 1),
            pct(added_share, 1),
            pct(added_time_share, 1),
        ]);
        csv.push(format!(
            "{},{stop},{requests},{errors},{:.3},{events},{removed},{after},{late_interval},{late_gap},{:.3},{:.4},{:.4}",
            kind.name(),
            p[2],
            latest.as_secs_f64() * 1e3,
            added_share,
            added_time_share
        ));
        goals.push(Goal {
            goal: format!(
                "S4 {} ({stop_label}): zero requests to instances removed more than one refresh earlier \
                 (interval {} ms, {} ms with jitter)",
                kind.name(),
                refresh.as_millis(),
                max_gap.as_millis()
            ),
            figure: format!(
                "{late_gap} later than {} ms ({late_interval} later than {} ms, latest {:.1} ms) of {after} \
                 requests after removal; {errors} errors of {requests}",
                max_gap.as_millis(),
                refresh.as_millis(),
                latest.as_secs_f64() * 1e3
            ),
            met: late_gap == 0,
            note: (late_gap == 0 && late_interval > 0).then(|| {
                format!(
                    "not under a strict {} ms reading: the jitter lengthens a refresh cycle up to {} ms",
                    refresh.as_millis(),
                    max_gap.as_millis()
                )
            }),
        });
    }
    report.csv(
        "s4.csv",
        "rule,removed_stop,requests,errors,p99_ms,churn_events,instances_removed,requests_after_removal,later_than_interval,later_than_max_gap,latest_after_removal_ms,share_to_added,added_share_of_listed_time",
        &csv,
    );
    report.add(&format!(
        "## S4: churn\n\n\
         {} instances listed at a time; every second {} new backends are started and listed and {} listed ones \
         removed (seeded choice), through `StaticSource::set_instances`. Refresh every {} ms with ±10 % jitter \
         (so at most {} ms between refreshes). Open loop at {}/s for {} s per row, default retry policy and \
         outlier detection. A removed backend records the delay after its removal of every request it then \
         receives. The last two columns compare the traffic the instances added during the run got with their \
         share of the listed instance-time.\n\n{}\n",
        opts.s4_instances,
        opts.churn,
        opts.churn,
        refresh.as_millis(),
        max_gap.as_millis(),
        opts.s4_rate,
        opts.s4_duration,
        table.markdown()
    ));
    Ok(goals)
}
