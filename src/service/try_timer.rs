//! The per-try timer, re-armed instead of registered anew.
//!
//! A tokio `Sleep` registered and cancelled once per request takes the
//! time driver's lock twice, and tokio 1.x shares that lock across every
//! worker thread: on saturated cores it was the largest part of the
//! balancer's cost (see [`timeouts`](super::timeouts), "Cost"). So a
//! finished attempt hands its `Sleep` back, still registered, to a small
//! pool of its thread, and the next attempt there takes it:
//! - a pooled timer due *after* the attempt's deadline is moved earlier
//!   (`Sleep::reset`; tokio files it again under the lock);
//! - one due *at or before* it is left as it is: it fires at its own
//!   deadline, and only if the attempt is still waiting then is it let go
//!   and a timer armed at the attempt's deadline. Most attempts end first,
//!   so a pooled timer is filed once in its life, at most the read timeout
//!   long, and the hot path calls no `Sleep::reset`, which in tokio 1.54
//!   also takes and gives back a count on the runtime's shared handle
//!   (tokio-rs/tokio#7473 would take it only to register a timer).
//!
//! An attempt is never cut before its deadline (a timer that fired at an
//! earlier, inherited deadline is not taken as this attempt's) and no
//! later than tokio's tick after it, as with a fresh `Sleep`. tokio's own
//! account of the lock: tokio-rs/tokio#6504 ("contention on the mutex in
//! the timer driver", open).
//!
//! Pooled only on a multi-thread runtime. Its timers run on real time
//! (tokio pauses time only on a current-thread runtime), its worker threads
//! serve no other runtime, and a runtime's shutdown fires every timer it
//! holds, so a pooled `Sleep` of a runtime that has gone reads as elapsed
//! and is dropped instead of used. On a current-thread runtime (and so in
//! every test with paused time) each attempt arms a fresh `Sleep`, as
//! before. One case is left: a thread that blocks on a multi-thread
//! runtime and then, that runtime still alive, on a current-thread one
//! with paused time takes the first runtime's pooled timers there, which
//! fire in real time (asking which runtime is current would cost a shared
//! reference count per request).
//!
//! An idle pooled timer keeps the waker of the last task that polled it
//! until the next attempt's poll replaces it or its deadline passes; then
//! tokio wakes that task once, spuriously, and lets it go.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::time::{Instant, Sleep};

/// The most idle timers a thread keeps: enough for the attempts one worker
/// has in flight at once in most services; beyond it, a finished attempt's
/// timer is cancelled as before.
const POOL_MAX: usize = 256;

thread_local! {
    static POOL: RefCell<Vec<Pin<Box<Sleep>>>> = const { RefCell::new(Vec::new()) };
}

/// The balancer's own timer fired: the per-try timeout or the request
/// deadline cut the attempt off (read as a read timeout, and named by
/// [`TimedOut`](crate::error::TimedOut)).
#[derive(Debug)]
pub(crate) struct Fired;

impl fmt::Display for Fired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the balancer's timer fired")
    }
}

impl std::error::Error for Fired {}

/// One attempt's timer, firing at `at`: armed at its first poll (an inner
/// service that answers at once arms none), from the thread's pool when it
/// has one.
pub(super) struct TryTimer {
    at: Instant,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether the `Sleep` goes back to the pool when the attempt ends.
    pooled: bool,
}

impl TryTimer {
    pub(super) fn new(at: Instant) -> Self {
        TryTimer {
            at,
            sleep: None,
            pooled: false,
        }
    }

    /// Moves the deadline to `at` (a streamed upload's timer, re-armed at
    /// its end): an armed `Sleep` due later is moved to `at`, one due
    /// earlier is kept (when it fires, the next poll arms one at `at`), one
    /// that has fired is let go and the next poll arms another.
    pub(super) fn rearm(&mut self, at: Instant) {
        self.at = at;
        if let Some(sleep) = &mut self.sleep {
            if sleep.is_elapsed() {
                self.sleep = None;
            } else if sleep.deadline() > at {
                sleep.as_mut().reset(at);
            }
        }
    }

    /// `Ready` once the deadline has passed; else the task is woken then.
    pub(super) fn poll_fired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // At most one turn per timer that fired before `at`: each is let go,
        // and a fresh timer never fires before its deadline.
        loop {
            let sleep = match &mut self.sleep {
                Some(sleep) => sleep,
                None => {
                    let (sleep, pooled) = arm(self.at);
                    self.pooled = pooled;
                    self.sleep.insert(sleep)
                }
            };
            // A pooled timer of a runtime shut down meanwhile has fired;
            // tokio refuses to poll it.
            if !sleep.is_elapsed() {
                // The inner future spends the task's budget; the timer must
                // still register (as tokio's `Timeout` polls its delay).
                let mut fut = tokio::task::unconstrained(sleep.as_mut());
                if Pin::new(&mut fut).poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
            if sleep.deadline() >= self.at {
                return Poll::Ready(());
            }
            // Fired at the earlier deadline a pooled timer came with (or
            // at its runtime's shutdown): not this attempt's.
            self.sleep = None;
        }
    }
}

