//! The YAML flattener built each nested map's dotted key before anything
//! was charged to the 8 MiB output budget (only leaves were), and keeps
//! every ancestor's key alive down the recursion. A key can be an alias to
//! a large anchored scalar, so 62 nested maps keyed by one 512 KiB scalar
//! over an empty map (0.5 MiB of YAML, under the 1 MiB text bound and far
//! under the 100 000-node bound) were read, `Ok`, with a peak heap growth
//! of 1 923 MiB in 4.8 s; one 400 KiB aliased key over 40 000 empty maps
//! took 3.1 s (helper 239). Every key is now charged as it is built: both
//! are refused ("more than 8388608 bytes of keys and values"), at a peak
//! growth of 10 to 11 MiB.
use std::time::{Duration, Instant};

use tower_ribbon::config::RibbonConfig;

#[path = "common/peak_alloc.rs"]
mod peak_alloc;

#[global_allocator]
static GLOBAL: peak_alloc::Peak = peak_alloc::Peak;

fn measured<T>(f: impl FnOnce() -> T) -> (T, Duration, usize) {
    let base = peak_alloc::live();
    peak_alloc::set_peak(base);
    let start = Instant::now();
    let out = f();
    (
        out,
        start.elapsed(),
        peak_alloc::peak().saturating_sub(base),
    )
}

/// `depth` nested maps, each keyed by the alias `*k` of a `key_len`-byte
/// scalar, ending in an empty map (no output, so nothing is charged).
fn nested_alias_keys(key_len: usize, depth: usize) -> String {
    let mut yaml = format!("anchor: &k {}\nroot:\n", "x".repeat(key_len));
    for d in 0..depth {
        yaml.push_str(&"  ".repeat(d + 1));
        yaml.push_str("*k :");
        yaml.push('\n');
    }
    yaml.push_str(&"  ".repeat(depth + 1));
    yaml.push_str("{}\n");
    yaml
}

#[test]
fn nested_alias_keys_stay_within_the_output_budget() {
    // Depth 62 below `root` (the parser's bound is 64 levels as written).
    let yaml = nested_alias_keys(512 * 1024, 62);
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_yaml_str(&yaml));
    eprintln!(
        "{} bytes of YAML: {:?} in {elapsed:?}, peak heap growth {} MiB",
        yaml.len(),
        result.as_ref().map(|_| "ok").map_err(|e| e
            .to_string()
            .chars()
            .take(200)
            .collect::<String>()),
        peak >> 20
    );
    assert!(
        peak < 64 << 20,
        "peak heap growth {} MiB for {} bytes of YAML",
        peak >> 20,
        yaml.len()
    );
    assert!(result.is_err(), "refused by the output budget");
}

/// The same without aliases, CPU: one long key above a map of many empty
/// maps formats the long prefix once per entry, none of it charged.
#[test]
fn a_long_prefix_over_many_empty_maps_is_bounded_in_time() {
    let mut yaml = format!("anchor: &k {}\n*k :\n", "y".repeat(400 * 1024));
    for i in 0..40_000 {
        yaml.push_str(&format!("  k{i}: {{}}\n"));
    }
    let (result, elapsed, peak) = measured(|| RibbonConfig::from_yaml_str(&yaml));
    eprintln!(
        "{} bytes of YAML: {:?} in {elapsed:?}, peak heap growth {} MiB",
        yaml.len(),
        result.as_ref().map(|_| "ok").map_err(|e| e
            .to_string()
            .chars()
            .take(200)
            .collect::<String>()),
        peak >> 20
    );
    assert!(
        elapsed < Duration::from_secs(8),
        "{elapsed:?} for {} bytes of YAML",
        yaml.len()
    );
    assert!(result.is_err(), "refused by the output budget");
}
