//! Configuration: `config.toml`, overridden by `PUSHRELAY_SECTION__KEY` environment variables.
//!
//! Every section and key has a default, so an older file keeps working when a later version adds a section.
//! Keys inside a known section are checked strictly: a typo is an error naming the key, not a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;

mod groups;
mod push;
pub use groups::{GroupsConfig, INVITE_KIND};
pub use push::{ApnsConfig, FcmConfig, MarmotConfig, PushConfig, UnifiedPushConfig, WebPushConfig};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub server: ServerConfig,
    pub relay: RelayInfoConfig,
    pub limits: LimitsConfig,
    pub database: DatabaseConfig,
    pub policy: PolicyConfig,
    pub auth: AuthConfig,
    pub push: PushConfig,
    pub upstream: UpstreamConfig,
    pub groups: GroupsConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Listen address of the WebSocket and HTTP server.
    pub bind: SocketAddr,
    /// The relay's own `ws://` or `wss://` URL, as clients reach it.
    pub public_url: String,
    /// Serve `/status`, the operator's HTML page.
    pub status_page: bool,
    /// Serve `/metrics` on this address alone (one the monitoring system reaches) instead of on `bind`.
    pub metrics_bind: Option<SocketAddr>,
    /// A client must send a whole HTTP request head (the WebSocket handshake included) within this many seconds
    /// of connecting or of its previous request, or it is disconnected (slow-loris clients).
    pub handshake_timeout_secs: u64,
    /// Largest HTTP request body (NIP-86 management requests), read only once the request carries an
    /// Authorization header, and within `handshake_timeout_secs`.
    pub max_body_bytes: usize,
    /// Reverse proxies in front of the relay (IP addresses or CIDR networks): only a connection from one of these
    /// may name its client in `X-Forwarded-For` or `Forwarded`; anyone else's such headers are ignored.
    pub trusted_proxies: Vec<String>,
    /// Per-IP limits count an IPv6 client by its address cut to this many bits: one customer usually holds a whole
    /// /64, and would otherwise have 2^64 fresh addresses to spread over.
    pub ipv6_prefix_len: u8,
}

impl ServerConfig {
    /// `trusted_proxies` parsed: a bare address is a network of one.
    pub fn trusted_proxy_networks(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|entry| {
                let entry = entry.trim();
                entry.parse::<ipnet::IpNet>().or_else(|_| entry.parse::<std::net::IpAddr>().map(Into::into)).map_err(
                    |_| format!("server.trusted_proxies: expected IP addresses or CIDR networks, found {entry:?}"),
                )
            })
            .collect()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:7777".parse().expect("valid default address"),
            public_url: "ws://127.0.0.1:7777".to_owned(),
            status_page: true,
            metrics_bind: None,
            handshake_timeout_secs: 10,
            max_body_bytes: 64 * 1024,
            trusted_proxies: Vec::new(),
            ipv6_prefix_len: 64,
        }
    }
}

/// What the NIP-11 document says about the relay and its operator.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayInfoConfig {
    pub name: String,
    pub description: String,
    /// The operator's pubkey (hex), for NIP-11 `pubkey`.
    pub pubkey: Option<String>,
    /// How to reach the operator, for NIP-11 `contact`.
    pub contact: Option<String>,
}

impl Default for RelayInfoConfig {
    fn default() -> Self {
        Self {
            name: "pushrelay".to_owned(),
            description: "A Nostr relay that also delivers push notifications".to_owned(),
            pubkey: None,
            contact: None,
        }
    }
}

