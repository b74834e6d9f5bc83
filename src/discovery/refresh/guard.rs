//! A panic in code the refresh task runs for the user (an
//! [`InstanceSource`]'s fetch, a [`Rule`]'s picker build) caught and turned
//! into a failed refresh, so that the task goes on refreshing.
//!
//! Without it, one panic ended the task for good: the last list stayed in
//! place with no refresh behind it, so instances the registry dropped later
//! kept their traffic, and instances it added never got any. Ribbon's
//! `PollingServerListUpdater` and Eureka's `TimedSupervisorTask` catch a
//! failed update cycle the same way, for the same reason (a Java
//! `ScheduledExecutorService` stops a periodic task after one uncaught
//! exception).
//!
//! [`InstanceSource`]: super::InstanceSource
//! [`Rule`]: crate::rule::Rule

use std::any::Any;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::task::Poll;

use crate::error::DiscoveryError;

/// `make()`'s future, driven to its end, with a panic while making or
/// polling it given as [`DiscoveryError::Panicked`] (`during` names the
/// code that panicked). The future is not polled again after a panic.
pub(super) async fn fetch_guarded<F, T>(
    during: &'static str,
    make: impl FnOnce() -> F,
) -> Result<T, DiscoveryError>
where
    F: Future<Output = Result<T, DiscoveryError>>,
{
    let fut = match catch_unwind(AssertUnwindSafe(make)) {
        Ok(fut) => fut,
        Err(payload) => return Err(panicked(during, payload.as_ref())),
    };
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(
        |cx| match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(poll) => poll,
            Err(payload) => Poll::Ready(Err(panicked(during, payload.as_ref()))),
        },
    )
    .await
}

/// `work()`, with a panic given as [`DiscoveryError::Panicked`].
pub(super) fn run_guarded<T>(
    during: &'static str,
    work: impl FnOnce() -> Result<T, DiscoveryError>,
) -> Result<T, DiscoveryError> {
    catch_unwind(AssertUnwindSafe(work))
        .unwrap_or_else(|payload| Err(panicked(during, payload.as_ref())))
}

/// The error for a panic with `payload` (its message when it is text,
/// quoted: cut and escaped, as any outside text in an error).
pub(crate) fn panicked(during: &'static str, payload: &(dyn Any + Send)) -> DiscoveryError {
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .map_or_else(
            || "(a panic without a text message)".to_owned(),
            crate::error::quote,
        );
    DiscoveryError::Panicked { during, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_making_or_polling_the_future_is_an_error_with_its_message() {
        let made: Result<(), _> =
            fetch_guarded("the instance source", || -> std::future::Ready<_> {
                panic!("no future")
            })
            .await;
        let polled: Result<(), _> = fetch_guarded("the instance source", || async {
            tokio::task::yield_now().await;
            panic!("{}", "line\nforged")
        })
        .await;
        let fine = fetch_guarded("the instance source", || async { Ok(7) }).await;
        assert_eq!(
            made.unwrap_err().to_string(),
            "the instance source panicked: no future; keeping the last list"
        );
        assert_eq!(
            polled.unwrap_err().to_string(),
            "the instance source panicked: line\\nforged; keeping the last list"
        );
        assert_eq!(fine.unwrap(), 7);
    }

    #[test]
    fn a_panic_in_work_is_an_error_and_a_long_message_is_cut() {
        let long = "x".repeat(10_000);
        let err = run_guarded::<()>("the rule", || std::panic::panic_any(long.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("the rule panicked: xxx"), "{err}");
        assert!(err.len() < 200, "{} bytes", err.len());
        let odd = run_guarded::<()>("the rule", || std::panic::panic_any(42_u32));
        assert_eq!(
            odd.unwrap_err().to_string(),
            "the rule panicked: (a panic without a text message); keeping the last list"
        );
    }
}
