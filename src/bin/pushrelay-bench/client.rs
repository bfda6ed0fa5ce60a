//! A bare NIP-01 client: text frames in and out, nothing else (no AUTH, so it behaves the same on every relay).

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub(crate) struct Sender(SplitSink<Socket, Message>);
pub(crate) struct Receiver(SplitStream<Socket>);

/// Connects with Nagle's algorithm off, as browsers' WebSockets are: with it on, an EVENT sent while the one
/// before is unacknowledged waits in our own socket for the relay's ACK (up to the delayed-ACK timer, 40 ms),
/// and a relay that answers after a pause looked up to 40 ms slower than it is.
pub(crate) async fn connect(url: &str) -> Result<(Sender, Receiver), String> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (sink, stream) = socket.split();
    Ok((Sender(sink), Receiver(stream)))
}

/// `connect`, from the local address `source` (a second loopback address, say, so that the relay's per-address
/// limits count this connection apart from others of this tool). Plain `ws://` only.
pub(crate) async fn connect_from(url: &str, source: std::net::IpAddr) -> Result<(Sender, Receiver), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
    let target = parsed.socket_addrs(|| Some(80)).map_err(|e| format!("{url}: {e}"))?;
    let target = *target.first().ok_or_else(|| format!("{url} names no address"))?;
    let socket = tokio::net::TcpSocket::new_v4().map_err(|e| e.to_string())?;
    socket.bind((source, 0).into()).map_err(|e| format!("cannot bind {source}: {e}"))?;
    let stream = socket.connect(target).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (socket, _) = tokio_tungstenite::client_async_with_config(url, MaybeTlsStream::Plain(stream), None)
        .await
        .map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (sink, stream) = socket.split();
    Ok((Sender(sink), Receiver(stream)))
}

impl Sender {
    pub(crate) async fn send(&mut self, text: String) -> Result<(), String> {
        self.0.send(Message::Text(text.into())).await.map_err(|e| format!("send failed: {e}"))
    }
}

impl Receiver {
    /// The next JSON message (control frames skipped); None once the connection is closed.
    pub(crate) async fn next(&mut self) -> Option<Value> {
        loop {
            match self.0.next().await? {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}