/// Limits that are enforced on every client and advertised in NIP-11 `limitation`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest WebSocket message accepted from a client, in bytes.
    pub max_message_length: usize,
    /// Open subscriptions per connection.
    pub max_subscriptions: usize,
    /// Most events one NIP-77 reconciliation may cover; a broader filter is refused with NEG-ERR.
    pub max_negentropy_records: usize,
    /// Filters in one REQ.
    pub max_filters: usize,
    /// Longest subscription id.
    pub max_subid_length: usize,
    /// Largest `limit` honoured in a filter; larger ones are cut to this.
    pub max_limit: u64,
    /// `limit` used for a filter that names none.
    pub default_limit: u64,
    /// NIP-50: distinct words in one filter's `search` (a repeated word counts once); more is refused. Both databases'
    /// ranking costs grow with the words.
    pub max_search_terms: usize,
    /// NIP-50: bytes of one filter's `search` text; longer is refused.
    pub max_search_length: usize,
    /// Tags per event.
    pub max_event_tags: usize,
    /// Characters of event content.
    pub max_content_length: usize,
    /// Oldest accepted `created_at`, in seconds before now (0 = no limit).
    pub created_at_lower_limit: u64,
    /// Newest accepted `created_at`, in seconds after now (0 = no limit).
    pub created_at_upper_limit: u64,
    /// Messages waiting to be sent to a client before it is disconnected as too slow.
    pub max_outgoing_queue: usize,
    /// Bytes of live events waiting to be sent to a client before it is disconnected as too slow.
    pub max_outgoing_bytes: usize,
    /// Bytes of stored events one REQ may return (its filters share them; the newest of each filter always).
    pub max_req_bytes: usize,
    /// Seconds a send to a client may make no progress before the connection is closed.
    pub send_timeout_secs: u64,
    /// Milliseconds within which live events to one connection are gathered into one write, once one has just
    /// been sent (0: each is written at once).
    pub live_flush_ms: u64,
    /// Largest exact COUNT answer; past it, COUNT answers this number with `approximate: true`.
    pub max_count: u64,
    /// NIP-77 reconciliations open at once on one connection (each also counts as a subscription).
    pub max_negentropy_sessions: usize,
    /// Events of one connection being verified or written at once; reading waits beyond it.
    pub max_pending_events: usize,
    /// Open connections from one IP address (0 = no limit).
    pub max_connections_per_ip: usize,
    /// Events accepted per minute from one IP address, in bursts of up to as many (0 = no limit).
    pub ip_events_per_minute: u32,
    /// Events accepted per minute from one author (0 = no limit).
    pub pubkey_events_per_minute: u32,
    /// REQ and COUNT messages per minute on one connection (0 = no limit).
    pub reqs_per_minute: u32,
    /// NIP-97 registrations (events POSTed to `/register`) accepted per hour from one IP address, in bursts of up
    /// to as many (0 = no limit).
    pub ip_registrations_per_hour: u32,
    /// NIP-9a subscriptions (kind 30390) accepted per hour from one IP address, in bursts of up to as many (0 = no
    /// limit).
    pub ip_subscriptions_per_hour: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_message_length: 128 * 1024,
            max_subscriptions: 20,
            max_negentropy_records: 500_000,
            max_filters: 10,
            max_subid_length: 64,
            max_limit: 500,
            default_limit: 100,
            max_search_terms: 16,
            max_search_length: 1024,
            max_event_tags: 2000,
            max_content_length: 64 * 1024,
            created_at_lower_limit: 0,
            created_at_upper_limit: 15 * 60,
            max_outgoing_queue: 1000,
            max_outgoing_bytes: 4 * 1024 * 1024,
            max_req_bytes: 8 * 1024 * 1024,
            send_timeout_secs: 20,
            live_flush_ms: 10,
            max_count: 100_000,
            max_negentropy_sessions: 2,
            max_pending_events: 64,
            max_connections_per_ip: 200,
            ip_events_per_minute: 6000,
            pubkey_events_per_minute: 600,
            reqs_per_minute: 1200,
            ip_registrations_per_hour: 60,
            ip_subscriptions_per_hour: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (the folder is created if missing), or `postgres://USER@HOST/DB` for one or several nodes.
    pub url: String,
    /// This node's name among several on one PostgreSQL database (announcements, job leases, upstream ownership);
    /// empty: the host name with a random suffix, new at each start. A node refuses an id a live node has.
    pub node_id: String,
    /// Read-only connections serving REQ queries; 0 (the default): SQLite one per core the relay may run on,
    /// PostgreSQL 4 (`DatabaseConfig::readers`).
    pub read_connections: u32,
    /// Most events committed in one transaction by the writer.
    pub max_batch: usize,
    /// A commit does not start sooner than this many milliseconds after the one before; the events that arrive
    /// meanwhile share it (and wait for their `OK` and their fan-out). An event after a quiet spell, or one its
    /// client waits on (`relay::pace`), is committed at once. 0: each commit starts as soon as the one before ended.
    pub commit_delay_ms: u64,
    /// How often expired events (NIP-40) are purged, in seconds.
    pub purge_interval_secs: u64,
    /// SQLite: how long a write waits for a lock another process holds (a backup, `pushrelay import`) before the
    /// events waiting on it are refused with `OK false error:`.
    pub busy_timeout_ms: u64,
    /// NIP-50: index each new event's content for `search` filters (its cost: BENCHMARKS.md). Off,
    /// a REQ or COUNT with `search` is refused, and events stored meanwhile stay out of the index.
    pub search_index: bool,
    /// NIP-50: a search ranks the newest this many events that match it (and the filter's other fields); ranking
    /// every match of a word most notes hold would make one REQ cost a tenth of a second.
    pub search_candidates: usize,
}

