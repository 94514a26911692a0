//! `eventbus demo`: order events of ~20 aggregates on two topics, handled
//! concurrently with per-aggregate order, with one handler that fails on
//! purpose; ends with a short summary.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use jxt_eventbus::{Delivery, Envelope, EventBus, HandlerError, SubscribeOptions};

/// Arguments of `eventbus demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Aggregates (orders).
    #[arg(long, default_value_t = 20)]
    aggregates: u32,
    /// Order events per aggregate.
    #[arg(long, default_value_t = 10)]
    order_events: i64,
    /// Payment events per aggregate.
    #[arg(long, default_value_t = 5)]
    payment_events: i64,
    /// After the summary, keep the demo's bus running with its operator
    /// endpoints on this address (default 127.0.0.1:9464) until Ctrl-C.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:9464")]
    serve: Option<std::net::SocketAddr>,
}

/// The aggregate whose third payment event is declined (dead-lettered).
const DECLINED: &str = "order-13";
const DECLINED_VERSION: i64 = 3;

/// Every delivery the handlers saw: (topic, aggregate) → (version, attempt).
type Seen = Arc<Mutex<BTreeMap<(String, String), Vec<(i64, u32)>>>>;

pub(crate) async fn run(global: &crate::global::Global, args: DemoArgs) -> Result<()> {
    global.refuse_configuration("demo")?;
    let started = Instant::now();
    let bus = EventBus::builder()
        .group("demo")
        .max_concurrency(16)
        .build()
        .await?;
    let seen: Seen = Arc::default();
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let retried = Arc::new(AtomicUsize::new(0));
    let dead: Arc<Mutex<Vec<String>>> = Arc::default();

    for topic in ["orders", "payments"] {
        let (seen, running, peak, retried) =
            (seen.clone(), running.clone(), peak.clone(), retried.clone());
        bus.subscribe_envelope(
            topic,
            move |event: Envelope, delivery: Delivery| {
                let (seen, running, peak, retried) =
                    (seen.clone(), running.clone(), peak.clone(), retried.clone());
                async move {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    seen.lock()
                        .unwrap()
                        .entry((delivery.topic().to_string(), event.aggregate_id.clone()))
                        .or_default()
                        .push((event.event_version, delivery.attempt()));
                    // Some work, longer for some aggregates, so lanes interleave.
                    let ms = (event.aggregate_id.len() as u64 + event.event_version as u64) % 4;
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    running.fetch_sub(1, Ordering::SeqCst);
                    if delivery.topic() == "payments" {
                        let n: u32 = event
                            .aggregate_id
                            .trim_start_matches("order-")
                            .parse()
                            .unwrap_or(0);
                        if n.is_multiple_of(4) && delivery.attempt() == 1 {
                            retried.fetch_add(1, Ordering::Relaxed);
                            return Err(HandlerError::retryable("payment gateway timed out"));
                        }
                        if event.aggregate_id == DECLINED && event.event_version == DECLINED_VERSION
                        {
                            return Err(HandlerError::permanent("card declined"));
                        }
                    }
                    Ok(())
                }
            },
            SubscribeOptions::new(),
        )
        .await?;
    }
    let d = dead.clone();
    bus.subscribe(
        "payments.dlq",
        move |delivery: Delivery| {
            let h = delivery.headers();
            d.lock().unwrap().push(format!(
                "{} v{} ({}: {})",
                delivery.key_str().unwrap_or("-"),
                h.get_str("X-Event-Version").unwrap_or("?"),
                h.get_str("x-dlq-error-kind").unwrap_or("?"),
                h.get_str("x-dlq-error").unwrap_or("?"),
            ));
            async { Ok(()) }
        },
        SubscribeOptions::new(),
    )
    .await?;

    // Publish round-robin over aggregates so many keys are in flight at once.
    let mut published = 0;
    let most = args.order_events.max(args.payment_events);
    for version in 1..=most {
        for a in 1..=args.aggregates {
            let id = format!("order-{a:02}");
            if version <= args.order_events {
                let e = Envelope::new(
                    &id,
                    order_event(version, args.order_events),
                    version,
                    &serde_json::json!({"line": version}),
                )?;
                bus.publish_envelope("orders", &e).await?;
                published += 1;
            }
            if version <= args.payment_events {
                let e = Envelope::new(
                    &id,
                    "PaymentStep",
                    version,
                    &serde_json::json!({"amount_cents": 100 * version}),
                )?;
                bus.publish_envelope("payments", &e).await?;
                published += 1;
            }
        }
    }

    let aggregates = args.aggregates as usize;
    let expected_orders = aggregates * args.order_events as usize;
    let expected_payments = aggregates * args.payment_events as usize;
    let declined_exists = args.aggregates >= 13 && args.payment_events >= DECLINED_VERSION;
    let expected_dead = usize::from(declined_exists);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (orders, payments) = distinct(&seen);
        if orders == expected_orders
            && payments == expected_payments
            && dead.lock().unwrap().len() == expected_dead
        {
            break;
        }
        if Instant::now() > deadline {
            bail!("demo did not finish in 30s: {orders}/{expected_orders} orders, {payments}/{expected_payments} payments");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let health = bus.health().await;
    if args.serve.is_none() {
        bus.shutdown().await?;
    }

    let violations = order_violations(&seen);
    let ok_payments = expected_payments - expected_dead;
    println!("jxt-eventbus demo (memory backend)");
    println!(
        "  published    {published} events over {} aggregates on 2 topics",
        args.aggregates
    );
    println!("  orders       {expected_orders} handled");
    println!(
        "  payments     {ok_payments} handled, {} retried after a transient failure, {} dead-lettered",
        retried.load(Ordering::Relaxed),
        dead.lock().unwrap().len()
    );
    for d in dead.lock().unwrap().iter() {
        println!("               dead letter: {d}");
    }
    println!(
        "  concurrency  up to {} handlers at once",
        peak.load(Ordering::SeqCst)
    );
    if violations.is_empty() {
        println!("  order        per-aggregate order verified on both topics (retries included)");
    } else {
        println!("  order        VIOLATED: {}", violations.join("; "));
    }
    println!(
        "  health       {} ({} components: {})",
        health.overall.as_str(),
        health.components.len(),
        health
            .components
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("  elapsed      {:.2} s", started.elapsed().as_secs_f64());
    if !violations.is_empty() {
        bail!("per-aggregate order was violated");
    }
    if let Some(addr) = args.serve {
        // The bus stays up, its topics and dead letter included.
        let server = crate::serve::start(&bus, addr, global.json).await?;
        crate::serve::stopped().await;
        drop(server);
        bus.shutdown().await?;
    }
    Ok(())
}

fn order_event(version: i64, last: i64) -> &'static str {
    match version {
        1 => "OrderCreated",
        v if v == last => "OrderConfirmed",
        _ => "OrderLineAdded",
    }
}

/// Distinct (aggregate, version) pairs handled per topic.
fn distinct(seen: &Seen) -> (usize, usize) {
    let seen = seen.lock().unwrap();
    let count = |topic: &str| -> usize {
        seen.iter()
            .filter(|((t, _), _)| t == topic)
            .map(|(_, v)| {
                let mut versions: Vec<i64> = v.iter().map(|(ver, _)| *ver).collect();
                versions.dedup();
                versions.len()
            })
            .sum()
    };
    (count("orders"), count("payments"))
}

/// Every aggregate's deliveries must be in version order, each version first
/// tried once and retried only before the next version starts.
fn order_violations(seen: &Seen) -> Vec<String> {
    let seen = seen.lock().unwrap();
    let mut out = Vec::new();
    for ((topic, aggregate), deliveries) in seen.iter() {
        let mut expect = 1;
        let mut last = 0;
        for &(version, attempt) in deliveries {
            let in_order = if attempt == 1 {
                version == expect
            } else {
                version == last
            };
            if !in_order {
                out.push(format!(
                    "{topic}/{aggregate}: v{version} attempt {attempt} after v{last}"
                ));
                break;
            }
            if attempt == 1 {
                expect += 1;
            }
            last = version;
        }
    }
    out
}
