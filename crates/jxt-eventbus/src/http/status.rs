//! `GET /status`: a JSON view of the bus, answered at once.
//!
//! `/status` is usually reachable without authentication, so every request
//! must be cheap and must not wait: it reads state the bus already holds
//! (the dispatcher's counters, the latest backlog check, the latest
//! background broker check). Two parts would otherwise wait or cost a broker
//! round trip each:
//!
//! - the subscribed topics are behind the lock a subscription change holds
//!   (on Kafka for as long as the group takes to apply it): while it is
//!   held, the dispatcher's topics are shown and
//!   `subscription_change_in_progress` is true;
//! - the per-partition lag asks the broker: it is read in the background
//!   at most once per `health.status.lag_max_age` ([`LagCache`]), and every
//!   request gets the latest reading with its time.
//!
//! Handler error texts may hold personal data; they are shown only with
//! `health.status.show_error_messages`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};

use crate::backend::PartitionLag;
use crate::config::StatusConfig;
use crate::EventBus;

/// Longest a background lag read may take before it is given up (the next
/// stale request starts another).
const LAG_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One lag reading.
#[derive(Clone, Debug)]
struct LagReading {
    at: SystemTime,
    taken: Instant,
    result: Result<Arc<Vec<PartitionLag>>, String>,
}

#[derive(Debug, Default)]
struct CacheState {
    latest: Option<LagReading>,
    reading: bool,
}

/// The latest per-partition lag, read in the background at most once per
/// `max_age`, whatever the request rate.
#[derive(Debug)]
pub(super) struct LagCache {
    max_age: Duration,
    state: Mutex<CacheState>,
}

impl LagCache {
    pub(super) fn new(max_age: Duration) -> Self {
        LagCache {
            max_age,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, CacheState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The latest reading (`None` before the first one finished); starts a
    /// background read when it is missing or older than `max_age` and none
    /// is running. Never waits.
    fn latest(self: &Arc<Self>, bus: &EventBus) -> Option<LagReading> {
        let mut st = self.lock();
        let stale = st
            .latest
            .as_ref()
            .is_none_or(|r| r.taken.elapsed() >= self.max_age);
        if stale && !st.reading {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                st.reading = true;
                rt.spawn(self.clone().read(bus.downgrade()));
            }
        }
        st.latest.clone()
    }

    async fn read(self: Arc<Self>, bus: crate::bus::WeakBus) {
        let result = match bus.upgrade() {
            Some(bus) => match tokio::time::timeout(LAG_READ_TIMEOUT, bus.lag()).await {
                Ok(Ok(lags)) => Ok(Arc::new(lags)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {LAG_READ_TIMEOUT:?}")),
            },
            None => Err("the bus is gone".into()),
        };
        let mut st = self.lock();
        st.reading = false;
        st.latest = Some(LagReading {
            at: SystemTime::now(),
            taken: Instant::now(),
            result,
        });
    }
}

/// Who this bus is: the Kafka static member id when set, else host and
/// process id.
fn instance(bus: &EventBus) -> String {
    if let Some(id) = &bus.config().kafka.group_instance_id {
        return id.clone();
    }
    static HOST: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let host = HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
    });
    match host {
        Some(h) => format!("{h} pid {}", std::process::id()),
        None => format!("pid {}", std::process::id()),
    }
}

pub(super) fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()
}

