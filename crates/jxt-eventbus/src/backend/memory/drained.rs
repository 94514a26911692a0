//! Waiting until the broker is settled: every record of the topics in scope
//! is behind the committed position of every group reading it — handled,
//! dead-lettered or skipped, and acknowledged. For tests, instead of polling
//! or sleeping.
//!
//! Positions only move forward and only when a record is finished, so a
//! settled broker stays settled until someone publishes. A handler's
//! outputs are stored before its input is committed, so when the check
//! runs between the two it sees the new records. Two passes that find the
//! same log ends make the answer consistent: a record appended while the
//! first pass ran changes an end the second pass reads.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

use super::MemoryBroker;

/// Wakes the waiters of [`MemoryBroker::drained`] when a position moves.
/// Costs one atomic load per commit while nobody waits.
#[derive(Debug, Default)]
pub(super) struct SettleWatch {
    waiters: AtomicUsize,
    moved: Notify,
}

impl SettleWatch {
    /// Called after a committed position moved (or a group was deleted).
    pub(super) fn moved(&self) {
        // SeqCst pairs with the waiter's increment: either the waiter sees
        // the new position in its check, or this sees the waiter.
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.moved.notify_waiters();
        }
    }

    async fn wait_until(&self, mut settled: impl FnMut() -> bool) {
        self.waiters.fetch_add(1, Ordering::SeqCst);
        let _registered = Registered(&self.waiters);
        loop {
            let moved = self.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            if settled() {
                return;
            }
            moved.await;
        }
    }
}

struct Registered<'a>(&'a AtomicUsize);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Which positions count.
#[derive(Clone, Copy)]
enum Scope<'a> {
    /// Every group on every topic.
    All,
    /// One group on these topics.
    Group(&'a str, &'a [String]),
}

impl MemoryBroker {
    /// Resolves once every record on the broker is behind the committed
    /// position of every group that has one on its partition: everything
    /// published was handled (or dead-lettered) and acknowledged by every
    /// group reading it, dead-letter writes and handler outputs included.
    /// Records of topics no group reads do not count.
    ///
    /// A group keeps its positions after its buses shut down: when it left
    /// records unfinished, this waits until another member of the group
    /// finishes them (or [`MemoryBroker::delete_group`] forgets it). Records
    /// published after it resolved are not waited for.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub async fn drained(&self) {
        self.settled(Scope::All).await;
    }

    /// As [`MemoryBroker::drained`], for one group on `topics`.
    pub(crate) async fn group_settled(&self, group: &str, topics: &[String]) {
        self.settled(Scope::Group(group, topics)).await;
    }

    async fn settled(&self, scope: Scope<'_>) {
        self.inner
            .settle
            .wait_until(|| loop {
                let Some(first) = self.ends_if_settled(scope) else {
                    return false;
                };
                match self.ends_if_settled(scope) {
                    Some(second) if second == first => return true,
                    Some(_) => continue, // appended meanwhile: look again
                    None => return false,
                }
            })
            .await;
    }

    /// The log ends of the topics in scope, sorted by topic, when every
    /// position in scope is at its end; `None` otherwise.
    fn ends_if_settled(&self, scope: Scope<'_>) -> Option<Vec<(String, Vec<i64>)>> {
        let topics: Vec<(String, std::sync::Arc<super::log::TopicLog>)> = match scope {
            Scope::All => {
                let map = self.inner.topics.read().unwrap_or_else(|e| e.into_inner());
                map.iter()
                    .map(|(n, t)| (n.to_string(), t.clone()))
                    .collect()
            }
            Scope::Group(_, names) => names
                .iter()
                .filter_map(|n| Some((n.clone(), self.inner.existing_topic(n)?)))
                .collect(),
        };
        let mut out = Vec::with_capacity(topics.len());
        for (name, log) in topics {
            let mut ends = Vec::with_capacity(log.partitions.len());
            for p in log.partitions.iter() {
                let st = p.lock();
                let end = st.log.end();
                let behind = match scope {
                    Scope::All => st.committed.values().any(|&c| c < end),
                    Scope::Group(group, _) => st.committed.get(group).is_some_and(|&c| c < end),
                };
                if behind {
                    return None;
                }
                ends.push(end);
            }
            out.push((name, ends));
        }
        out.sort_unstable();
        Some(out)
    }
}
