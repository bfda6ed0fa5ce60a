//! A TCP forwarder on loopback between a client and a server, which a test can cut: every connection through it
//! drops, as when a server restarts or a network fails, as the client sees it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub(crate) struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    /// While false, new connections are closed as soon as they are accepted.
    up: AtomicBool,
    /// Bumped to drop every connection open now.
    cuts: watch::Sender<u64>,
    /// Connections accepted, refused ones included.
    accepted: AtomicUsize,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared { up: AtomicBool::new(true), cuts: watch::channel(0).0, accepted: 0.into() });
        let state = shared.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                state.accepted.fetch_add(1, Ordering::SeqCst);
                if !state.up.load(Ordering::SeqCst) {
                    continue; // dropped: closed at once
                }
                let mut cuts = state.cuts.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(target).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, shared }
    }

    /// Drops every connection open now; new ones still pass.
    pub(crate) fn drop_connections(&self) {
        self.shared.cuts.send_modify(|n| *n += 1);
    }

    /// Drops every connection and refuses new ones until `restore`.
    pub(crate) fn cut(&self) {
        self.shared.up.store(false, Ordering::SeqCst);
        self.drop_connections();
    }

    pub(crate) fn restore(&self) {
        self.shared.up.store(true, Ordering::SeqCst);
    }

    /// Connections accepted so far, refused ones included.
    pub(crate) fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}