impl DatabaseConfig {
    /// How many read connections to open (`read_connections`, or what 0 stands for). SQLite runs each query whole on
    /// its connection's thread, so threads beyond the cores only take turns: with four on one core, each query
    /// woke a sleeping thread, and the switches cost REQs per CPU-second (BENCHMARKS.md). A PostgreSQL
    /// connection mostly waits on the server, so a few more than the cores cost nothing.
    pub fn readers(&self, sqlite: bool) -> u32 {
        match self.read_connections {
            0 if sqlite => std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
            0 => 4,
            n => n,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://data/pushrelay.db".to_owned(),
            node_id: String::new(),
            read_connections: 0,
            max_batch: 512,
            commit_delay_ms: 50,
            purge_interval_secs: 60,
            busy_timeout_ms: 10_000,
            search_index: true,
            search_candidates: 1000,
        }
    }
}

/// Who may publish what.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// When not empty, only these kinds are accepted.
    pub kind_allowlist: Vec<u16>,
    /// Kinds never accepted.
    pub kind_denylist: Vec<u16>,
    /// Authors (hex pubkeys) whose events are refused.
    pub pubkey_blocklist: Vec<String>,
}

/// NIP-42 authentication and what depends on it.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Kinds served only to an authenticated pubkey that wrote them or is p-tagged in them.
    pub read_restricted_kinds: Vec<u16>,
    /// When true, only authenticated pubkeys in `write_allowlist` may publish, and only their own events.
    pub restrict_writes: bool,
    /// Hex pubkeys allowed to publish when `restrict_writes` is on.
    pub write_allowlist: Vec<String>,
    /// How far an AUTH event's created_at may be from now, in seconds.
    pub max_clock_skew_secs: u64,
    /// Hex pubkeys that may use the NIP-86 management API (authenticated with NIP-98); empty: the API is off.
    pub admin_pubkeys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            read_restricted_kinds: vec![4, 1059, 1060, 14],
            restrict_writes: false,
            write_allowlist: Vec::new(),
            max_clock_skew_secs: 600,
            admin_pubkeys: Vec::new(),
        }
    }
}

