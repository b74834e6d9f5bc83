//! Decode time and peak memory of `GET /eureka/apps` bodies through
//! `tower_ribbon::discovery::eureka::wire::parse_applications`, the Rust
//! side of `scripts/bench-eureka-decode` (the Java side is
//! `bench/eureka-decode-java`, Netflix eureka-client's own codec).
//!
//! Run: `cargo bench --bench eureka_decode --features eureka -- FILE [WARMUP] [RUNS] [WARMUP_SECS]`
//! (warm-up: at least WARMUP decodes, default 20, and at least WARMUP_SECS
//! seconds, default 3, as the Java side)
//! (bodies from `scripts/gen-eureka-payload`). Prints one line:
//! `rust instances=N body_mb=X warmup=W runs=K median_ms=M min_ms=M rss_peak_mb=R`,
//! where `rss_peak_mb` is the growth of VmHWM (/proc/self/status) from a
//! baseline taken after the body is read into memory, over all decodes
//! (each result is dropped before the next decode starts).

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use tower_ribbon::discovery::eureka::wire::{self, Applications};

fn vm_hwm_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn count(apps: &Applications) -> usize {
    apps.applications.iter().map(|a| a.instances.len()).sum()
}

fn main() -> ExitCode {
    // cargo passes `--bench`; positional arguments are FILE [WARMUP] [RUNS].
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(file) = args.first() else {
        eprintln!("usage: eureka_decode FILE [WARMUP=20] [RUNS=15] [WARMUP_SECS=3]");
        return ExitCode::from(2);
    };
    let warmup: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let runs: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(15)
        .max(1);
    let warmup_secs: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let body = match std::fs::read(file) {
        Ok(body) => body,
        Err(e) => {
            eprintln!("{file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let base_rss = vm_hwm_kb().unwrap_or(0);

    let instances = match wire::parse_applications(&body) {
        Ok(apps) => count(&apps),
        Err(e) => {
            eprintln!("parse_applications refused {file}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let warm_start = Instant::now();
    let mut warmed = 0usize;
    while warmed < warmup || warm_start.elapsed().as_secs_f64() < warmup_secs {
        warmed += 1;
        black_box(
            wire::parse_applications(black_box(&body))
                .map(|a| count(&a))
                .ok(),
        );
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t0 = Instant::now();
        let apps = wire::parse_applications(black_box(&body));
        ms.push(t0.elapsed().as_secs_f64() * 1e3);
        black_box(apps.map(|a| count(&a)).ok());
    }
    let rss_kb = vm_hwm_kb().unwrap_or(0).saturating_sub(base_rss);
    ms.sort_by(f64::total_cmp);
    let median = if runs % 2 == 1 {
        ms[runs / 2]
    } else {
        (ms[runs / 2 - 1] + ms[runs / 2]) / 2.0
    };
    #[allow(clippy::cast_precision_loss)]
    let (body_mb, rss_mb) = (body.len() as f64 / 1e6, rss_kb as f64 / 1024.0);
    println!(
        "rust instances={instances} body_mb={body_mb:.2} warmup={warmed} runs={runs} \
         median_ms={median:.2} min_ms={:.2} rss_peak_mb={rss_mb:.1}",
        ms[0]
    );
    ExitCode::SUCCESS
}
