//! A worker on NATS JetStream: consumes `images.uploaded` JSON jobs, makes
//! a thumbnail (here: pretends to, with a pause), publishes
//! `images.thumbnailed` before the job is acknowledged, retries a busy
//! store, dead-letters a job it cannot read, serves the operator endpoints
//! and stops cleanly on Ctrl-C. Several workers of the group share the
//! topic: one is pinned at a time (per-key order), the others stand by.
//!
//! ```sh
//! scripts/services up nats
//! cargo run -p jxt-eventbus --features nats,http --example nats_worker \
//!     -- crates/jxt-eventbus/examples/nats_worker.yaml
//! ```
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jxt_eventbus::{http, BusConfig, Delivery, EventBus, HandlerError, Json, Message, Outputs};

#[derive(serde::Deserialize, serde::Serialize)]
struct Upload {
    image: String,
    bytes: u64,
}

#[derive(Default)]
struct Stats {
    done: AtomicU64,
}

async fn thumbnail(
    stats: Arc<Stats>,
    (Json(job), d): (Json<Upload>, Delivery),
) -> Result<Outputs, HandlerError> {
    if job.bytes > 50_000_000 && d.attempt() < 3 {
        // The store is busy with big files: try again in the key's lane.
        return Err(HandlerError::retryable("image store busy"));
    }
    tokio::time::sleep(Duration::from_millis(job.bytes / 1_000_000)).await;
    stats.done.fetch_add(1, Ordering::Relaxed);
    let done =
        serde_json::json!({ "image": job.image, "thumbnail": format!("{}.thumb.jpg", job.image) });
    let message = Message::new(serde_json::to_vec(&done)?).with_key(&job.image);
    Ok(Outputs::new().message("images.thumbnailed", message))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .init();
    let path = std::env::args().nth(1).map(PathBuf::from);
    let bus = EventBus::builder()
        .config(BusConfig::load(path.as_deref())?)
        .build()
        .await?;
    let stats = Arc::new(Stats::default());
    bus.subscribe_with_state(
        "images.uploaded",
        stats.clone(),
        thumbnail,
        Default::default(),
    )
    .await?;
    println!(
        "working; operator endpoints on http://{}",
        http::DEFAULT_ADDR
    );
    http::run_until_signal(&bus, http::DEFAULT_ADDR).await?;
    println!("thumbnails made: {}", stats.done.load(Ordering::Relaxed));
    Ok(())
}
