//! W3C trace context from publisher to handler, and the handler's span, on
//! the memory backend.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jxt_eventbus::config::MemoryConfig;
use jxt_eventbus::envelope::headers::TRACE_ID;
use jxt_eventbus::trace::{TraceParent, TRACEPARENT};
use jxt_eventbus::{BusConfig, Delivery, EventBus, MemoryBroker, Message, SubscribeOptions};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Records span fields and the entered-span stack: just enough to read the
/// current span's fields inside a handler. Single-threaded runtimes only.
/// A span's name and recorded fields.
type SpanFields = (String, HashMap<String, String>);

#[derive(Default)]
struct SpanRecorder {
    next: AtomicU64,
    fields: Mutex<HashMap<u64, SpanFields>>,
    stack: Mutex<Vec<Id>>,
}

struct FieldsVisitor<'a>(&'a mut HashMap<String, String>);

impl Visit for FieldsVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
}

impl SpanRecorder {
    /// (span name, fields) of the innermost entered span.
    fn current(&self) -> Option<SpanFields> {
        let id = self.stack.lock().unwrap().last()?.into_u64();
        self.fields.lock().unwrap().get(&id).cloned()
    }
}

/// The subscriber handle; the test keeps another `Arc` to read from.
struct Recorder(Arc<SpanRecorder>);

impl Subscriber for Recorder {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, attrs: &Attributes<'_>) -> Id {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut fields = HashMap::new();
        attrs.record(&mut FieldsVisitor(&mut fields));
        self.0
            .fields
            .lock()
            .unwrap()
            .insert(id, (attrs.metadata().name().to_string(), fields));
        Id::from_u64(id)
    }
    fn record(&self, span: &Id, values: &Record<'_>) {
        if let Some((_, fields)) = self.0.fields.lock().unwrap().get_mut(&span.into_u64()) {
            values.record(&mut FieldsVisitor(fields));
        }
    }
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, _: &Event<'_>) {}
    fn enter(&self, span: &Id) {
        self.0.stack.lock().unwrap().push(span.clone());
    }
    fn exit(&self, span: &Id) {
        let mut stack = self.0.stack.lock().unwrap();
        if let Some(i) = stack.iter().rposition(|s| s == span) {
            stack.remove(i);
        }
    }
}

type Seen = Arc<
    Mutex<
        Vec<(
            Option<TraceParent>,
            Option<(String, HashMap<String, String>)>,
        )>,
    >,
>;

#[test]
fn trace_context_reaches_the_handler_and_its_span() {
    let recorder = Arc::new(SpanRecorder::default());
    let dispatch = tracing::Dispatch::new(Recorder(recorder.clone()));
    let _guard = tracing::dispatcher::set_default(&dispatch);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bus = EventBus::builder()
            .config(BusConfig {
                group: "trace".into(),
                ..BusConfig::default()
            })
            .memory_broker(MemoryBroker::new(MemoryConfig::default()))
            .build()
            .await
            .unwrap();
        let seen: Seen = Arc::default();
        let (s, r) = (seen.clone(), recorder.clone());
        bus.subscribe(
            "orders",
            move |d: Delivery| {
                s.lock().unwrap().push((d.trace_parent(), r.current()));
                async { Ok(()) }
            },
            SubscribeOptions::new(),
        )
        .await
        .unwrap();

        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let envelope_trace = "0af7651916cd43dd8448eb211c80319c";
        bus.publish(
            "orders",
            Message::new("a")
                .with_key("k1")
                .with_header(TRACEPARENT, given),
        )
        .await
        .unwrap();
        bus.publish(
            "orders",
            Message::new("b")
                .with_key("k2")
                .with_header(TRACE_ID, envelope_trace),
        )
        .await
        .unwrap();
        bus.publish("orders", Message::new("c").with_key("k3"))
            .await
            .unwrap();
        for _ in 0..500 {
            if seen.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 3);
        // Three keys may be handled in any order: sort by key.
        seen.sort_by_key(|(_, span)| span.as_ref().unwrap().1["key"].clone());

        let (tp, span) = &seen[0];
        assert_eq!(tp.as_ref().unwrap().to_string(), given, "kept as sent");
        let (name, fields) = span.as_ref().expect("handler runs inside a span");
        assert_eq!(name, "eventbus.handle");
        assert_eq!(fields["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(fields["topic"], "orders");
        assert_eq!(fields["key"], "k1");
        assert!(fields.contains_key("partition") && fields.contains_key("offset"));

        let (tp, span) = &seen[1];
        assert_eq!(tp.as_ref().unwrap().trace_id(), envelope_trace);
        assert_eq!(span.as_ref().unwrap().1["trace_id"], envelope_trace);

        let (tp, span) = &seen[2];
        let tp = tp.as_ref().expect("a new trace is started at publish");
        assert_eq!(span.as_ref().unwrap().1["trace_id"], tp.trace_id());
        bus.shutdown().await.unwrap();
    });
}
