//! An orders service on Kafka: consumes `orders` envelopes, keeps a total
//! per customer, publishes a `payments` envelope per order (before the
//! order is acknowledged), retries a busy ledger, dead-letters a poison
//! order, serves the operator endpoints, reads its configuration from
//! `orders_service.yaml` (its own `service` section, the bus's `eventbus`
//! section, `EVENTBUS_*` overrides) and stops cleanly on Ctrl-C or SIGTERM.
//! The handler is in `orders.rs`; `examples/memory_testing.rs` tests it.
//!
//! ```sh
//! CONFIG=crates/jxt-eventbus/examples/orders_service/orders_service.yaml
//! RUST_LOG=info cargo run -p jxt-eventbus --features kafka,http --example orders_service -- $CONFIG
//! # (logs through a pipe: `2>&1 | tee -i log`; a plain tee dies on Ctrl-C, and the
//! # service's next log line then ends it before it can commit)
//! # orders from elsewhere; a total of 0 is poison, a multiple of 7 is retried once:
//! eventbus --config $CONFIG --section eventbus publish orders --envelope \
//!     --type OrderPlaced --aggregate order-1 '{"customer":"ada","total":14}'
//! curl -s 127.0.0.1:9464/status              # or open http://127.0.0.1:9464/
//! eventbus --config $CONFIG --section eventbus dlq list orders
//! # load: many orders of one customer (one key, so they queue in its lane)
//! seq 1 20000 | sed 's/.*/{"customer":"bob","total":&}/' | eventbus --config $CONFIG \
//!     --section eventbus publish orders --lines --envelope --type OrderPlaced --aggregate bob
//! ```
mod orders;

use std::sync::Arc;

use jxt_eventbus::config::figment::{providers::Format, providers::Yaml, Figment};
use jxt_eventbus::{http, BusConfig, EventBus};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: orders_service CONFIG.yaml")?;
    let bus = EventBus::from_config(BusConfig::load_section(&path, "eventbus")?).await?;
    let addr = Figment::from(Yaml::file(&path)).extract_inner("service.http")?;
    let totals = Arc::new(orders::Totals::default());
    bus.subscribe_with_state("orders", totals.clone(), orders::bill, Default::default())
        .await?;
    http::run_until_signal(&bus, addr).await?;
    println!("totals: {:?}", totals.lock().unwrap());
    Ok(())
}
