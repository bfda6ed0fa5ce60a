//! Test harness: a relay started in-process on an ephemeral port with its own SQLite file, and a WebSocket client
//! that talks to it as any Nostr client would.

pub(crate) mod marmot;
pub(crate) mod postgres;
pub(crate) mod proxy;
pub(crate) mod push;
pub(crate) mod standins;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use nostr::nips::{nip04, nip44};
use nostr::prelude::*;
use postgres::{Backend, PgDatabase, current_backend};
use pushrelay::{Config, RelayHandle};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async_with_config};

pub(crate) const TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub config: Config,
    pub url: String,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of a test run on PostgreSQL, kept while the relay lives.
    pub postgres: Option<Arc<PgDatabase>>,
}

impl TestRelay {
    pub(crate) async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        // RUST_LOG=pushrelay=debug shows the relay's logs beside a failing test's output.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.bind = "127.0.0.1:0".parse().unwrap();
        config.database.url = format!("sqlite://{}", dir.path().join("relay.db").display());
        config.push.secret_key_file = dir.path().join("push.key");
        config.push.webpush.vapid_key_file = dir.path().join("vapid.key");
        let postgres = match current_backend() {
            Backend::Postgres => Some(PgDatabase::create().await),
            Backend::Sqlite => None,
        };
        if let Some(database) = &postgres {
            config.database.url = database.url.clone();
        }
        adjust(&mut config);
        Self::start_in(dir, config, postgres).await
    }

    async fn start_in(dir: tempfile::TempDir, config: Config, postgres: Option<Arc<PgDatabase>>) -> Self {
        let handle = RelayHandle::start(config.clone()).await.expect("relay starts");
        let url = format!("ws://{}", handle.local_addr);
        Self { handle: Some(handle), config, url, dir, postgres }
    }

    /// The relay's clock: a test moves it forward instead of sleeping.
    /// The relay's push service (push is on by default).
    pub(crate) fn push(&self) -> Arc<pushrelay::push::PushService> {
        self.handle.as_ref().unwrap().push().expect("push is on").clone()
    }

    pub(crate) fn clock(&self) -> &pushrelay::clock::Clock {
        self.handle.as_ref().expect("a running relay").clock()
    }

    pub(crate) fn db_path(&self) -> PathBuf {
        self.dir.path().join("relay.db")
    }

    pub(crate) fn http_url(&self) -> String {
        self.url.replacen("ws://", "http://", 1)
    }

    pub(crate) async fn nip11(&self) -> Value {
        nip11(&self.http_url()).await
    }

    pub(crate) async fn client(&self) -> Client {
        Client::connect(&self.url).await
    }

    /// Shuts the relay down cleanly and starts it again on the same database (on a new port).
    pub(crate) async fn restart(mut self) -> Self {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
        Self::reopen(self).await
    }

    /// Starts a relay on the database of one whose handle was already shut down.
    pub(crate) async fn reopen(stopped: Self) -> Self {
        let mut config = stopped.config.clone();
        config.server.bind = "127.0.0.1:0".parse().unwrap();
        Self::reopen_with(stopped, config).await
    }

    /// The same, with another configuration (say, the old address).
    pub(crate) async fn reopen_with(stopped: Self, config: Config) -> Self {
        assert!(stopped.handle.is_none(), "shut the relay down first");
        Self::start_in(stopped.dir, config, stopped.postgres).await
    }
}

/// The NIP-11 document at `http_url`, asked for as a client does.
pub(crate) async fn nip11(http_url: &str) -> Value {
    let response =
        reqwest::Client::new().get(http_url).header("Accept", "application/nostr+json").send().await.unwrap();
    response.json().await.unwrap()
}

pub(crate) struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The NIP-42 challenge the relay opened the connection with.
    pub challenge: String,
}

impl Client {
    pub(crate) async fn connect(url: &str) -> Self {
        Self::try_connect(url).await.expect("websocket connects")
    }

    pub(crate) async fn try_connect(url: &str) -> Option<Self> {
        let (socket, _) = connect_async_with_config(url, None, true).await.ok()?;
        Some(Self::greeted(socket).await)
    }

    /// Connects with a request of one's own (extra headers, say).
    pub(crate) async fn connect_request(request: tokio_tungstenite::tungstenite::handshake::client::Request) -> Self {
        let (socket, _) = connect_async_with_config(request, None, true).await.expect("websocket connects");
        Self::greeted(socket).await
    }