/// Watching the relays that registrations name, for events that never pass through this relay.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamConfig {
    pub enabled: bool,
    /// Also accept `ws://` relays (otherwise only `wss://`).
    pub allow_insecure: bool,
    /// Accept relays on loopback, private and link-local addresses (tests only).
    pub allow_private_addresses: bool,
    /// Most remote relays watched at once.
    pub max_connections: usize,
    /// Seconds to wait after a change of registrations or presence before subscriptions are updated.
    pub debounce_ms: u64,
    /// Most `#p` or `#e` values in one filter sent to a remote relay.
    pub max_values_per_filter: usize,
    /// Events accepted per second from one remote relay before it is cut off as flooding.
    pub max_events_per_sec: u32,
    /// Largest message accepted from a watched relay, in bytes; a larger one ends that connection.
    pub max_message_bytes: usize,
    /// With `store_events`: watched events waiting to be written; beyond it, new ones are not stored (logged).
    pub max_pending_writes: usize,
    /// Watched relays one pubkey's registrations may name (all its devices together); the rest are not watched.
    pub max_relays_per_pubkey: usize,
    /// A subscription a watched relay refused (`CLOSED`) is asked again after this many seconds (at once after a
    /// successful AUTH, when it was refused for want of one).
    pub refused_retry_secs: u64,
    /// Also store the events that arrive from watched relays (and serve them to local subscribers).
    pub store_events: bool,
    /// Longest relay URL a registration may name (0xchat's `relays`, NIP-97's `relay` tags, kind 10050 lists);
    /// longer ones are left out, as unwatchable ones are.
    pub max_relay_url_length: usize,
    /// With several nodes on one database, one node watches each remote relay, holding a lease renewed every
    /// third of this many seconds; another node takes the relay over once the lease lapses.
    pub lease_secs: u64,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_insecure: false,
            allow_private_addresses: false,
            max_connections: 200,
            debounce_ms: 2000,
            max_values_per_filter: 250,
            max_events_per_sec: 200,
            max_message_bytes: 1024 * 1024,
            max_pending_writes: 1000,
            max_relays_per_pubkey: 10,
            refused_retry_secs: 600,
            max_relay_url_length: 256,
            store_events: false,
            lease_secs: 30,
        }
    }
}

impl Config {
    /// The kinds served only to their parties: `[auth] read_restricted_kinds`, and with push on, NIP-9a push
    /// subscriptions (kind 30390), which only their author may read. The relay's readers, its NIP-11 document and
    /// the push matcher use this; the watchers keep to the configured list.
    pub fn read_restricted_kinds(&self) -> Vec<u16> {
        let mut kinds = self.auth.read_restricted_kinds.clone();
        // NIP-29 invite codes: an outsider who read one could join a closed group.
        if self.groups.enabled && !kinds.contains(&INVITE_KIND) {
            kinds.push(INVITE_KIND);
        }
        if self.push.enabled && !kinds.contains(&crate::protocol::event::PUSH_SUBSCRIPTION_KIND) {
            kinds.push(crate::protocol::event::PUSH_SUBSCRIPTION_KIND);
        }
        kinds
    }

    /// Reads `path` (which must exist) and applies environment overrides.
    pub fn load(path: &Path) -> Result<Self, String> {
        if !path.is_file() {
            return Err(format!("config file {} not found", path.display()));
        }
        Self::from_figment(Figment::new().merge(Toml::file_exact(path)))
            .map_err(|e| format!("config file {}: {e}", path.display()))
    }

    /// Defaults plus environment overrides, for running without a file.
    pub fn from_env() -> Result<Self, String> {
        Self::from_figment(Figment::new())
    }

