//! [`Attempt`]: one attempt of a request, as an error lists it.

use std::fmt;
use std::time::Duration;

use crate::stats::Outcome;

/// One attempt of a request, as listed by [`Error::attempts`](crate::Error::attempts).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Attempt {
    /// The instance (`scheme://authority`).
    pub instance: String,
    /// How it ended.
    pub outcome: Outcome,
    /// How long it took, from send to the end of the attempt.
    pub elapsed: Duration,
}

impl Attempt {
    pub(crate) fn new(instance: String, outcome: Outcome, elapsed: Duration) -> Self {
        Self {
            instance,
            outcome,
            elapsed,
        }
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} after {:?}",
            self.instance, self.outcome, self.elapsed
        )
    }
}
