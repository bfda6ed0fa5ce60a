//! Accepting connections and serving HTTP/1.1 on them, with a deadline on every request head.
//!
//! Why not `axum::serve`: it sets no timer, so hyper applies no header read timeout, and a client that opens a
//! socket and sends nothing, or a byte now and then (slow-loris), holds it for ever, unseen by the per-IP limit,
//! which counts WebSockets, not sockets. Here hyper's HTTP/1 reader has a timer and `[server]
//! handshake_timeout_secs`. (HTTP/1.1 only: WebSockets upgrade from it, and TLS with HTTP/2 is a proxy's job.)

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// How long requests under way (not WebSockets: those end with the relay's own shutdown) may take once the
/// server stops accepting.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown`, each request knowing its peer (`ConnectInfo<SocketAddr>`).
pub async fn serve(listener: TcpListener, app: Router, handshake_timeout: Duration, shutdown: CancellationToken) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(handshake_timeout);
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most often: wait for some to be freed rather than spin.
                    tracing::warn!("cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Nostr traffic is many small messages (EVENT, EOSE, OK): without TCP_NODELAY, Nagle's algorithm and
        // delayed ACKs add tens of milliseconds to every answer that follows another.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::warn!("cannot set TCP_NODELAY: {e}");
        }
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().oneshot(request)
        });
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, "connection ended: {e}");
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, connections.wait()).await.is_err() {
        tracing::warn!("requests still under way after {DRAIN_TIMEOUT:?} of shutdown were cut");
    }
}
