//! Collects every configuration problem, so that one load reports them all.

use crate::error::{Error, Result};

/// The problems found so far. Checks that depend on values another check
/// refused (arithmetic on a timer that may be out of range) run only when
/// [`Problems::is_empty`].
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<Error>);

impl Problems {
    /// Keeps the problem(s) of `result`, if any.
    pub(crate) fn check(&mut self, result: Result<()>) {
        if let Err(e) = result {
            self.push(e);
        }
    }

    /// Keeps `e` (each problem of a list).
    pub(crate) fn push(&mut self, e: Error) {
        match e {
            Error::InvalidConfig { problems } => self.0.extend(problems),
            e => self.0.push(e),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok` without problems, the one problem, or all of them.
    pub(crate) fn finish(mut self) -> Result<()> {
        match self.0.len() {
            0 => Ok(()),
            1 => Err(self.0.remove(0)),
            _ => Err(Error::InvalidConfig { problems: self.0 }),
        }
    }

    /// Each problem, changed by `f`, as one error again.
    pub(crate) fn map(e: Error, f: impl Fn(Error) -> Error) -> Error {
        match e {
            Error::InvalidConfig { problems } => Error::InvalidConfig {
                problems: problems.into_iter().map(f).collect(),
            },
            e => f(e),
        }
    }
}
