//! Subscription instances and their lanes.
//!
//! Invariant: one key of a topic runs in at most one batch at a time, also
//! across subscription instances. A lane id means something only within the
//! instance that handed its batch out (completions carry the instance id);
//! when a topic is unsubscribed while batches run, they are kept as
//! (instance, lane) and the topic's next instance starts with those lanes
//! blocked, each freed when its old batch reports its last completion.

use std::sync::Arc;

use super::batching::{BatchSpec, BatchState};
use super::lanes::{KeyedLanes, LaneId};
use super::{Dispatcher, Job, SubscriptionSettings};
use crate::handler::Handler;
use crate::metrics::TopicMetrics;

/// What a subscription hands its records to.
#[derive(Clone)]
pub(crate) enum SubscriptionHandler {
    /// One record at a time per lane.
    Records(Arc<dyn Handler>),
    /// Batches of lanes ([`crate::batch`]).
    Batches(Arc<BatchSpec>),
}

impl std::fmt::Debug for SubscriptionHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SubscriptionHandler::Records(_) => f.write_str("Records"),
            SubscriptionHandler::Batches(spec) => write!(f, "Batches({:?})", spec.options),
        }
    }
}

pub(super) struct Subscription {
    /// Unique per subscribe: a batch of an earlier subscription of the same
    /// topic finishing late must not free this one's lanes.
    pub(super) id: u64,
    pub(super) handler: SubscriptionHandler,
    /// A batch subscription's batches.
    pub(super) batch: Option<BatchState>,
    pub(super) settings: SubscriptionSettings,
    pub(super) lanes: KeyedLanes<Job>,
    pub(super) metrics: Arc<TopicMetrics>,
    /// Intake paused because live lanes reached `max_processors`.
    pub(super) lanes_full: bool,
}

impl Dispatcher {
    pub(super) fn subscribe(
        &mut self,
        topic: Arc<str>,
        handler: SubscriptionHandler,
        settings: SubscriptionSettings,
    ) {
        let (max_batch, batch) = match &handler {
            SubscriptionHandler::Records(_) => (self.config.max_batch, None),
            SubscriptionHandler::Batches(spec) => (
                spec.options.max_records(),
                Some(BatchState::new(spec.clone())),
            ),
        };
        let mut lanes = KeyedLanes::new(settings.concurrency(self.recovering), max_batch);
        for (_, lane) in self.retired.get(&topic).into_iter().flatten() {
            lanes.block(*lane);
        }
        self.warned_unrouted.remove(&topic);
        let metrics = Arc::new(self.ctx.metrics.topic(&topic));
        self.next_subscription += 1;
        self.subs.insert(
            topic,
            Subscription {
                id: self.next_subscription,
                handler,
                batch,
                settings,
                lanes,
                metrics,
                lanes_full: false,
            },
        );
    }

    pub(super) fn unsubscribe(&mut self, topic: &Arc<str>) {
        let Some(mut sub) = self.subs.remove(topic) else {
            return;
        };
        sub.metrics.live_lanes.set(0);
        sub.metrics.active_lanes.set(0);
        // Its running batches carry on; the next instance of the topic must
        // wait for them key by key. Lanes it only had blocked are already
        // listed under their own instance.
        let retired = self.retired.entry(topic.clone()).or_default();
        let own: Vec<LaneId> = sub
            .lanes
            .running_lanes()
            .filter(|l| !retired.iter().any(|(_, r)| r == l))
            .collect();
        retired.extend(own.into_iter().map(|l| (sub.id, l)));
        if retired.is_empty() {
            self.retired.remove(topic);
        }
        // Its queued records stay unfinished, holding their partitions, like
        // records that arrive without a handler.
        let dropped: Vec<Job> = sub.lanes.retain(|_| false);
        self.uncount_dropped(dropped, true);
    }

    /// A batch of an unsubscribed instance finished: the current instance
    /// of the topic may run that key again (unless another old batch of it
    /// still runs).
    pub(super) fn retire_finished(&mut self, topic: &Arc<str>, subscription: u64, lane: LaneId) {
        let Some(retired) = self.retired.get_mut(topic) else {
            return;
        };
        let Some(i) = retired.iter().position(|r| *r == (subscription, lane)) else {
            return;
        };
        retired.swap_remove(i);
        let still_blocked = retired.iter().any(|(_, l)| *l == lane);
        if retired.is_empty() {
            self.retired.remove(topic);
        }
        if !still_blocked {
            if let Some(sub) = self.subs.get_mut(topic) {
                sub.lanes.finish(lane);
            }
        }
    }
}

impl Dispatcher {
    /// A batch of a batch subscription ended: another may start.
    pub(super) fn on_batch_end(&mut self, subscription: u64) {
        let sub = self.subs.values_mut().find(|s| s.id == subscription);
        if let Some(state) = sub.and_then(|s| s.batch.as_mut()) {
            state.running -= 1;
        }
    }
}
