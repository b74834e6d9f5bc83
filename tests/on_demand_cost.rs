//! The cost of one new on-demand service no longer grows in allocations
//! with the services already known (helper 211). `Shared::add_service`
//! copied the whole map on every insert with one `String` key allocation
//! per entry and walked it twice more; a refused name (cap reached) sorted
//! every known name for the error's note. Observed before (debug build):
//! the call adding service n allocated n + 24 times (8 216 at n = 8 192),
//! filling 8 192 slots took 7.9 s, a refused name at a cap of 16 384 took
//! 49 ms. Now: 24 allocations at every n (keys are `Arc<str>`, the count
//! of on-demand services is kept, the note selects its ten names), filling
//! 8 192 took 2.7 s in a debug build (the map copy is still a reference
//! count per known service, which is why `max_services` is at most
//! 65 536).
//!
//! Counted with a per-thread counting allocator on a current-thread runtime
//! (deterministic); times are printed, not asserted.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

#[global_allocator]
static GLOBAL: counting_alloc::Counting = counting_alloc::Counting;

use std::time::{Duration, Instant};

use http::{Request, Response};
use tower_ribbon::discovery::StaticSource;
use tower_ribbon::{BoxError, LoadBalancer};

fn get(host: &str) -> Request<String> {
    Request::get(format!("http://{host}/"))
        .body(String::new())
        .unwrap()
}

fn echo() -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<Response<String>, BoxError>> + Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(|req: Request<String>| async move {
        Ok::<_, BoxError>(Response::new(req.uri().to_string()))
    })
}

#[tokio::test(start_paused = true)]
async fn a_new_on_demand_service_costs_o_of_the_services_known() {
    const CAP: usize = 8_192;
    let lb = LoadBalancer::builder()
        .source(StaticSource::new())
        .discover_on_demand(true)
        .max_services(CAP)
        .on_demand_idle(Duration::from_secs(3_600))
        .build(echo())
        .unwrap();
    let mut per_insert = Vec::new();
    let started = Instant::now();
    let mut last_window = Instant::now();
    for i in 0..CAP {
        let name = format!("made-up-{i:05}");
        let request = get(&name);
        let before = counting_alloc::allocs();
        // The insert happens inside the call, before the future is polled.
        let future = lb.request(request);
        let allocs = counting_alloc::allocs() - before;
        drop(future);
        if i + 1 == 1_024 || i + 1 == 4_096 || i + 1 == CAP {
            per_insert.push((i + 1, allocs, last_window.elapsed()));
        }
        if i % 1_024 == 1_023 {
            last_window = Instant::now();
        }
    }
    let fill = started.elapsed();
    // Past the cap: a refused made-up name.
    let before = counting_alloc::allocs();
    let t = Instant::now();
    let refused = lb.request(get("one-more"));
    let refused_allocs = counting_alloc::allocs() - before;
    let refused_time = t.elapsed();
    let err = refused.await.unwrap_err();
    assert!(err.is_unknown_service());
    eprintln!(
        "fill of {CAP}: {fill:?}; allocations of the call adding service n: {per_insert:?}; a refused name: {refused_allocs} allocations, {refused_time:?}"
    );
    let (small, large) = (per_insert[0].1, per_insert[2].1);
    // A new service's allocations do not grow with the services known.
    assert_eq!(
        large, small,
        "adding the {CAP}th service took {large} allocations, the 1 024th {small}"
    );
    assert!(refused_allocs < 200, "{refused_allocs}");
}
