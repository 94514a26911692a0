//! A loopback TCP proxy a test controls, to stall one client's connection
//! the way a network does: [`TcpProxy::freeze`] stops forwarding in both
//! directions without closing a socket (connections accepted meanwhile wait
//! too), and [`TcpProxy::thaw`] lets everything held through, in order.
//! [`TcpProxy::cut`] closes every open connection at once, dropping what it
//! held, as a connection reset does.
//!
//! It only ever connects to the upstream address it was given (a local
//! server) and stops with the test's runtime or when dropped.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// A proxy listening on `127.0.0.1:<random port>`.
#[derive(Debug)]
pub struct TcpProxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    cuts: watch::Sender<u64>,
    task: JoinHandle<()>,
}

impl TcpProxy {
    /// Starts a proxy to `upstream` (`host:port`, or a `nats://` URL).
    pub async fn start(upstream: &str) -> TcpProxy {
        let upstream = upstream
            .trim_start_matches("nats://")
            .split(',')
            .next()
            .expect("an upstream address")
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (frozen, frozen_rx) = watch::channel(false);
        let (cuts, cuts_rx) = watch::channel(0);
        let task = tokio::spawn(async move {
            // Dropped with the accept loop: every connection stops with it.
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let _ = client.set_nodelay(true);
                let (frozen, mut cut) = (frozen_rx.clone(), cuts_rx.clone());
                cut.borrow_and_update();
                let upstream = upstream.clone();
                connections.spawn(async move {
                    // A cut wins over a thaw sent right after it: what was
                    // held is dropped, not forwarded.
                    tokio::select! {
                        biased;
                        _ = cut.changed() => {}
                        _ = forward(client, upstream, frozen) => {}
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TcpProxy {
            addr,
            frozen,
            cuts,
            task,
        }
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops forwarding; sockets stay open.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forwards again, starting with what was held.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// Closes every connection open now; what they held is lost.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(client: TcpStream, upstream: String, mut frozen: watch::Receiver<bool>) {
    if frozen.wait_for(|f| !*f).await.is_err() {
        return;
    }
    let Ok(server) = TcpStream::connect(&upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::join!(
        pump(client_read, server_write, frozen.clone()),
        pump(server_read, client_write, frozen),
    );
}

/// Copies one direction; while frozen, what was read waits (and so does an
/// end of stream: the other side sees the socket open).
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await.unwrap_or(0);
        if frozen.wait_for(|f| !*f).await.is_err() {
            return;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