/// A `Sleep` due no later than `at` and whether it may be pooled: a pooled
/// one (moved to `at` if it was due later), or a new one.
fn arm(at: Instant) -> (Pin<Box<Sleep>>, bool) {
    // `try_with`: a thread tearing down its locals takes no pooled timer.
    // `try_borrow_mut`: nothing here re-enters the pool, but a refusal
    // only costs a fresh timer, never a panic.
    let taken = POOL
        .try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut pool| pool.pop()))
        .ok()
        .flatten();
    if let Some(mut sleep) = taken {
        if !sleep.is_elapsed() {
            // Due at or before `at`: kept, no reset (see the module docs).
            if sleep.deadline() > at {
                sleep.as_mut().reset(at);
            }
            return (sleep, true);
        }
        // Fired idle, or by its runtime's shutdown, which fires them all:
        // drop every fired one, so that none keeps a runtime gone (its
        // handle, its poller's descriptors) at the bottom of the pool.
        drop(sleep);
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                pool.retain(|sleep| !sleep.is_elapsed());
            }
        });
    }
    let pooled =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    (Box::pin(tokio::time::sleep_until(at)), pooled)
}

impl Drop for TryTimer {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        // Not polled here (to forget this task's waker): tokio panics on a
        // poll while its runtime shuts down, and a drop must not. An idle
        // timer keeps the waker until the next attempt's poll replaces it
        // or its deadline passes, when tokio wakes the task once (a
        // spurious wake, which every future tolerates) and lets it go.
        if !self.pooled || sleep.is_elapsed() {
            return;
        }
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOL_MAX {
                    pool.push(sleep);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::Duration;

    use super::*;

    fn pooled() -> usize {
        POOL.with(|p| p.borrow().len())
    }

    fn empty_pool() {
        POOL.with(|p| p.borrow_mut().clear());
    }

    /// Polls `timer` once with `waker`.
    fn poll_once(timer: &mut TryTimer, waker: &Waker) -> Poll<()> {
        timer.poll_fired(&mut Context::from_waker(waker))
    }

    /// A timer fired `waited` after it was armed for `deadline`: no sooner,
    /// and (a guard against a hang, not a bound on tokio) within a minute.
    #[track_caller]
    fn assert_on_time(waited: Duration, deadline: Duration) {
        assert!(
            waited >= deadline,
            "fired after {waited:?}, before {deadline:?}"
        );
        assert!(waited < Duration::from_secs(60), "fired after {waited:?}");
    }

    async fn fired(mut timer: TryTimer) -> Duration {
        let start = std::time::Instant::now();
        std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
        start.elapsed()
    }

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn multi_thread() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A timer handed on to a later deadline fires at the later one, not
    /// at the one it was filed under.
    #[test]
    fn a_timer_moved_later_fires_at_its_new_deadline() {
        multi_thread().block_on(async {
            empty_pool();
            let mut first = TryTimer::new(Instant::now() + Duration::from_millis(20));
            assert!(poll_once(&mut first, Waker::noop()).is_pending());
            drop(first);
            assert_eq!(pooled(), 1);
            let waited = fired(TryTimer::new(Instant::now() + Duration::from_millis(150))).await;
            assert_eq!(pooled(), 0, "the pooled timer was taken");
            assert_on_time(waited, Duration::from_millis(150));
        });
    }

    /// A pooled timer due before the attempt's deadline is taken as it is
    /// (no reset): when it fires there, the attempt is not cut off, and a
    /// timer at the attempt's deadline takes over.
    #[test]
    fn a_pooled_timer_due_earlier_is_kept_and_not_taken_as_the_attempts() {
        multi_thread().block_on(async {
            empty_pool();
            let inherited = Instant::now() + Duration::from_millis(30);
            let mut first = TryTimer::new(inherited);
            assert!(poll_once(&mut first, Waker::noop()).is_pending());
            drop(first);
            let start = std::time::Instant::now();
            let mut timer = TryTimer::new(Instant::now() + Duration::from_millis(120));
            assert!(poll_once(&mut timer, Waker::noop()).is_pending());
            assert_eq!(pooled(), 0, "the pooled timer was taken");
            let kept = timer.sleep.as_ref().map(|s| s.deadline());
            assert_eq!(kept, Some(inherited), "taken without a reset");
            std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
            let waited = start.elapsed();
            assert_on_time(waited, Duration::from_millis(120));
        });
    }

    /// A timer moved earlier (tokio files it again) fires at the earlier
    /// deadline; a fired timer is not pooled.
    #[test]
    fn a_timer_moved_earlier_fires_at_its_new_deadline() {
        multi_thread().block_on(async {
            empty_pool();
            let mut first = TryTimer::new(Instant::now() + Duration::from_secs(3600));
            assert!(poll_once(&mut first, Waker::noop()).is_pending());
            drop(first);
            assert_eq!(pooled(), 1);
            let tokio_start = Instant::now();
            let waited = fired(TryTimer::new(tokio_start + Duration::from_millis(30))).await;
            assert_on_time(waited, Duration::from_millis(30));
            assert_eq!(pooled(), 0, "a fired timer is dropped, not pooled");
        });
    }

    /// An idle pooled timer lets its last task go by its deadline: it
    /// holds the waker until then, wakes it once (spuriously) and drops it.
    #[test]
    fn an_idle_pooled_timer_lets_its_task_go_at_its_deadline() {
        multi_thread().block_on(async {
            empty_pool();
            let count = Arc::new(Count(AtomicUsize::new(0)));
            let waker = Waker::from(Arc::clone(&count));
            let mut first = TryTimer::new(Instant::now() + Duration::from_millis(10));
            assert!(poll_once(&mut first, &waker).is_pending());
            drop(first);
            drop(waker);
            assert_eq!(pooled(), 1);
            assert_eq!(
                Arc::strong_count(&count),
                2,
                "the pooled timer holds the waker"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(count.0.load(Ordering::SeqCst), 1);
            assert_eq!(Arc::strong_count(&count), 1, "the fired timer let it go");
        });
    }

    /// On a current-thread runtime (paused time) every attempt arms its
    /// own timer: none is pooled.
    #[tokio::test(start_paused = true)]
    async fn a_current_thread_runtime_pools_nothing() {
        empty_pool();
        let mut timer = TryTimer::new(Instant::now() + Duration::from_secs(5));
        assert!(poll_once(&mut timer, Waker::noop()).is_pending());
        drop(timer);
        assert_eq!(pooled(), 0);
        let start = Instant::now();
        let mut timer = TryTimer::new(start + Duration::from_secs(5));
        std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(5));
    }

    /// A pooled timer of a runtime shut down since is not used: the next
    /// runtime on the thread arms its own, which fires on time, and every
    /// timer of the runtime gone leaves the pool at the first take.
    #[test]
    fn a_timer_of_a_runtime_gone_is_not_reused() {
        empty_pool();
        let first = multi_thread();
        first.block_on(async {
            let mut timers: Vec<TryTimer> = (0..3)
                .map(|_| TryTimer::new(Instant::now() + Duration::from_secs(3600)))
                .collect();
            for timer in &mut timers {
                assert!(poll_once(timer, Waker::noop()).is_pending());
            }
        });
        assert_eq!(pooled(), 3);
        drop(first);
        multi_thread().block_on(async {
            let timer = TryTimer::new(Instant::now() + Duration::from_millis(40));
            let waited = fired(timer).await;
            assert_on_time(waited, Duration::from_millis(40));
            assert_eq!(pooled(), 0, "the runtime gone left timers behind");
        });
    }

    /// A streamed upload's timer re-armed: after it fired, it fires again
    /// at the new deadline, no sooner; re-armed before firing, it fires at
    /// the later deadline, not the first.
    #[test]
    fn a_rearmed_timer_fires_at_its_new_deadline() {
        multi_thread().block_on(async {
            empty_pool();
            let mut timer = TryTimer::new(Instant::now() + Duration::from_millis(20));
            std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
            let start = std::time::Instant::now();
            timer.rearm(Instant::now() + Duration::from_millis(80));
            std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
            let waited = start.elapsed();
            assert_on_time(waited, Duration::from_millis(80));
            let start = std::time::Instant::now();
            let mut timer = TryTimer::new(Instant::now() + Duration::from_millis(20));
            assert!(poll_once(&mut timer, Waker::noop()).is_pending());
            timer.rearm(Instant::now() + Duration::from_millis(120));
            std::future::poll_fn(|cx| timer.poll_fired(cx)).await;
            let waited = start.elapsed();
            assert_on_time(waited, Duration::from_millis(120));
        });
    }

    /// An attempt that answers at once never arms a timer.
    #[test]
    fn no_timer_until_polled() {
        multi_thread().block_on(async {
            empty_pool();
            drop(TryTimer::new(Instant::now() + Duration::from_secs(5)));
            assert_eq!(pooled(), 0);
        });
    }
}
