//! Names and labels of what the crate records through the [`metrics`]
//! facade. Install any `metrics` recorder (Prometheus exporter, ...) to see
//! them; without one, recording costs next to nothing.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `ribbon_refresh_success_total` | counter | `service` | successful instance-list fetches |
//! | `ribbon_refresh_failure_total` | counter | `service` | failed fetches (last list kept) |
//! | `ribbon_instances` | gauge | `service` | eligible instances in the current list |
//!
/// Counter: successful instance-list fetches. Label: `service`.
pub const REFRESH_SUCCESS: &str = "ribbon_refresh_success_total";
/// Counter: failed instance-list fetches. Label: `service`.
pub const REFRESH_FAILURE: &str = "ribbon_refresh_failure_total";
/// Gauge: eligible instances in the current list. Label: `service`.
pub const INSTANCES: &str = "ribbon_instances";