/// The `/status` document.
pub(super) async fn status_json(
    bus: &EventBus,
    lag: &Arc<LagCache>,
    config: &StatusConfig,
) -> Value {
    let health = bus.health().await;
    let backlog = bus.backlog_state();
    let reading = lag.latest(bus);
    let (partitions, lag_error) = match reading.as_ref().map(|r| &r.result) {
        Some(Ok(lags)) => (
            lags.iter()
                .map(|l| {
                    json!({
                        "topic": &*l.partition.topic,
                        "partition": l.partition.partition,
                        "log_end": l.log_end,
                        "committed": l.committed,
                        "lag": l.lag(),
                    })
                })
                .collect::<Vec<_>>(),
            None,
        ),
        Some(Err(e)) => (Vec::new(), Some(e.clone())),
        None => (Vec::new(), None),
    };
    let stats = bus.dispatch_stats().await;
    let settled = bus.subscriptions_if_settled();
    let changing = settled.is_none();
    let subscriptions = settled
        .or_else(|| stats.as_ref().map(|s| s.topics.clone()))
        .unwrap_or_default();
    let dispatch = stats.map(|s| {
        json!({
            "assigned_partitions": s.assigned_partitions,
            "paused_partitions": s.paused_partitions,
            "buffered_records": s.buffered,
            "running_records": s.running,
            "live_lanes": s.live_lanes,
            "partitions_assigned_total": s.assigned_total,
            "partitions_revoked_total": s.revoked_total,
            "oldest_unfinished": s.oldest_unfinished.map(rfc3339),
            "partitions": s.partitions.iter().map(|p| json!({
                "topic": &*p.partition.topic,
                "partition": p.partition.partition,
                "buffered_records": p.buffered,
                "running_records": p.running,
                "paused": p.paused,
                "position": p.position,
                "position_still_for_ms": p.stuck_for.map(|d| d.as_millis() as u64),
            })).collect::<Vec<_>>(),
        })
    });
    let show_messages = config.show_error_messages;
    let started = bus.started_at();
    let readiness = bus.readiness().await;
    json!({
        "backend": bus.config().backend,
        "group": bus.config().group,
        "instance": instance(bus),
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": rfc3339(started),
        "uptime_s": SystemTime::now().duration_since(started).map_or(0, |d| d.as_secs()),
        "ready": readiness.is_ok(),
        "not_ready_reason": readiness.err(),
        "stall_after_ms": bus.config().health.stall_after.as_millis() as u64,
        "show_error_messages": show_messages,
        "allow_replay": config.allow_replay,
        "throughput": bus.throughput().iter().map(|p| json!({
            "at": rfc3339(p.at),
            "handled": p.handled,
            "published": p.published,
            "retried": p.retried,
            "dead_lettered": p.dead_lettered,
        })).collect::<Vec<_>>(),
        "dead_letters": bus.dead_lettered_by_topic().into_iter().map(|(topic, n)| json!({
            "topic": topic,
            "dead_lettered": n,
        })).collect::<Vec<_>>(),
        "closed": bus.is_closed(),
        "subscriptions": subscriptions,
        "subscription_change_in_progress": changing,
        "partitions": partitions,
        "lag_checked_at": reading.as_ref().map(|r| rfc3339(r.at)),
        "lag_error": lag_error,
        "dispatch": dispatch,
        "recovery": {
            "recovering": backlog.recovering,
            "since": backlog.recovering_since.map(rfc3339),
            "backlog": backlog.backlog,
            "lag": backlog.lag,
            "clean_checks": backlog.clean_checks,
            "oldest_unfinished_age_ms": backlog.oldest_unfinished_age.map(|d| d.as_millis() as u64),
            "checked_at": backlog.checked_at.map(rfc3339),
        },
        "publisher": {
            "in_flight": backlog.publisher.in_flight,
            "latency_ms": backlog.publisher.latency.as_secs_f64() * 1000.0,
            "backlog": backlog.publisher.backlog,
        },
        "recent_errors": bus.recent_errors().iter().map(|e| {
            let mut error = json!({
                "at": rfc3339(e.at),
                "topic": &*e.topic,
                "partition": e.partition,
                "offset": e.offset,
                "attempt": e.attempt,
                "kind": e.kind.as_str(),
            });
            if show_messages {
                error["message"] = json!(e.message);
            }
            error
        }).collect::<Vec<_>>(),
        "health": {
            "overall": health.overall.as_str(),
            "checked_at": rfc3339(health.checked_at),
            "components": health.components.iter().map(|c| json!({
                "name": c.name,
                "state": c.state.as_str(),
                "reason": c.reason,
            })).collect::<Vec<_>>(),
        },
    })
}