    fn from_figment(figment: Figment) -> Result<Self, String> {
        let config: Config =
            figment.merge(Env::prefixed("PUSHRELAY_").split("__")).extract().map_err(|e| one_line(&e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let limits = &self.limits;
        if limits.default_limit > limits.max_limit {
            return Err("limits.default_limit: expected a value no larger than limits.max_limit".into());
        }
        for (key, value) in [
            ("limits.max_message_length", limits.max_message_length),
            ("limits.max_subscriptions", limits.max_subscriptions),
            ("limits.max_filters", limits.max_filters),
            ("limits.max_search_terms", limits.max_search_terms),
            ("limits.max_search_length", limits.max_search_length),
            ("limits.max_outgoing_queue", limits.max_outgoing_queue),
            ("limits.max_outgoing_bytes", limits.max_outgoing_bytes),
            ("limits.max_req_bytes", limits.max_req_bytes),
            ("limits.send_timeout_secs", limits.send_timeout_secs as usize),
            ("limits.max_negentropy_sessions", limits.max_negentropy_sessions),
            ("limits.max_pending_events", limits.max_pending_events),
            ("database.max_batch", self.database.max_batch),
            ("push.heartbeat_timeout_secs", self.push.heartbeat_timeout_secs as usize),
            ("push.workers", self.push.workers),
            ("push.max_pending_intake", self.push.max_pending_intake),
            ("upstream.max_pending_writes", self.upstream.max_pending_writes),
            ("upstream.max_message_bytes", self.upstream.max_message_bytes),
            ("push.device_burst", self.push.device_burst as usize),
            ("push.max_mentions", self.push.max_mentions),
            ("push.max_subscription_filters", self.push.max_subscription_filters),
            ("push.max_callback_length", self.push.max_callback_length),
            ("push.max_subscription_filter_length", self.push.max_subscription_filter_length),
            ("push.max_subscriptions", self.push.max_subscriptions),
            ("push.max_broad_subscriptions", self.push.max_broad_subscriptions),
            ("push.max_callbacks_per_host", self.push.max_callbacks_per_host),
            ("push.test_interval_secs", self.push.test_interval_secs as usize),
            ("push.nip97_max_devices", self.push.nip97_max_devices),
            ("push.nip97_max_challenge_length", self.push.nip97_max_challenge_length),
            ("push.nip97_device_ttl_days", self.push.nip97_device_ttl_days as usize),
            ("upstream.max_relay_url_length", self.upstream.max_relay_url_length),
            ("database.purge_interval_secs", self.database.purge_interval_secs as usize),
            ("groups.max_members", self.groups.max_members),
            ("database.search_candidates", self.database.search_candidates),
            ("groups.max_groups", self.groups.max_groups),
            ("push.marmot.max_trigger_content_length", self.push.marmot.max_trigger_content_length),
            ("push.marmot.unwraps_per_minute", self.push.marmot.unwraps_per_minute as usize),
            ("push.marmot.max_in_flight", self.push.marmot.max_in_flight),
            ("push.marmot.wakes_per_token_per_minute", self.push.marmot.wakes_per_token_per_minute as usize),
            ("push.marmot.max_replay_hashes", self.push.marmot.max_replay_hashes),
            ("push.marmot.max_attempts", self.push.marmot.max_attempts as usize),
            ("push.marmot.replay_window_secs", self.push.marmot.replay_window_secs as usize),
        ] {
            if value == 0 {
                return Err(format!("{key}: expected a positive number"));
            }
        }
        // A trigger's event is its content and about 400 bytes around it, all within one message.
        if self.push.marmot.enabled && self.push.marmot.max_trigger_content_length + 1024 > limits.max_message_length {
            return Err("push.marmot.max_trigger_content_length: expected at least 1,024 less than \
                        limits.max_message_length (a trigger is one message)"
                .into());
        }
        if !(self.server.public_url.starts_with("ws://") || self.server.public_url.starts_with("wss://")) {
            return Err("server.public_url: expected a ws:// or wss:// URL".into());
        }
        self.server.trusted_proxy_networks()?;
        if !(1..=128).contains(&self.server.ipv6_prefix_len) {
            return Err("server.ipv6_prefix_len: expected a number from 1 to 128".into());
        }
        if !self.database.is_postgres() {
            self.database.sqlite_path()?;
        }
        for (key, list) in [
            ("policy.pubkey_blocklist", &self.policy.pubkey_blocklist),
            ("auth.write_allowlist", &self.auth.write_allowlist),
            ("auth.admin_pubkeys", &self.auth.admin_pubkeys),
            ("groups.creators", &self.groups.creators),
        ] {
            if let Some(bad) = list.iter().find(|p| crate::protocol::filter::parse_hash(p).is_none()) {
                return Err(format!("{key}: expected 64-digit lowercase hex pubkeys, found {bad:?}"));
            }
        }
        Ok(())
    }
}

impl DatabaseConfig {
    /// The node name: `node_id`; else, on PostgreSQL, the host name and a random suffix made anew at each call
    /// (call it once per start), so that several nodes on one host (or containers sharing a host name) never share
    /// a name without being told to; else (SQLite, one node) the host name.
    pub fn node(&self) -> String {
        if !self.node_id.is_empty() {
            return self.node_id.clone();
        }
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "pushrelay".into());
        if self.is_postgres() { format!("{host}-{:08x}", rand::random::<u32>()) } else { host }
    }

    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres://") || self.url.starts_with("postgresql://")
    }

