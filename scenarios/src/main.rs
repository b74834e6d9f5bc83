//! Benchmark scenarios for tower-ribbon against the direct client and
//! against tower's p2c balancer (issue 6).
//!
//! ```sh
//! cargo run --release -p tower-ribbon-scenarios -- all          # everything, ~4 min on 2 cores
//! cargo run --release -p tower-ribbon-scenarios -- s1 --duration 30 --rate 4000
//! cargo run --release -p tower-ribbon-scenarios -- --help
//! ```
//!
//! Commands: `overhead`, `pathcost`, `s1`, `s2`, `s3`, `s4`, `all`. Every figure comes
//! from real HTTP/1 requests over 127.0.0.1 between hyper-util's client and
//! hyper servers in this process (one Tokio runtime, one worker per core).
//!
//! **Backends.** Each answers after a delay drawn per request from a
//! log-normal distribution, median 5 ms and sigma 0.3 by default
//! (`--median-ms`, `--sigma`): p90 7.4 ms, p99 10.1 ms, p99.9 12.7 ms of
//! the draws, from a `SmallRng` per backend seeded from `--seed` and the
//! backend's index. Tokio's timer rounds sleeps up to its 1 ms tick. See
//! `backend.rs`.
//!
//! **Load.** The scenarios use an open loop: requests start at a fixed
//! rate (`--rate`, default 2 000/s; S4 `--s4-rate`, default 1 000/s)
//! whatever earlier ones are doing, as Linkerd's `slow_cooker` did, each
//! bounded by a hard timeout (`--hard-timeout-ms`, 1 s). The overhead
//! measurement uses a closed loop with `--concurrency` requests in flight
//! (default 32), then one in flight.
//!
//! - `overhead`: hyper-util's client calling one local backend (0 ms)
//!   directly vs through `LoadBalancer` (round robin with the default and
//!   with no retry policy, `PeakEwmaP2c`) and tower's p2c; 1 s slices
//!   interleaved across the modes so background noise hits all alike.
//! - `s1`: Linkerd's "Beyond Round Robin" scaled down: 11 backends, one
//!   12× slower for the middle third of each run; every rule without
//!   retries (`RetryPolicy::none()`) and with the default policy plus a
//!   per-try timeout of 5× median, tower's p2c, and a baseline run of the
//!   best rule without the slow backend. Success = a 200 within 10× median.
//! - `s2`: 12 backends, the first third at half speed (2× latency); in
//!   flight per backend sampled every 10 ms.
//! - `s3`: 10 backends, 3 of them answer 503 at once; `max_next(3)` with
//!   no retry budget vs the default budget.
//! - `s4`: 6 listed instances, 2 replaced every second via
//!   `StaticSource::set_instances`, refresh every 200 ms; removed backends
//!   keep running and record every request they get.
//!
//! Results: Markdown on stdout and in `target/scenarios/results.md`
//! (`results-<cmd>.md` for a single command), CSV files beside it, and the
//! S1 plots in `docs/plots/`.

mod backend;
mod client;
mod load;
mod overhead;
mod pathcost;
mod plot;
mod report;
mod s1;
mod s2;
mod s3;
mod s4;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend::{BackendSpec, LatencyModel, SimBackend};
use report::{Report, Table};

/// Errors of a scenario.
pub type BoxError = Box<dyn std::error::Error>;

/// Every knob, with its default.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    pub median_ms: f64,
    pub sigma: f64,
    pub slow_factor: f64,
    /// Success timeout, in medians.
    pub timeout_factor: f64,
    /// Per-try timeout of the "with retries" runs, in medians.
    pub per_try_factor: f64,
    pub backends: Option<usize>,
    pub rate: f64,
    pub duration: f64,
    pub s2_duration: f64,
    pub s3_duration: f64,
    pub s4_duration: f64,
    pub s4_rate: f64,
    pub s4_instances: usize,
    pub churn: usize,
    pub refresh_ms: u64,
    pub concurrency: usize,
    pub overhead_duration: f64,
    pub overhead_c1_duration: f64,
    pub bucket_ms: u64,
    pub hard_timeout_ms: u64,
    pub wrt_interval_ms: u64,
    pub plots: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            seed: 6,
            median_ms: 5.0,
            sigma: 0.3,
            slow_factor: 12.0,
            timeout_factor: 10.0,
            per_try_factor: 5.0,
            backends: None,
            rate: 2000.0,
            duration: 6.0,
            s2_duration: 4.0,
            s3_duration: 4.0,
            s4_duration: 8.0,
            s4_rate: 1000.0,
            s4_instances: 6,
            churn: 2,
            refresh_ms: 200,
            concurrency: 32,
            overhead_duration: 5.0,
            overhead_c1_duration: 2.0,
            bucket_ms: 250,
            hard_timeout_ms: 1000,
            wrt_interval_ms: 1000,
            plots: true,
        }
    }
}

impl Options {
    /// The latency model of the backends.
    pub fn model(&self) -> LatencyModel {
        LatencyModel {
            median_ms: self.median_ms,
            sigma: self.sigma,
        }
    }

