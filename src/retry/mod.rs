//! Retries onto the same and the next instances, inside the balancer
//! (Ribbon's `RetryHandler` / Spring Cloud's `LoadBalancedRetryPolicy`).
//!
//! Retrying must re-pick, so it cannot be a separate outer layer: the
//! [`LoadBalancer`](crate::LoadBalancer) runs the attempts itself under a
//! [`RetryPolicy`]:
//!
//! - **How many**: `max_same` retries on the same instance (Ribbon
//!   `MaxAutoRetries`, default 0) and `max_next` retries on other instances
//!   (Ribbon `MaxAutoRetriesNextServer`, default 1): 2 attempts in all by
//!   default. A next-instance retry never returns to an instance already
//!   tried while an untried eligible one exists (Envoy's `previous_hosts`).
//! - **What**: a connect failure (refused, connect timeout, a request
//!   hyper-util handed back unsent, an HTTP/2 stream refused with
//!   `REFUSED_STREAM` or above an abrupt `GOAWAY`'s last stream id) is always
//!   retryable, since the request provably never reached a server (not a
//!   request hyper's HTTP/2 client queued at the server's stream limit
//!   when the connection ended: hyper's error for it does not say it was
//!   unsent, so it is another transport error). Other
//!   transport errors, read timeouts (including the per-try timeout) and the
//!   [retryable statuses](RetryPolicy::retryable_statuses) (default 502, 503,
//!   504) are retried only for idempotent methods (GET, HEAD, OPTIONS, TRACE,
//!   PUT, DELETE; RFC 9110 §9.2.2), unless the policy
//!   ([`retry_on_all_operations`](RetryPolicy::retry_on_all_operations),
//!   Ribbon `OkToRetryOnAllOperations`) or the request (the
//!   [`RetryNonIdempotent`] extension) opts in.
//! - **Bodies**: a request is retried only if its body can be replayed
//!   ([`ReplayBody`]); a streaming body is never replayed once it started.
//! - **When**: jittered exponential backoff ("full jitter":
//!   `uniform(0, min(cap, base × 2^n))`), a `Retry-After` on 429/503 honoured
//!   when it fits before the deadline, gRPC's `grpc-retry-pushback-ms` in
//!   place of the backoff (negative or unparsable: no retry, gRFC A6), an
//!   optional per-try timeout and an optional overall deadline.
//! - **How much**: a retry budget (Finagle's `RetryBudget`, with the
//!   windows of tower's [`TpsBudget`](tower::retry::budget::TpsBudget),
//!   lock-free deposits and exact ratios): retries may add at most
//!   `ratio` of recent requests plus `min_per_sec` per second over a `ttl`
//!   window (default 20 % + 10/s over 10 s), so retries cannot multiply load.
//!
//! ```
//! use std::time::Duration;
//! use tower_ribbon::retry::{RetryBudgetConfig, RetryPolicy};
//!
//! let policy = RetryPolicy::default()
//!     .max_next(2)
//!     .retryable_statuses([503])
//!     .per_try_timeout(Duration::from_millis(500))
//!     .deadline(Duration::from_secs(2))
//!     .budget(RetryBudgetConfig::default().ratio(0.1));
//! assert_eq!(policy.get_max_next(), 2);
//! ```

use std::time::Duration;

use http::{HeaderValue, Method};

use crate::error::BuildError;
use crate::rng::AtomicRng;
use crate::stats::Outcome;

mod body;
mod budget;
mod tps;
mod upload;

/// Moved to [`crate::error::Attempt`]; kept here so old paths compile.
pub use crate::error::Attempt;
pub use body::{BufferError, ReplayBody, TryCloneBody, UNSENT_REPLAY_MAX};
pub use budget::RetryBudgetConfig;
pub(crate) use tps::{TpsBudget, Withdrawal};
pub use upload::Upload;

/// Marks one request as safe to retry even though its method is not
/// idempotent (insert it into the request's extensions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryNonIdempotent;