    pub fn sqlite_path(&self) -> Result<PathBuf, String> {
        self.url
            .strip_prefix("sqlite://")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .ok_or_else(|| format!("database.url: expected sqlite://PATH or postgres://..., found {:?}", self.url))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str) -> Result<Config, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(&path)
    }

    #[test]
    fn empty_file_gives_defaults() {
        let config = load_str("").unwrap();
        assert_eq!(config.server.bind.port(), 7777);
        assert_eq!(config.limits.default_limit, 100);
    }

    /// `read_connections = 0`: SQLite one per core the process may run on, PostgreSQL a pool of 4; a number is
    /// taken as it is.
    #[test]
    fn read_connections_zero_means_the_cores_on_sqlite() {
        let auto = load_str("").unwrap().database;
        let cores = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!((auto.readers(true), auto.readers(false)), (cores, 4));
        let set = load_str("[database]\nread_connections = 3\n").unwrap().database;
        assert_eq!((set.readers(true), set.readers(false)), (3, 3));
    }

    #[test]
    fn wrong_type_names_file_key_and_expectation() {
        let err = load_str("[limits]\nmax_limit = \"lots\"\n").unwrap_err();
        assert!(err.contains("relay.toml"), "{err}");
        assert!(err.contains("max_limit"), "{err}");
        assert!(err.contains("expected"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn unknown_key_in_known_section_is_an_error() {
        let err = load_str("[limits]\nmax_limt = 5\n").unwrap_err();
        assert!(err.contains("max_limt"), "{err}");
    }

    #[test]
    fn unknown_sections_are_ignored() {
        load_str("[future]\nthing = 1\n").unwrap();
    }

    #[test]
    fn trusted_proxies_take_addresses_and_networks() {
        let config = load_str("[server]\ntrusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"fd00::/8\"]\n").unwrap();
        assert_eq!(config.server.trusted_proxy_networks().unwrap().len(), 3);
        let err = load_str("[server]\ntrusted_proxies = [\"10.0.0.0/33\"]\n").unwrap_err();
        assert!(err.contains("server.trusted_proxies") && err.contains("10.0.0.0/33") && !err.contains('\n'), "{err}");
        let err = load_str("[server]\ntrusted_proxies = [\"nginx\"]\n").unwrap_err();
        assert!(err.contains("\"nginx\""), "{err}");
        let err = load_str("[server]\nipv6_prefix_len = 129\n").unwrap_err();
        assert!(err.contains("server.ipv6_prefix_len"), "{err}");
    }

    #[test]
    fn node_ids_are_unique_on_postgres_unless_configured() {
        let mut database = DatabaseConfig::default();
        assert_eq!(database.node(), database.node(), "SQLite: one node, the host name");
        database.url = "postgres://localhost/relay".into();
        assert_ne!(database.node(), database.node(), "a new suffix at each start");
        database.node_id = "relay-a".into();
        assert_eq!(database.node(), "relay-a");
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load(Path::new("/nonexistent/pushrelay.toml")).unwrap_err();
        assert!(err.contains("/nonexistent/pushrelay.toml"), "{err}");
    }
}
