//! Running a service until it is told to stop, with the operator endpoints
//! and the bus stopping together: the endpoints keep answering (`/healthz`
//! says "shut down", `/status` shows the drain) while the bus finishes its
//! running records, commits and leaves its group; then they close.

use std::future::Future;
use std::net::SocketAddr;

use super::serve_with_shutdown;
use crate::error::{Error, Result};
use crate::EventBus;

/// Serves the operator endpoints for `bus` on `addr` until `signal`
/// resolves (or the bus is shut down elsewhere), then shuts the bus down
/// and resolves once both it and the endpoints stopped. The body of a
/// service's `main` after its subscriptions; see [`run_until_signal`] for
/// Ctrl-C and SIGTERM.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> jxt_eventbus::Result<()> {
/// use jxt_eventbus::{http, EventBus};
/// let bus = EventBus::builder().build().await?;
/// let addr = "127.0.0.1:0".parse().unwrap();
/// // Here the signal is at once; a service passes its own.
/// http::run_until(&bus, addr, async {}).await?;
/// assert!(bus.is_closed());
/// # Ok(())
/// # }
/// ```
///
/// # Errors
/// [`Error::Serve`] when `addr` cannot be bound (the bus is left running);
/// otherwise what [`EventBus::shutdown`] returns.
///
/// # Cancel safety
/// Not cancel safe: dropped while the bus shuts down, it leaves the
/// shutdown unfinished, as dropping [`EventBus::shutdown`] does.
pub async fn run_until(
    bus: &EventBus,
    addr: SocketAddr,
    signal: impl Future<Output = ()>,
) -> Result<()> {
    let server = serve_with_shutdown(bus.clone(), addr, bus.stopped())
        .await
        .map_err(|source| Error::Serve { addr, source })?;
    tokio::select! {
        () = signal => tracing::info!("stop requested: shutting the bus down"),
        () = bus.stopped() => {}
    }
    let stopped = bus.shutdown().await;
    server.stopped().await;
    stopped
}

/// [`run_until`] Ctrl-C (SIGINT), or on Unix SIGTERM (what container
/// runtimes send before they kill).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> jxt_eventbus::Result<()> {
/// use jxt_eventbus::{http, EventBus};
/// let bus = EventBus::builder().build().await?;
/// // ... subscribe ...
/// http::run_until_signal(&bus, http::DEFAULT_ADDR).await
/// # }
/// ```
///
/// # Errors
/// As [`run_until`]; also [`Error::Serve`] when the signal handlers cannot
/// be installed (before anything is served).
///
/// # Cancel safety
/// As [`run_until`].
pub async fn run_until_signal(bus: &EventBus, addr: SocketAddr) -> Result<()> {
    let signal = StopSignal::install().map_err(|e| Error::Serve {
        addr,
        source: std::io::Error::new(e.kind(), format!("cannot listen for SIGINT/SIGTERM: {e}")),
    })?;
    run_until(bus, addr, signal.received()).await
}

/// SIGINT and, on Unix, SIGTERM, installed before anything is served so
/// that a failure to install them is an error, not a service that cannot
/// be stopped.
struct StopSignal {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignal {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(Self {})
    }

    #[cfg(unix)]
    async fn received(mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }

    #[cfg(not(unix))]
    async fn received(self) {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C: stopping now");
        }
    }
}
