//! Revoke bookkeeping: partitions being taken away, keyed by generation.
//!
//! Invariant: the state of one assignment of a partition (one generation)
//! lives in exactly one place — owned, in the dispatcher's partition map, or
//! revoking, inside its [`PendingRevoke`] — and a revoking state is found by
//! partition *and* generation. The same partition may be assigned again (a
//! new generation) while its previous generation still waits for running
//! records; neither may touch the other's state, records or counters.
//!
//! A revoke goes through three steps:
//! 1. *waiting*: the partitions' queued records are dropped and their
//!    running records may finish, until `revoke_timeout`;
//! 2. *cancelling*: the partitions' leases are cancelled, so workers drop
//!    the handler futures at once and report the records abandoned;
//! 3. *released*: final positions stored (unless lost), the backend answered.
//!
//! A lost assignment starts at step 2: nothing of it will be committed, and
//! the partition's next owner may already be running its records.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Dispatcher, PartitionState};
use crate::backend::TopicPartition;

use rustc_hash::FxHashMap as HashMap;

/// How long cancelled handlers get to be dropped before their partition is
/// released regardless. A handler future is dropped at its next await once
/// its lease is cancelled, so this bounds only a handler that blocks its
/// thread; passing it is logged as an error.
pub(super) const CANCEL_GRACE: Duration = Duration::from_secs(1);

/// One `Revoked` event in progress, holding the states of its partitions.
pub(super) struct PendingRevoke {
    partitions: Vec<(TopicPartition, PartitionState)>,
    lost: bool,
    /// Until when running records may finish before they are cancelled.
    deadline: Instant,
    /// Set once the leases are cancelled: until when the workers get to drop
    /// the cancelled handlers.
    cancelled_until: Option<Instant>,
    done: oneshot::Sender<()>,
}

impl PendingRevoke {
    /// When this revoke next needs the dispatcher's attention.
    pub(super) fn deadline(&self) -> Instant {
        self.cancelled_until.unwrap_or(self.deadline)
    }

    /// The partition states it holds.
    pub(super) fn states(&self) -> impl Iterator<Item = &PartitionState> {
        self.partitions.iter().map(|(_, ps)| ps)
    }

    /// Answers the backend without releasing anything more (the dispatcher
    /// is ending).
    pub(super) fn answer(self) {
        let _ = self.done.send(());
    }

    fn running(&self) -> usize {
        self.states().map(|ps| ps.running).sum()
    }

    fn cancel(&mut self, now: Instant) {
        for ps in self.partitions.iter().map(|(_, ps)| ps) {
            ps.lease.cancel();
        }
        self.cancelled_until = Some(now + CANCEL_GRACE);
    }
}

/// The state of `tp`'s assignment `generation`, owned or being revoked.
pub(super) fn state_mut<'a>(
    partitions: &'a mut HashMap<TopicPartition, PartitionState>,
    revokes: &'a mut [PendingRevoke],
    tp: &TopicPartition,
    generation: u64,
) -> Option<&'a mut PartitionState> {
    if let Some(ps) = partitions
        .get_mut(tp)
        .filter(|ps| ps.generation == generation)
    {
        return Some(ps);
    }
    revokes
        .iter_mut()
        .flat_map(|r| r.partitions.iter_mut())
        .find(|(t, ps)| t == tp && ps.generation == generation)
        .map(|(_, ps)| ps)
}

impl Dispatcher {
    /// Starts revoking `tps`: their states leave the owned set (records that
    /// still arrive for them are not ours) and their queued records are
    /// dropped unacknowledged; the next owner reads them from the committed
    /// position.
    pub(super) fn on_revoke(
        &mut self,
        tps: Vec<TopicPartition>,
        lost: bool,
        done: oneshot::Sender<()>,
    ) {
        self.revoked_total += tps.len() as u64;
        self.ctx.metrics.revoked.inc_by(tps.len() as u64);
        let states: Vec<(TopicPartition, PartitionState)> = tps
            .into_iter()
            .filter_map(|tp| self.partitions.remove(&tp).map(|ps| (tp, ps)))
            .collect();
        let now = Instant::now();
        let mut revoke = PendingRevoke {
            partitions: states,
            lost,
            deadline: now + self.config.revoke_timeout,
            cancelled_until: None,
            done,
        };
        if lost {
            // Nothing will be committed and the next owner may have started:
            // nothing to wait for.
            revoke.cancel(now);
        }
        let generations: Vec<(TopicPartition, u64)> = revoke
            .partitions
            .iter()
            .map(|(tp, ps)| (tp.clone(), ps.generation))
            .collect();
        self.revokes.push(revoke);
        self.drop_queued(|j| {
            !generations
                .iter()
                .any(|(tp, g)| *tp == j.partition && *g == j.generation)
        });
    }

    /// Moves revokes on: cancels the running records of those past their
    /// timeout, and releases those with nothing running (or whose cancelled
    /// handlers overran [`CANCEL_GRACE`]), answering the backend.
    pub(super) fn check_revokes(&mut self) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.revokes.len() {
            let r = &mut self.revokes[i];
            let running = r.running();
            if running > 0 && r.cancelled_until.is_none() && now >= r.deadline {
                let partitions: Vec<String> = r
                    .partitions
                    .iter()
                    .filter(|(_, ps)| ps.running > 0)
                    .map(|(tp, _)| tp.to_string())
                    .collect();
                tracing::warn!(
                    ?partitions, running,
                    "revoke timed out; cancelling the running handlers before releasing the partitions"
                );
                r.cancel(now);
            }
            if running > 0 && now < r.deadline() {
                i += 1;
                continue;
            }
            let r = self.revokes.swap_remove(i);
            self.release(r);
        }
    }

    fn release(&mut self, r: PendingRevoke) {
        for (tp, ps) in &r.partitions {
            ps.lease.cancel();
            self.buffered -= ps.buffered;
            self.held -= ps.held;
            // Assigned again meanwhile: the new generation's positions rule.
            let owned_again = self.partitions.contains_key(tp);
            if !r.lost && !owned_again {
                if let Some(position) = ps.offsets.position() {
                    super::store_position(
                        &*self.consumer,
                        self.finished_runs,
                        tp,
                        position,
                        &ps.offsets,
                    );
                }
            }
            if ps.running > 0 {
                tracing::error!(
                    partition = %tp, running = ps.running,
                    "cancelled handlers did not stop within {CANCEL_GRACE:?} (a handler blocking its thread?); partition released while they run, unacknowledged"
                );
            }
        }
        r.answer();
    }
}