    /// A 200 within this counts as a success.
    pub fn success_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.median_ms * self.timeout_factor / 1e3)
    }

    /// Per-try timeout of the runs with retries.
    pub fn per_try_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.median_ms * self.per_try_factor / 1e3)
    }

    /// The bound on one request.
    pub fn hard_timeout(&self) -> Duration {
        Duration::from_millis(self.hard_timeout_ms)
    }

    /// The hit-bucket width.
    pub fn bucket(&self) -> Duration {
        Duration::from_millis(self.bucket_ms.max(1))
    }

    /// Buckets needed to cover `secs` (plus a margin).
    pub fn buckets_for(&self, secs: f64) -> usize {
        (secs * 1e3 / self.bucket_ms.max(1) as f64).ceil() as usize + 8
    }
}

const USAGE: &str = "\
usage: cargo run --release -p tower-ribbon-scenarios -- <overhead|pathcost|s1|s2|s3|s4|all> [flags]

flags (defaults in brackets):
  --seed N                 seed of every draw [6]
  --median-ms X            backend latency median, ms [5]
  --sigma X                backend latency log-normal sigma [0.3]
  --slow-factor X          S1 slow backend latency multiplier [12]
  --timeout-factor X       success timeout in medians [10]
  --per-try-factor X       per-try timeout of runs with retries, in medians [5]
  --backends N             backends in S1/S2/S3 [11/12/10]
  --rate X                 open-loop requests per second in S1-S3 [2000]
  --duration S             seconds per S1 run [6]
  --s2-duration S          seconds per S2 run [4]
  --s3-duration S          seconds per S3 run [4]
  --s4-duration S          seconds per S4 run [8]
  --s4-rate X              requests per second in S4 [1000]
  --s4-instances N         instances listed at once in S4 [6]
  --churn N                instances replaced per second in S4 [2]
  --refresh-ms N           S4 refresh interval [200]
  --concurrency N          overhead: requests in flight [32]
  --overhead-duration S    overhead: seconds per mode at --concurrency [5]
  --overhead-c1-duration S overhead: seconds per mode with 1 in flight [2]
  --bucket-ms N            S1 share bucket width [250]
  --hard-timeout-ms N      bound on one request [1000]
  --wrt-interval-ms N      weighted_response_time recompute interval [1000]
  --scale X                multiply every duration by X [1]
  --no-plots               skip the PNG plots
";

fn parse(args: &[String]) -> Result<(String, Options), String> {
    let mut opts = Options::default();
    let mut command = None;
    let mut scale = 1.0;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        if !arg.starts_with("--") {
            if command.replace(arg.clone()).is_some() {
                return Err(format!("unexpected argument {arg}"));
            }
            continue;
        }
        if arg == "--help" || arg == "-h" {
            return Err(String::new());
        }
        if arg == "--no-plots" {
            opts.plots = false;
            continue;
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{arg} needs a value"))?
            .clone();
        let num = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{arg}: not a number: {v}"))
        };
        let int = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{arg}: not a whole number: {v}"))
        };
        match arg.as_str() {
            "--seed" => opts.seed = int(&value)?,
            "--median-ms" => opts.median_ms = num(&value)?,
            "--sigma" => opts.sigma = num(&value)?,
            "--slow-factor" => opts.slow_factor = num(&value)?,
            "--timeout-factor" => opts.timeout_factor = num(&value)?,
            "--per-try-factor" => opts.per_try_factor = num(&value)?,
            "--backends" => opts.backends = Some(int(&value)?.max(3) as usize),
            "--rate" => opts.rate = num(&value)?.max(1.0),
            "--duration" => opts.duration = num(&value)?,
            "--s2-duration" => opts.s2_duration = num(&value)?,
            "--s3-duration" => opts.s3_duration = num(&value)?,
            "--s4-duration" => opts.s4_duration = num(&value)?,
            "--s4-rate" => opts.s4_rate = num(&value)?.max(1.0),
            "--s4-instances" => opts.s4_instances = int(&value)?.max(2) as usize,
            "--churn" => opts.churn = int(&value)? as usize,
            "--refresh-ms" => opts.refresh_ms = int(&value)?.max(1),
            "--concurrency" => opts.concurrency = int(&value)?.max(1) as usize,
            "--overhead-duration" => opts.overhead_duration = num(&value)?,
            "--overhead-c1-duration" => opts.overhead_c1_duration = num(&value)?,
            "--bucket-ms" => opts.bucket_ms = int(&value)?.max(1),
            "--hard-timeout-ms" => opts.hard_timeout_ms = int(&value)?.max(1),
            "--wrt-interval-ms" => opts.wrt_interval_ms = int(&value)?,
            "--scale" => scale = num(&value)?,
            _ => return Err(format!("unknown flag {arg}")),
        }
    }
    opts.duration *= scale;
    opts.s2_duration *= scale;
    opts.s3_duration *= scale;
    opts.s4_duration *= scale;
    opts.overhead_duration *= scale;
    opts.overhead_c1_duration *= scale;
    let command = command.ok_or_else(String::new)?;
    if !["overhead", "pathcost", "s1", "s2", "s3", "s4", "all"].contains(&command.as_str()) {
        return Err(format!("unknown command {command}"));
    }
    Ok((command, opts))
}

