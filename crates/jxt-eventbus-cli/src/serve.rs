//! `eventbus serve`: a bus built from the configuration, with the operator
//! endpoints of the library's `http` feature (the status page at `/`,
//! `/metrics`, `/healthz`, `/readyz`, `/status`, `/dead-letters`) on
//! `--listen`, until Ctrl-C or SIGTERM.
//!
//! The bus subscribes to nothing: a handler that did nothing would still
//! commit, and would take records from the group it runs in. What it shows
//! is the broker connection's health and the bus's own metrics — a quick
//! look at whether this configuration reaches its brokers, or a sidecar's
//! liveness endpoint.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use clap::Args;
use jxt_eventbus::EventBus;
use serde::Serialize;

use crate::global::Global;
use crate::output;

/// Arguments of `eventbus serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address of the HTTP endpoints. Another interface than loopback
    /// exposes them to its network.
    #[arg(long, default_value = "127.0.0.1:9464")]
    listen: SocketAddr,
}

#[derive(Debug, Serialize)]
struct Listening {
    listening: String,
    endpoints: [&'static str; 6],
}

pub(crate) const ENDPOINTS: [&str; 6] = [
    "/",
    "/metrics",
    "/healthz",
    "/readyz",
    "/status",
    "/dead-letters",
];

/// Serves `bus` on `addr` and says where, on stdout.
pub(crate) async fn start(
    bus: &EventBus,
    addr: SocketAddr,
    json: bool,
) -> Result<jxt_eventbus::http::HttpServer> {
    let server = jxt_eventbus::http::serve(bus.clone(), addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let url = format!("http://{}", server.local_addr());
    if json {
        output::json_line(&Listening {
            listening: url,
            endpoints: ENDPOINTS,
        })?;
    } else {
        println!("serving {url} ({}); Ctrl-C stops", ENDPOINTS.join(" "));
    }
    Ok(server)
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

pub(crate) async fn run(global: &Global, args: ServeArgs) -> Result<()> {
    let config = global.load()?;
    let bus = EventBus::from_config(config)
        .await
        .context("cannot start the bus")?;
    let server = start(&bus, args.listen, global.json).await?;
    stopped().await;
    drop(server);
    bus.shutdown().await?;
    Ok(())
}