    /// Connects from `source`, a loopback address of its own (per-address limits count it apart).
    pub(crate) async fn connect_from(url: &str, source: std::net::Ipv4Addr) -> Self {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind((source, 0).into()).unwrap();
        let stream = socket.connect(url.trim_start_matches("ws://").parse().unwrap()).await.unwrap();
        let (socket, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream)).await.unwrap();
        Self::greeted(socket).await
    }

    async fn greeted(socket: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        let mut client = Self { socket, challenge: String::new() };
        let greeting = client.recv().await;
        assert_eq!(greeting[0], "AUTH", "the relay opens with a challenge: {greeting}");
        client.challenge = greeting[1].as_str().unwrap().to_owned();
        client
    }

    /// Authenticates (NIP-42) as `keys` for the relay at `relay_url`; returns the relay's OK answer.
    pub(crate) async fn auth(&mut self, keys: &Keys, relay_url: &str) -> (bool, String) {
        let event = sign(keys, 22242, "", &[&["relay", relay_url], &["challenge", &self.challenge.clone()]], now());
        self.publish_raw(json!(["AUTH", event])).await
    }

    pub(crate) async fn send_text(&mut self, text: &str) {
        self.socket.send(Message::Text(text.into())).await.expect("send");
    }

    pub(crate) async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    /// The next text message, parsed; panics after the timeout.
    pub(crate) async fn recv(&mut self) -> Value {
        self.try_recv(TIMEOUT).await.expect("a message from the relay in time")
    }

    /// The next text message within `wait`, or None on timeout or close.
    pub(crate) async fn try_recv(&mut self, wait: Duration) -> Option<Value> {
        loop {
            match tokio::time::timeout(wait, self.socket.next()).await {
                Err(_) => return None,
                Ok(None | Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Text(text)))) => {
                    return Some(serde_json::from_str(&text).expect("relay sends JSON"));
                }
                Ok(Some(Ok(Message::Close(_)))) => return None,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Asserts that nothing arrives for a short while.
    pub(crate) async fn expect_silence(&mut self) {
        if let Some(message) = self.try_recv(Duration::from_millis(300)).await {
            panic!("expected no message, got {message}");
        }
    }

    /// Publishes an event and returns the relay's (accepted, message) answer.
    pub(crate) async fn publish(&mut self, event: &Event) -> (bool, String) {
        self.publish_raw(json!(["EVENT", event])).await
    }

    pub(crate) async fn publish_raw(&mut self, message: Value) -> (bool, String) {
        let id = message[1]["id"].clone();
        self.send(message).await;
        let answer = self.recv().await;
        assert_eq!(answer[0], "OK", "expected OK, got {answer}");
        assert_eq!(answer[1], id, "OK for another event: {answer}");
        (answer[2].as_bool().unwrap(), answer[3].as_str().unwrap().to_owned())
    }

    /// Publishes an event that must be accepted.
    pub(crate) async fn publish_ok(&mut self, event: &Event) {
        let (accepted, message) = self.publish(event).await;
        assert!(accepted, "event refused: {message}");
    }

    /// Publishes events as a bulk uploader does, every one sent before any `OK` is read; each must be accepted.
    /// (One at a time, each waits for the commit after the one before: up to `[database] commit_delay_ms`.)
    pub(crate) async fn publish_all_ok(&mut self, events: &[Event]) {
        for event in events {
            self.send(json!(["EVENT", event])).await;
        }
        let mut waiting: std::collections::HashSet<String> = events.iter().map(id_of).collect();
        while !waiting.is_empty() {
            let answer = self.recv().await;
            assert!(answer[0] == "OK" && answer[2] == true, "expected OK true, got {answer}");
            assert!(waiting.remove(answer[1].as_str().unwrap()), "OK for another event: {answer}");
        }
    }

    /// Sends a REQ and returns the stored events up to EOSE (the subscription stays open).
    pub(crate) async fn req(&mut self, sub_id: &str, filters: &[Value]) -> Vec<Value> {
        let mut message = vec![json!("REQ"), json!(sub_id)];
        message.extend(filters.iter().cloned());
        self.send(Value::Array(message)).await;
        let mut events = Vec::new();
        loop {
            let reply = self.recv().await;
            match reply[0].as_str().unwrap() {
                "EVENT" => {
                    assert_eq!(reply[1], sub_id);
                    events.push(reply[2].clone());
                }
                "EOSE" => {
                    assert_eq!(reply[1], sub_id);
                    return events;
                }
                _ => panic!("unexpected reply to REQ: {reply}"),
            }
        }
    }

    /// The ids of the stored events a REQ returns, in order.
    pub(crate) async fn req_ids(&mut self, sub_id: &str, filters: &[Value]) -> Vec<String> {
        self.req(sub_id, filters).await.iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    }

    pub(crate) async fn close(&mut self, sub_id: &str) {
        self.send(json!(["CLOSE", sub_id])).await;
    }
}

#[derive(Clone, Copy)]
pub(crate) enum Cipher {
    Nip04,
    Nip44,
}