/// One goal of issue 6 with its measured figure.
pub struct Goal {
    pub goal: String,
    pub figure: String,
    pub met: bool,
    /// A qualifier shown next to the verdict (e.g. "within noise").
    pub note: Option<String>,
}

/// Starts `n` backends with the options' latency model; backend `i` draws
/// from a generator seeded by the seed and `i`, in every run alike.
pub async fn start_backends(
    opts: &Options,
    n: usize,
    buckets: usize,
    first_index: usize,
) -> std::io::Result<Vec<Arc<SimBackend>>> {
    let mut backends = Vec::with_capacity(n);
    for i in first_index..first_index + n {
        let spec = BackendSpec {
            model: opts.model(),
            seed: load::mix(opts.seed, 1000 + i as u64),
            bucket: opts.bucket(),
            buckets,
        };
        backends.push(Arc::new(SimBackend::start(i, spec).await?));
    }
    Ok(backends)
}

/// A few lines about the machine and the moment.
fn machine_note() -> String {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_owned();
    let load = read("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!(
        "{cores} cores ({cpu}), {mem_gib:.0} GiB, Linux {kernel}, {rustc}, release profile; \
         load average at start {load}. Client, balancer and backends share the cores \
         (one Tokio multi-thread runtime); the machine may be shared with other work."
    )
}

fn header(command_line: &str, opts: &Options) -> String {
    let model = opts.model();
    format!(
        "# Scenario results\n\n\
         - command: `{command_line}`\n\
         - seed: {seed}\n\
         - machine: {machine}\n\
         - backend latency: {model}\n\
         - load: open loop at a fixed arrival rate (S1-S3 {rate}/s, S4 {s4}/s), every request bounded by {hard} ms; \
         overhead: closed loop, {c} in flight, then 1\n\
         - success = a 200 within {timeout} ms ({tf}× median); \"with retries\" = `RetryPolicy::default()` \
         (1 retry on another instance, budget 20 % + 10/s) with a per-try timeout of {pt} ms ({ptf}× median)\n\n",
        seed = opts.seed,
        machine = machine_note(),
        model = model.describe(),
        rate = opts.rate,
        s4 = opts.s4_rate,
        hard = opts.hard_timeout_ms,
        c = opts.concurrency,
        timeout = opts.success_timeout().as_millis(),
        tf = opts.timeout_factor,
        pt = opts.per_try_timeout().as_millis(),
        ptf = opts.per_try_factor,
    )
}

/// The repository root (this crate lives in `<root>/scenarios`): results go
/// to `<root>/target/scenarios`, plots to `<root>/docs/plots`.
fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

async fn run(command: &str, opts: &Options, command_line: &str) -> Result<(), BoxError> {
    let root = repo_root();
    let out_dir = root.join("target").join("scenarios");
    let plot_dir = root.join("docs").join("plots");
    let mut report = Report::new(&out_dir)?;
    report.add(&header(command_line, opts));
    let started = Instant::now();
    let mut goals = Vec::new();
    if matches!(command, "overhead" | "all") {
        goals.extend(overhead::run(opts, &mut report).await?);
    }
    if matches!(command, "pathcost" | "all") {
        pathcost::run(&mut report).await?;
    }
    if matches!(command, "s1" | "all") {
        goals.extend(s1::run(opts, &mut report, &plot_dir).await?);
    }
    if matches!(command, "s2" | "all") {
        s2::run(opts, &mut report).await?;
    }
    if matches!(command, "s3" | "all") {
        s3::run(opts, &mut report).await?;
    }
    if matches!(command, "s4" | "all") {
        goals.extend(s4::run(opts, &mut report).await?);
    }
    if !goals.is_empty() {
        let mut table = Table::new(&["goal (issue 6)", "figure", "met?"]);
        for g in &goals {
            table.row(vec![
                g.goal.clone(),
                g.figure.clone(),
                match (&g.note, g.met) {
                    (None, true) => "yes".to_owned(),
                    (None, false) => "**no**".to_owned(),
                    (Some(note), true) => format!("yes ({note})"),
                    (Some(note), false) => format!("**no** ({note})"),
                },
            ]);
        }
        report.add(&format!("## Against the goals\n\n{}\n", table.markdown()));
    }
    report.add(&format!(
        "Wall time of `{command}`: {:.0} s.\n",
        started.elapsed().as_secs_f64()
    ));
    let name = if command == "all" {
        "results.md".to_owned()
    } else {
        format!("results-{command}.md")
    };
    let path = report.write(&name)?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, opts) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("error: {message}\n");
            }
            eprint!("{USAGE}");
            return if message.is_empty() && !args.is_empty() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::from(2)
            };
        }
    };
    let command_line = format!(
        "cargo run --release -p tower-ribbon-scenarios -- {}",
        args.join(" ")
    );
    match run(&command, &opts, &command_line).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