/// When and how often a request is retried. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    max_same: u32,
    max_next: u32,
    retryable_statuses: Vec<u16>,
    all_operations: bool,
    backoff_base: Duration,
    backoff_cap: Duration,
    per_try_timeout: Option<Duration>,
    deadline: Option<Duration>,
    max_retry_after: Duration,
    budget: RetryBudgetConfig,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_same: 0,
            max_next: 1,
            retryable_statuses: vec![502, 503, 504],
            all_operations: false,
            backoff_base: Duration::from_millis(10),
            backoff_cap: Duration::from_millis(250),
            per_try_timeout: None,
            deadline: None,
            max_retry_after: Duration::from_secs(10),
            budget: RetryBudgetConfig::default(),
        }
    }
}

impl RetryPolicy {
    /// No retries at all: one attempt per request.
    pub fn none() -> Self {
        Self::default().max_same(0).max_next(0)
    }

    /// Retries on the same instance. Ribbon key `MaxAutoRetries`. Default 0.
    pub fn max_same(mut self, n: u32) -> Self {
        self.max_same = n;
        self
    }

    /// Retries on other instances. Ribbon key `MaxAutoRetriesNextServer`.
    /// Default 1.
    pub fn max_next(mut self, n: u32) -> Self {
        self.max_next = n;
        self
    }

    /// Response statuses retried for idempotent requests. Spring key
    /// `retryableStatusCodes`. Default 502, 503, 504.
    pub fn retryable_statuses(mut self, codes: impl IntoIterator<Item = u16>) -> Self {
        self.retryable_statuses = codes.into_iter().collect();
        self
    }

    /// Treat every method as idempotent. Ribbon key
    /// `OkToRetryOnAllOperations`. Default `false`.
    pub fn retry_on_all_operations(mut self, on: bool) -> Self {
        self.all_operations = on;
        self
    }

    /// Backoff before retry `n` (0-based): uniform in
    /// `0..min(cap, base × 2^n)`. Defaults: base 10 ms, cap 250 ms. A cap
    /// below the base is refused when the balancer is built
    /// ([`BuildError`] naming `RetryPolicy::backoff`).
    pub fn backoff(mut self, base: Duration, cap: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_cap = cap;
        self
    }

    /// Bound on one attempt; when it expires the attempt counts as a read
    /// timeout. Ribbon key `ReadTimeout` (which Ribbon applies per attempt).
    /// Default: none here, so the balancer's
    /// [`Builder::read_timeout`](crate::Builder::read_timeout) applies (5 s,
    /// Ribbon's); set here, this one takes precedence.
    ///
    /// It runs from the send until the response headers; for a streamed
    /// body that reports its upload ([`Upload`]), from the upload's end,
    /// bounding the time since its last frame while it lasts.
    ///
    /// Keep it above the client's connect timeout: the balancer cannot see
    /// whether a connection was made when this timeout fires, so a connect
    /// it cuts off counts as a read timeout, and a non-idempotent request
    /// is then not retried even though it never reached a server.
    pub fn per_try_timeout(mut self, timeout: Duration) -> Self {
        self.per_try_timeout = Some(timeout);
        self
    }

