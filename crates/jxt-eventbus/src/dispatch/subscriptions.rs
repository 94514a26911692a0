//! Subscription instances and their lanes.
//!
//! Invariant: one key of a topic runs in at most one batch at a time, also
//! across subscription instances. A lane id means something only within the
//! instance that handed its batch out (completions carry the instance id);
//! when a topic is unsubscribed while batches run, they are kept as
//! (instance, lane) and the topic's next instance starts with those lanes
//! blocked, each freed when its old batch reports its last completion.

use std::sync::Arc;

use super::lanes::{KeyedLanes, LaneId};
use super::{Dispatcher, Job, SubscriptionSettings};
use crate::handler::Handler;
use crate::metrics::TopicMetrics;

pub(super) struct Subscription {
    /// Unique per subscribe: a batch of an earlier subscription of the same
    /// topic finishing late must not free this one's lanes.
    pub(super) id: u64,
    pub(super) handler: Arc<dyn Handler>,
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
        handler: Arc<dyn Handler>,
        settings: SubscriptionSettings,
    ) {
        let mut lanes =
            KeyedLanes::new(settings.concurrency(self.recovering), self.config.max_batch);
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
