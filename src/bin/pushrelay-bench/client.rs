//! A bare NIP-01 client: text frames in and out, nothing else (no AUTH, so it behaves the same on every relay).

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Sender(SplitSink<Socket, Message>);
pub struct Receiver(SplitStream<Socket>);

pub async fn connect(url: &str) -> Result<(Sender, Receiver), String> {
    let (socket, _) =
        tokio_tungstenite::connect_async(url).await.map_err(|e| format!("cannot connect to {url}: {e}"))?;
    let (sink, stream) = socket.split();
    Ok((Sender(sink), Receiver(stream)))
}

impl Sender {
    pub async fn send(&mut self, text: String) -> Result<(), String> {
        self.0.send(Message::Text(text.into())).await.map_err(|e| format!("send failed: {e}"))
    }
}

impl Receiver {
    /// The next JSON message (control frames skipped); None once the connection is closed.
    pub async fn next(&mut self) -> Option<Value> {
        loop {
            match self.0.next().await? {
                Ok(Message::Text(text)) => return serde_json::from_str(&text).ok(),
                Ok(Message::Close(_)) | Err(_) => return None,
                Ok(_) => continue,
            }
        }
    }
}
