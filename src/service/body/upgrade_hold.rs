//! An upgrade response's attempt, held in its extensions for as long as
//! the upgraded connection lives.

use std::sync::Arc;

use super::Completion;

/// The attempt of an upgrade response, in its extensions: dropped with
/// the last clone (the response's, or the connection's from
/// `upgrade::on`), it leaves the in-flight count. Its result is recorded
/// already. A balancer stacked on another holds the inner balancer's hold
/// too, so both attempts last as long as the connection.
#[derive(Clone)]
pub(in crate::service) struct UpgradeHold {
    _attempt: Arc<Completion>,
    _inner: Option<Arc<UpgradeHold>>,
}

/// Moves an upgrade response's completion into its extensions, with its
/// result recorded now; any other response gets its completion back.
#[inline]
pub(super) fn hold_upgrade<B>(
    mut response: http::Response<B>,
    done: Option<Completion>,
) -> (http::Response<B>, Option<Completion>) {
    let Some(mut done) = done else {
        return (response, None);
    };
    if response
        .extensions()
        .get::<hyper::upgrade::OnUpgrade>()
        .is_none()
    {
        return (response, Some(done));
    }
    done.record_now();
    // A balancer under this one put its hold here already: keep it (a
    // plain insert dropped it, and the inner instance left the in-flight
    // count with the 101).
    let inner = response
        .extensions_mut()
        .remove::<UpgradeHold>()
        .map(Arc::new);
    response.extensions_mut().insert(UpgradeHold {
        _attempt: Arc::new(done),
        _inner: inner,
    });
    (response, None)
}