    /// Bound on the whole request, all attempts and backoffs included, and
    /// the wait for the service's first instance list (a request that
    /// waits for it past the deadline ends with a discovery error whose
    /// [`timeout`](crate::Error::timeout) is the deadline); a request past
    /// it ends with the last attempt's result, or
    /// [`Error::Timeout`](crate::Error) if an attempt is cut off. Default:
    /// none.
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Longest `Retry-After` honoured: a 429 or 503 asking to wait longer
    /// is returned to the caller instead of retried. Bounds gRPC's
    /// `grpc-retry-pushback-ms` too (a negative or unparsable pushback is
    /// never retried, as gRFC A6 says). Default 10 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.max_retry_after = max;
        self
    }

    /// The longest `Retry-After` honoured.
    pub fn get_max_retry_after(&self) -> Duration {
        self.max_retry_after
    }

    /// The retry budget. Default 20 % + 10/s over 10 s.
    pub fn budget(mut self, budget: RetryBudgetConfig) -> Self {
        self.budget = budget;
        self
    }

    /// Same-instance retries.
    pub fn get_max_same(&self) -> u32 {
        self.max_same
    }

    /// Next-instance retries.
    pub fn get_max_next(&self) -> u32 {
        self.max_next
    }

    /// The per-try timeout.
    pub fn get_per_try_timeout(&self) -> Option<Duration> {
        self.per_try_timeout
    }

    /// The overall deadline.
    pub fn get_deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// The budget settings.
    pub fn get_budget(&self) -> &RetryBudgetConfig {
        &self.budget
    }

    /// Whether `method` may be retried after it may have reached a server.
    pub fn is_idempotent(&self, method: &Method) -> bool {
        self.all_operations
            || matches!(
                *method,
                Method::GET
                    | Method::HEAD
                    | Method::OPTIONS
                    | Method::TRACE
                    | Method::PUT
                    | Method::DELETE
            )
    }

    /// Why an attempt may be retried, or `None`. `status` is the response
    /// status when there was a response; `idempotent` says whether the
    /// request may be repeated after it may have reached a server.
    pub fn retry_reason(
        &self,
        outcome: Outcome,
        status: Option<u16>,
        idempotent: bool,
    ) -> Option<RetryReason> {
        match (outcome, status) {
            // A connect timeout also never reached a server.
            (Outcome::ConnectFailure | Outcome::ConnectTimeout | Outcome::Declined, _) => {
                Some(RetryReason::ConnectFailure)
            }
            (Outcome::ReadTimeout, _) if idempotent => Some(RetryReason::Timeout),
            (Outcome::OtherError | Outcome::ConnectionLost, _) if idempotent => {
                Some(RetryReason::Transport)
            }
            (_, Some(code)) if idempotent && self.retryable_statuses.contains(&code) => {
                Some(RetryReason::Status(code))
            }
            _ => None,
        }
    }

    /// Whether `code` is a retryable status.
    pub fn is_retryable_status(&self, code: u16) -> bool {
        self.retryable_statuses.contains(&code)
    }

    /// The backoff before retry `n` (0-based).
    pub(crate) fn backoff_for(&self, n: u32, rng: &AtomicRng) -> Duration {
        let ceiling = self
            .backoff_base
            .saturating_mul(1u32 << n.min(20))
            .min(self.backoff_cap);
        ceiling.mul_f64(rng.unit_f64())
    }

    /// Checks the policy and builds its budget (`None` when unlimited).
    ///
    /// # Errors
    /// [`BuildError::Invalid`] naming the setting: a backoff cap below its
    /// base, a zero per-try timeout or deadline, a retryable status outside
    /// 100..=599, or a budget out of range.
    pub(crate) fn build(&self) -> Result<Option<TpsBudget>, BuildError> {
        if self.backoff_cap < self.backoff_base {
            return Err(BuildError::invalid(
                "RetryPolicy::backoff",
                "cap below base",
            ));
        }
        if self.per_try_timeout == Some(Duration::ZERO) {
            return Err(BuildError::invalid("RetryPolicy::per_try_timeout", "zero"));
        }
        if self.deadline == Some(Duration::ZERO) {
            return Err(BuildError::invalid("RetryPolicy::deadline", "zero"));
        }
        if let Some(code) = self
            .retryable_statuses
            .iter()
            .find(|c| !(100..=599).contains(*c))
        {
            let reason = format!("{code} is not an HTTP status");
            return Err(BuildError::invalid(
                "RetryPolicy::retryable_statuses",
                reason,
            ));
        }
        if self.max_attempts() == 1 {
            // Nothing to budget: skip the deposit on every request.
            self.budget.validate()?;
            return Ok(None);
        }
        self.budget.build()
    }

    /// Total attempts the policy allows: `(1 + max_same) × (1 + max_next)`.
    pub fn max_attempts(&self) -> u32 {
        self.max_same
            .saturating_add(1)
            .saturating_mul(self.max_next.saturating_add(1))
    }
}

/// Why a retry was made (the `reason` label of `ribbon_retries_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryReason {
    /// The request provably never reached a server
    /// ([`Outcome::ConnectFailure`], [`Outcome::ConnectTimeout`] or
    /// [`Outcome::Declined`]: the connection could not be made, the client
    /// handed the request back unsent, or the server did not process its
    /// HTTP/2 stream).
    ConnectFailure,
    /// Read or per-try timeout (idempotent requests only).
    Timeout,
    /// Another transport error, or [`Outcome::ConnectionLost`]
    /// (idempotent requests only).
    Transport,
    /// A retryable status (idempotent requests only).
    Status(u16),
}

impl RetryReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect_failure",
            RetryReason::Timeout => "timeout",
            RetryReason::Transport => "transport",
            RetryReason::Status(_) => "status",
        }
    }
}

