//! The last handler failures, kept for operators (`/status`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::handler::ErrorKind;

/// How many failures are kept.
pub const RECENT_ERRORS: usize = 32;

/// One failed handler attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecentError {
    /// When it failed.
    pub at: SystemTime,
    /// Topic of the record.
    pub topic: Arc<str>,
    /// Partition of the record.
    pub partition: i32,
    /// Offset (or sequence) of the record.
    pub offset: i64,
    /// Attempt number, from 1.
    pub attempt: u32,
    /// Error kind.
    pub kind: ErrorKind,
    /// The handler's error message.
    pub message: String,
}

/// A bounded ring of the latest failures; older ones fall off.
#[derive(Debug, Default)]
pub(crate) struct RecentErrors {
    ring: Mutex<VecDeque<RecentError>>,
}

impl RecentErrors {
    /// Keeps `error`, dropping the oldest when full (the error path only).
    pub(crate) fn push(&self, error: RecentError) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if ring.len() == RECENT_ERRORS {
            ring.pop_front();
        }
        ring.push_back(error);
    }

    /// Newest first.
    pub(crate) fn list(&self) -> Vec<RecentError> {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_latest_newest_first() {
        let r = RecentErrors::default();
        for offset in 0..(RECENT_ERRORS as i64 + 5) {
            r.push(RecentError {
                at: SystemTime::now(),
                topic: Arc::from("t"),
                partition: 0,
                offset,
                attempt: 1,
                kind: ErrorKind::Permanent,
                message: "no".into(),
            });
        }
        let list = r.list();
        assert_eq!(list.len(), RECENT_ERRORS);
        assert_eq!(list[0].offset, RECENT_ERRORS as i64 + 4);
        assert_eq!(list[RECENT_ERRORS - 1].offset, 5);
    }
}