pub(crate) fn registration_event(
    user: &Keys,
    to: &PublicKey,
    content: &Value,
    cipher: Cipher,
    created_at: u64,
) -> Event {
    let plaintext = content.to_string();
    let encrypted = match cipher {
        Cipher::Nip04 => nip04::encrypt(user.secret_key(), to, &plaintext).unwrap(),
        Cipher::Nip44 => nip44::encrypt(user.secret_key(), to, &plaintext, nip44::Version::V2).unwrap(),
    };
    sign(user, 22456, &encrypted, &[&["p", &to.to_hex()]], created_at)
}

pub(crate) fn now() -> u64 {
    Timestamp::now().as_secs()
}

/// Signs an event with the given kind, content, tags and created_at.
pub(crate) fn sign(keys: &Keys, kind: u16, content: &str, tags: &[&[&str]], created_at: u64) -> Event {
    EventBuilder::new(Kind::from(kind), content)
        .tags(tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap()))
        .custom_created_at(Timestamp::from_secs(created_at))
        .finalize(keys)
        .unwrap()
}

pub(crate) fn note(keys: &Keys, content: &str) -> Event {
    sign(keys, 1, content, &[], now())
}

pub(crate) fn id_of(event: &Event) -> String {
    event.id.to_hex()
}

/// The relay binary configured with nothing but `database_url`, a free loopback address and key files in `dir`
/// (an empty configuration file: every other setting is the default).
pub(crate) fn bare_relay_command(dir: &std::path::Path, database_url: &str) -> std::process::Command {
    let config = dir.join("config.toml");
    std::fs::write(&config, "").unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_pushrelay"));
    command
        .arg("--config")
        .arg(&config)
        .env("PUSHRELAY_SERVER__BIND", "127.0.0.1:0")
        .env("PUSHRELAY_DATABASE__URL", database_url)
        .env("PUSHRELAY_PUSH__SECRET_KEY_FILE", dir.join("push.key"))
        .env("PUSHRELAY_PUSH__WEBPUSH__VAPID_KEY_FILE", dir.join("vapid.key"));
    command
}

/// The relay binary on a database in `dir`, with `extra` environment overrides (no rate limits on events).
pub(crate) fn relay_command(dir: &std::path::Path, extra: &[(&str, String)]) -> std::process::Command {
    let mut command = bare_relay_command(dir, &format!("sqlite://{}/relay.db", dir.display()));
    command.env("PUSHRELAY_LIMITS__IP_EVENTS_PER_MINUTE", "0").env("PUSHRELAY_LIMITS__PUBKEY_EVENTS_PER_MINUTE", "0");
    for (key, value) in extra {
        command.env(key, value);
    }
    command
}

pub(crate) fn kill_hard(child: &mut std::process::Child) {
    std::process::Command::new("kill").arg("-KILL").arg(child.id().to_string()).status().unwrap();
    child.wait().unwrap();
}

/// A second relay as a process of its own (the built binary, with its defaults and a database in `dir`), on a port
/// chosen first so that its public URL names it, as AUTH needs: (the process, its URL).
pub(crate) async fn spawn_remote_relay(dir: &std::path::Path) -> (std::process::Child, String) {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("ws://127.0.0.1:{port}");
    let extra =
        [("PUSHRELAY_SERVER__BIND", format!("127.0.0.1:{port}")), ("PUSHRELAY_SERVER__PUBLIC_URL", url.clone())];
    let (remote, _) = spawn_relay_binary(&mut relay_command(dir, &extra)).await;
    (remote, url)
}

/// Starts the built binary (its stdout piped here) and waits for the address it logs; the rest of its log is read
/// in the background, so that it never blocks on a full pipe.
pub(crate) async fn spawn_relay_binary(command: &mut std::process::Command) -> (std::process::Child, String) {
    spawn_relay_binary_logging(command, "info", None).await
}

/// As `spawn_relay_binary`, logging at `level` (a `RUST_LOG` value), the whole log kept in `keep` when given.
pub(crate) async fn spawn_relay_binary_logging(
    command: &mut std::process::Command,
    level: &str,
    keep: Option<PathBuf>,
) -> (std::process::Child, String) {
    use std::io::{BufRead, Write};
    let mut child =
        command.env("RUST_LOG", level).env("NO_COLOR", "1").stdout(std::process::Stdio::piped()).spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let address = tokio::task::spawn_blocking(move || {
        let mut log: Box<dyn Write + Send> = match keep {
            Some(path) => Box::new(std::fs::File::create(path).unwrap()),
            None => Box::new(std::io::sink()),
        };
        let mut line = String::new();
        while stdout.read_line(&mut line).ok()? > 0 {
            log.write_all(line.as_bytes()).unwrap();
            if let Some(address) = line.split("local_addr=").nth(1) {
                let address = address.split_whitespace().next()?.to_owned();
                std::thread::spawn(move || std::io::copy(&mut stdout, &mut log));
                return Some(address);
            }
            line.clear();
        }
        None
    })
    .await
    .unwrap()
    .expect("the relay logs its address");
    (child, address)
}