/// Parses `Retry-After` (delta seconds or an HTTP date) relative to `now`.
pub(crate) fn parse_retry_after(
    value: &HeaderValue,
    now: std::time::SystemTime,
) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Delta seconds that overflow: the longest wait, not no header.
        return Some(Duration::MAX);
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_follow_idempotency() {
        let p = RetryPolicy::default();
        use Outcome::*;
        assert_eq!(
            p.retry_reason(ConnectFailure, None, false),
            Some(RetryReason::ConnectFailure)
        );
        assert_eq!(p.retry_reason(ReadTimeout, None, false), None);
        assert_eq!(
            p.retry_reason(ReadTimeout, None, true),
            Some(RetryReason::Timeout)
        );
        assert_eq!(p.retry_reason(OtherError, None, false), None);
        // The server may have processed a stream its connection's end took.
        assert_eq!(p.retry_reason(ConnectionLost, None, false), None);
        assert_eq!(
            p.retry_reason(ConnectionLost, None, true),
            Some(RetryReason::Transport)
        );
        assert_eq!(
            p.retry_reason(OtherError, None, true),
            Some(RetryReason::Transport)
        );
        let s503 = FailureStatus(503);
        assert_eq!(
            p.retry_reason(s503, Some(503), true),
            Some(RetryReason::Status(503))
        );
        assert_eq!(p.retry_reason(s503, Some(503), false), None);
        assert_eq!(p.retry_reason(FailureStatus(500), Some(500), true), None);
        assert_eq!(p.retry_reason(Success, Some(200), true), None);
        // Retryable even when not counted as a failure.
        assert_eq!(
            p.retry_reason(Success, Some(502), true),
            Some(RetryReason::Status(502))
        );
        assert!(p.is_idempotent(&Method::PUT));
        assert!(!p.is_idempotent(&Method::POST));
        assert!(!p.is_idempotent(&Method::PATCH));
        assert!(
            p.clone()
                .retry_on_all_operations(true)
                .is_idempotent(&Method::POST)
        );
        assert_eq!(p.max_attempts(), 2);
        assert_eq!(p.clone().max_same(1).max_next(2).max_attempts(), 6);
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        let p =
            RetryPolicy::default().backoff(Duration::from_millis(10), Duration::from_millis(40));
        let rng = AtomicRng::with_seed(3);
        for n in 0..10 {
            let ceiling = Duration::from_millis((10u64 << n).min(40));
            for _ in 0..100 {
                assert!(p.backoff_for(n, &rng) < ceiling);
            }
        }
    }

    #[test]
    fn retry_after_forms() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
        let v = HeaderValue::from_static("7");
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(7)));
        let v = HeaderValue::from_static("Wed, 21 Oct 2015 07:28:10 GMT");
        assert_eq!(parse_retry_after(&v, now), Some(Duration::from_secs(10)));
        let v = HeaderValue::from_static("soon");
        assert_eq!(parse_retry_after(&v, now), None);
    }

    /// Delta seconds past `u64::MAX` ask for a longer wait than any that
    /// fits, not for none: they must exceed every `max_retry_after` (so the
    /// retry stops) instead of reading as no header (retried at once).
    #[test]
    fn retry_after_beyond_u64_is_the_longest_wait() {
        let now = std::time::UNIX_EPOCH;
        for text in ["18446744073709551616", "99999999999999999999999999999999"] {
            let v = HeaderValue::from_static(text);
            assert_eq!(parse_retry_after(&v, now), Some(Duration::MAX), "{text}");
        }
        let v = HeaderValue::from_static("18446744073709551615");
        assert_eq!(
            parse_retry_after(&v, now),
            Some(Duration::from_secs(u64::MAX))
        );
        let v = HeaderValue::from_static("-1");
        assert_eq!(parse_retry_after(&v, now), None);
    }

    #[test]
    fn budget_settings_are_validated() {
        assert!(RetryBudgetConfig::default().build().unwrap().is_some());
        assert!(RetryBudgetConfig::unlimited().build().unwrap().is_none());
        assert!(
            RetryBudgetConfig::default()
                .ttl(Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(RetryBudgetConfig::default().ratio(-1.0).build().is_err());
        assert!(
            RetryBudgetConfig::default()
                .ratio(f32::NAN)
                .build()
                .is_err()
        );
    }
}
