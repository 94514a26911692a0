//! HTTP endpoints for operators (cargo feature `http`): an axum [`Router`]
//! the application mounts in its own server, or a small server of its own
//! with [`serve`].
//!
//! | route | answers |
//! |-------|---------|
//! | `GET /metrics` | the bus's metrics as OpenMetrics text |
//! | `GET /healthz` | liveness: 200 unless the bus was shut down |
//! | `GET /readyz` | readiness ([`EventBus::readiness`]): 200 when the bus is open, no health component is unhealthy, the broker answered its last check and, if it has subscriptions, it owns partitions; 503 with the reason otherwise |
//! | `GET /` | the status page: `/status` rendered for people, refreshed every few seconds, with a dead-letter view |
//! | `GET /status` | JSON: identity and uptime, readiness, subscriptions, partitions with lag, lanes, recovery mode, publisher load, throughput over the last minutes, dead letters per topic, recent handler errors, health components |
//! | `GET /dead-letters?topic=T` | JSON: up to 100 of the topic's dead letters with decoded provenance (`&key=`, `&id=`, `&group=G\|all` filter) |
//! | `POST /dead-letters/replay?topic=T` | replays this group's dead letters of `T` (same filters); 403 unless `health.status.allow_replay` |
//!
//! Nothing served contains configuration or credentials: `/status` reports
//! the backend name, the group and runtime state only. Every route answers
//! at once, whatever the broker or a subscription change is doing: `/status`
//! shows lag read in the background at most once per
//! `health.status.lag_max_age`, and handler error texts (which may quote
//! personal data) only with `health.status.show_error_messages`.
//!
//! [`router`] returns an axum 0.8 [`Router`]: to mount it, the application
//! uses the same axum major version — [`axum`] is re-exported here
//! (`jxt_eventbus::http::axum`) so that it can use this one rather than
//! keep its own in step.
//!
//! ```no_run
//! # async fn run(bus: jxt_eventbus::EventBus) -> std::io::Result<()> {
//! use jxt_eventbus::http::axum;
//! // Mounted in the application's router ...
//! let app = axum::Router::new().nest("/eventbus", jxt_eventbus::http::router(bus.clone()));
//! // ... or served on its own, on 127.0.0.1 by default.
//! let server = jxt_eventbus::http::serve(bus, jxt_eventbus::http::DEFAULT_ADDR).await?;
//! println!("operator endpoints on http://{}", server.local_addr());
//! # drop(app);
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;

use crate::config::StatusConfig;
use crate::EventBus;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::registry::Registry;

mod dead_letters;
mod page;
mod run;
mod status;

use status::LagCache;

/// The axum this module is built on (0.8), for mounting [`router`] in an
/// application's own router without a second, mismatched axum.
pub use axum;
pub use run::{run_until, run_until_signal};

/// Where [`serve`] listens unless told otherwise: loopback only, port 9464
/// (the port commonly used for Prometheus exporters).
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// Content type of `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct AppState {
    bus: EventBus,
    registry: Option<Arc<Registry>>,
    lag: Arc<LagCache>,
    status: StatusConfig,
    /// One dead-letter read from the broker at a time.
    broker_reads: Arc<tokio::sync::Semaphore>,
}

/// The operator routes for `bus`; `/metrics` serves the registry the bus
/// owns (404 when the application passed its own metrics: use
/// [`router_with_registry`] then).
pub fn router(bus: EventBus) -> Router {
    let registry = bus.metrics_registry();
    router_with_registry(bus, registry)
}

/// The operator routes for `bus`, serving `registry` on `/metrics` (for
/// example the application's registry holding this bus's metrics).
pub fn router_with_registry(bus: EventBus, registry: Option<Arc<Registry>>) -> Router {
    let status_config = bus.config().health.status.clone();
    let lag = Arc::new(LagCache::new(status_config.lag_max_age));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .route("/", get(page::page))
        .route("/dead-letters", get(dead_letters::list))
        .route("/dead-letters/replay", post(dead_letters::replay))
        .with_state(AppState {
            bus,
            registry,
            lag,
            status: status_config,
            broker_reads: Arc::new(tokio::sync::Semaphore::new(1)),
        })
}

/// A running server started by [`serve`]. Dropping it stops the server.
#[must_use = "dropping the server stops it"]
pub struct HttpServer {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// The address it listens on (useful after binding port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the server; requests in progress are cut off.
    pub fn stop(self) {}

    /// Resolves once the server stopped: after the shutdown signal of
    /// [`serve_with_shutdown`] fired and requests in progress were answered.
    /// (A server from [`serve`] runs until dropped.)
    ///
    /// # Cancel safety
    /// Cancel safe, but dropping the future drops the server, which stops it.
    pub async fn stopped(mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves [`router`] for `bus` on `addr` (use [`DEFAULT_ADDR`] for loopback;
/// binding another interface exposes the endpoints to that network).
///
/// # Errors
/// When `addr` cannot be bound.
///
/// # Cancel safety
/// Cancel safe: dropped before it resolves, nothing is served.
pub async fn serve(bus: EventBus, addr: SocketAddr) -> std::io::Result<HttpServer> {
    serve_with_shutdown(bus, addr, std::future::pending()).await
}

/// As [`serve`], stopping gracefully when `signal` resolves: no new
/// connections, requests in progress answered, then
/// [`HttpServer::stopped`] resolves. Typically the same signal that shuts
/// the bus down:
///
/// ```no_run
/// # async fn run(bus: jxt_eventbus::EventBus) -> std::io::Result<()> {
/// use jxt_eventbus::http;
/// let (stop, stopping) = tokio::sync::oneshot::channel::<()>();
/// let server = http::serve_with_shutdown(bus.clone(), http::DEFAULT_ADDR, async {
///     let _ = stopping.await;
/// })
/// .await?;
/// // ... on Ctrl-C:
/// let _ = stop.send(());
/// server.stopped().await;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// When `addr` cannot be bound.
///
/// # Cancel safety
/// Cancel safe: dropped before it resolves, nothing is served.
pub async fn serve_with_shutdown(
    bus: EventBus,
    addr: SocketAddr,
    signal: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    let app = router(bus);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
        {
            tracing::warn!(error = %e, "operator HTTP server stopped");
        }
    });
    tracing::info!(addr = %local_addr, "operator HTTP endpoints listening");
    Ok(HttpServer { local_addr, task })
}

async fn metrics(State(state): State<AppState>) -> Response {
    let Some(registry) = &state.registry else {
        return (
            StatusCode::NOT_FOUND,
            "this bus records into the application's registry; serve that one\n",
        )
            .into_response();
    };
    let mut body = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut body, registry) {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics failed: {e}\n"),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, OPENMETRICS_CONTENT_TYPE)], body).into_response()
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.bus.is_closed() {
        (StatusCode::SERVICE_UNAVAILABLE, "shut down\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.bus.readiness().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        )
            .into_response(),
    }
}

async fn status(State(state): State<AppState>) -> Response {
    let body = status::status_json(&state.bus, &state.lag, &state.status)
        .await
        .to_string();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}
