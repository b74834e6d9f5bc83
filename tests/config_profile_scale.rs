//! Two passes of the profile reader (`src/config/profiles.rs`) were
//! quadratic, reachable from config files well under the 1 MiB text bound
//! and the 100 000-node YAML bound (helper 239):
//!
//! 1. For each group name a document defines, the document's every key was
//!    read again: 500 groups took 0.86 s, 1 000 3.8 s, 2 000 (67 KB of
//!    YAML) 15.7 s, 20 000 (700 KB) over 6 min of CPU (debug build). Now
//!    each key is relaxed once: 2 000 in 0.2 to 0.55 s, 20 000 in 2.3 s,
//!    linear.
//! 2. Each document was matched against the list of early documents:
//!    `.properties` of 10 000 documents took 1.2 s, 20 000 3.8 s, 40 000
//!    (360 KB) 13.2 s. Now decided once per document: 40 000 in 1.5 to
//!    1.8 s, 80 000 in 3.1 s, linear.
//!
//! The limits leave room for a loaded debug build and fail the quadratic
//! readers several times over.
use std::time::{Duration, Instant};

use tower_ribbon::config::RibbonConfig;

const LIMIT: Duration = Duration::from_secs(8);

#[test]
fn a_chain_of_2000_profile_groups_reads_quickly() {
    let mut yaml = String::from("spring.profiles.active: g0\n");
    for i in 0..2_000 {
        yaml.push_str(&format!("spring.profiles.group.g{i}: g{}\n", i + 1));
    }
    let start = Instant::now();
    let config = RibbonConfig::from_yaml_str(&yaml);
    let elapsed = start.elapsed();
    eprintln!(
        "{} bytes: {:?} in {elapsed:?}",
        yaml.len(),
        config.as_ref().map(|c| c.warnings().len())
    );
    assert!(
        elapsed < LIMIT,
        "{elapsed:?} for {} bytes of YAML",
        yaml.len()
    );
    // The chain g0 → g1 → … is cut at MAX_PROFILES, with one warning.
    assert_eq!(config.map(|c| c.warnings().len()).ok(), Some(1));
}

#[test]
fn forty_thousand_properties_documents_read_quickly() {
    let text = "a=1\n#---\n".repeat(40_000);
    let start = Instant::now();
    let config = RibbonConfig::from_properties_str(&text);
    let elapsed = start.elapsed();
    eprintln!("{} bytes: ok={} in {elapsed:?}", text.len(), config.is_ok());
    assert!(
        elapsed < LIMIT,
        "{elapsed:?} for {} bytes of properties",
        text.len()
    );
}
