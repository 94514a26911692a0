//! Logging hygiene: a poison flood does not flood the log.
//!
//! One test in this binary: the rate limit is per call site and process.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jxt_eventbus::{BusConfig, Delivery, EventBus, HandlerError, Message, SubscribeOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata, Subscriber};

/// Counts WARN and ERROR events by message, keeping the `suppressed` field.
#[derive(Default)]
struct Counter {
    next: AtomicU64,
    warnings: Mutex<Vec<(String, Option<u64>)>>,
}

#[derive(Default)]
struct Fields {
    message: String,
    suppressed: Option<u64>,
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "suppressed" {
            self.suppressed = Some(value);
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = format!("{value:?}");
        }
    }
}

struct Recorder(Arc<Counter>);

impl Subscriber for Recorder {
    fn enabled(&self, m: &Metadata<'_>) -> bool {
        *m.level() <= Level::WARN
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.0.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, e: &Event<'_>) {
        let mut f = Fields::default();
        e.record(&mut f);
        self.0
            .warnings
            .lock()
            .unwrap()
            .push((f.message, f.suppressed));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn a_poison_flood_logs_a_few_lines_with_the_count_left_out() {
    let counter = Arc::new(Counter::default());
    let _guard = tracing::subscriber::set_default(Recorder(counter.clone()));
    // One thread: every task logs through the subscriber set above.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = EventBus::from_config(BusConfig::default()).await.unwrap();
        let failed = Arc::new(AtomicUsize::new(0));
        let f = failed.clone();
        let handler = move |_d: Delivery| {
            f.fetch_add(1, Ordering::Relaxed);
            async { Err(HandlerError::permanent("poison")) }
        };
        bus.subscribe("poison", handler, SubscribeOptions::new())
            .await
            .unwrap();
        let messages = (0..2_000)
            .map(|i| Message::new("bad").with_key(format!("k{i}")))
            .collect();
        for r in bus.publish_batch("poison", messages).await.unwrap() {
            r.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        // Every record failed once and finished (written to the DLQ).
        loop {
            let idle = bus.dispatch_stats().await.is_some_and(|s| s.buffered == 0);
            if failed.load(Ordering::Relaxed) == 2_000 && idle {
                break;
            }
            assert!(Instant::now() < deadline, "not every record dead-lettered");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bus.shutdown().await.unwrap();
    });
    let warnings = counter.warnings.lock().unwrap();
    let dead_lettered: Vec<_> = warnings
        .iter()
        .filter(|(m, _)| m == "record dead-lettered")
        .collect();
    assert!(
        !dead_lettered.is_empty() && dead_lettered.len() <= 10,
        "{} 'record dead-lettered' lines for 2000 records",
        dead_lettered.len()
    );
    assert!(
        dead_lettered.iter().all(|(_, s)| s.is_some()),
        "every line says how many were left out"
    );
    assert!(
        warnings.len() <= 20,
        "{} warnings in all: {warnings:?}",
        warnings.len()
    );
}
