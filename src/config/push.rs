//! The `[push]` section and its services' subsections (`[push.apns]`, `[push.fcm]`, `[push.unifiedpush]`,
//! `[push.webpush]`), and Marmot's (`[push.marmot]`).

use std::path::PathBuf;

use serde::Deserialize;

/// The push side: the relay's push identity, registration limits and presence.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Consume kind 22456 registrations addressed to the push pubkey.
    pub enabled: bool,
    /// The relay's push secret key (hex), created with mode 0600 on first start if missing.
    pub secret_key_file: PathBuf,
    /// A pubkey is offline once this many seconds pass without a heartbeat. Above YakiHonne's three-minute beat
    /// (0xchat beats every minute), so that a user in the app is not taken for offline just before each beat.
    pub heartbeat_timeout_secs: u64,
    /// A registration event whose created_at is further than this from now is refused as a possible replay.
    pub registration_window_secs: u64,
    /// Devices one pubkey may register.
    pub max_devices_per_pubkey: usize,
    /// Pubkeys that may register one device id.
    pub max_pubkeys_per_device: usize,
    /// Entries per registration field.
    pub max_kinds: usize,
    pub max_p_tags: usize,
    pub max_e_tags: usize,
    pub max_authors: usize,
    pub max_relays: usize,
    /// Devices sent to at once: a round of claimed jobs (256) goes out together, as HTTP/2 streams on the
    /// services' connections, so that a fan-out is not paced by the services' round trips.
    pub workers: usize,
    /// First retry of a failed push after this many milliseconds, doubling (with jitter) up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// A push not delivered within this many seconds of its event is dropped (and counted).
    pub max_job_age_secs: u64,
    /// Pushes waiting in the queue (a service down for long, a flood): beyond this many, the oldest are dropped
    /// (counted as `reason="queue_full"` and logged). 0: no limit.
    pub max_queued_jobs: u64,
    /// Batches of pushes from ephemeral and watched events waiting to be queued; beyond it, new ones are dropped
    /// (counted as `reason="intake_full"` and logged), so that a flood of such events holds bounded memory.
    pub max_pending_intake: usize,
    /// An event whose `created_at` is older than this many seconds is not pushed. Keep it above two days: gift
    /// wraps (1059) are dated up to two days back on purpose.
    pub max_event_age_secs: u64,
    /// An event that `p`-tags more than this many pubkeys is a hellthread: it notifies no one through their `p`
    /// tag who asked to be spared (YakiHonne's `enableMaxMentions`), or anyone with `suppress_hellthreads`.
    pub max_mentions: usize,
    /// Spare everyone hellthreads (they still notify through the groups a registration watches).
    pub suppress_hellthreads: bool,
    /// NIP-9a: kind 30390 subscriptions one pubkey may hold (replacing one, same `d`, does not count).
    pub max_subscriptions_per_pubkey: usize,
    /// NIP-9a: `filter` tags per subscription, and `ignore` tags likewise.
    pub max_subscription_filters: usize,
    /// NIP-9a: characters in a callback URL.
    pub max_callback_length: usize,
    /// NIP-9a: bytes of one `filter` or `ignore` tag's JSON (its `search` also keeps `[limits] max_search_terms`
    /// and `max_search_length`).
    pub max_subscription_filter_length: usize,
    /// NIP-9a: subscriptions this relay holds at most (all pubkeys together); past it, new ones are refused.
    pub max_subscriptions: usize,
    /// NIP-9a: subscriptions with a filter naming no ids, authors or tag values (only kinds or words) this relay
    /// holds at most: each is checked against every event of its kinds, inside the writer's commit.
    pub max_broad_subscriptions: usize,
    /// NIP-9a: callbacks on one host that one event may make the relay POST to; the subscriptions that asked for
    /// the event by its id, author or a tag go first, then those that asked by a word or its kind.
    pub max_callbacks_per_host: usize,
    /// Pushes one device may get at once; beyond it, notifications are merged ("3 new messages").
    pub device_burst: u32,
    /// One more push per device is allowed every this many seconds.
    pub device_refill_secs: u64,
    /// The devices page's test button: one test notification per device in each this many seconds; more is
    /// answered 429.
    pub test_interval_secs: u64,
    /// NIP-97: devices registered through `POST /register` this relay keeps at most (all pubkeys together);
    /// past it, new ones are refused.
    pub nip97_max_devices: usize,
    /// NIP-97: characters in a `challenge` (`google:`, `apple:` or `unifiedpush:` and the token or endpoint).
    pub nip97_max_challenge_length: usize,
    /// NIP-97: a device not registered again (apps do at every start) within this many days is forgotten.
    pub nip97_device_ttl_days: u64,
    /// NIP-97: a registration must name this relay (`[server] public_url`) in one of its `relay` tags. A NIP-42 AUTH
    /// event has NIP-97's kind and tags, so without this a client's AUTH to a hostile relay, whose challenge was
    /// `unifiedpush:<URL>`, could be replayed here as a registration in its name.
    pub nip97_require_own_relay: bool,
    pub apns: ApnsConfig,
    pub fcm: FcmConfig,
    pub unifiedpush: UnifiedPushConfig,
    pub webpush: WebPushConfig,
    pub marmot: MarmotConfig,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            secret_key_file: PathBuf::from("data/push.key"),
            heartbeat_timeout_secs: 240,
            registration_window_secs: 600,
            max_devices_per_pubkey: 10,
            max_pubkeys_per_device: 10,
            max_kinds: 64,
            max_p_tags: 64,
            max_e_tags: 1000,
            max_authors: 5000,
            max_relays: 16,
            workers: 256,
            retry_initial_ms: 1000,
            retry_max_ms: 15 * 60 * 1000,
            max_job_age_secs: 24 * 3600,
            max_queued_jobs: 1_000_000,
            max_pending_intake: 10_000,
            max_event_age_secs: 7 * 24 * 3600,
            max_mentions: 10,
            suppress_hellthreads: false,
            max_subscriptions_per_pubkey: 10,
            max_subscription_filters: 16,
            max_callback_length: 1024,
            max_subscription_filter_length: 2048,
            max_subscriptions: 10_000,
            max_broad_subscriptions: 100,
            max_callbacks_per_host: 20,
            device_burst: 5,
            device_refill_secs: 12,
            test_interval_secs: 30,
            nip97_max_devices: 20_000,
            nip97_max_challenge_length: 512,
            nip97_device_ttl_days: 30,
            nip97_require_own_relay: true,
            apns: ApnsConfig::default(),
            fcm: FcmConfig::default(),
            unifiedpush: UnifiedPushConfig::default(),
            webpush: WebPushConfig::default(),
            marmot: MarmotConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApnsConfig {
    /// `https://api.push.apple.com` (sandbox: `https://api.sandbox.push.apple.com`); an `http://` endpoint is
    /// spoken to as HTTP/2 without TLS (test stand-ins).
    pub endpoint: String,
    /// Apple's PKCS#8 P-256 signing key (`AuthKey_XXXXXXXXXX.p8`); empty disables APNs.
    pub key_file: Option<PathBuf>,
    pub key_id: String,
    pub team_id: String,
    /// The default `apns-topic`, for device ids that are a bare token.
    pub topic: String,
    /// iOS bundle ids that may prefix an APNs token in a device id; the one found becomes the `apns-topic`.
    pub bundle_ids: Vec<String>,
}

impl Default for ApnsConfig {
    fn default() -> Self {
        Self {
            endpoint: "https://api.push.apple.com".into(),
            key_file: None,
            key_id: String::new(),
            team_id: String::new(),
            topic: String::new(),
            bundle_ids: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FcmConfig {
    pub endpoint: String,
    /// The Firebase service-account JSON (its `token_uri` is where access tokens come from); empty disables FCM.
    pub service_account_file: Option<PathBuf>,
}

impl Default for FcmConfig {
    fn default() -> Self {
        Self { endpoint: "https://fcm.googleapis.com".into(), service_account_file: None }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UnifiedPushConfig {
    /// Accept endpoints on loopback, private and link-local addresses, and plain `http://` ones (tests only).
    pub allow_private_addresses: bool,
    /// Seconds to wait for an endpoint to answer.
    pub timeout_secs: u64,
}

impl Default for UnifiedPushConfig {
    fn default() -> Self {
        Self { allow_private_addresses: false, timeout_secs: 10 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebPushConfig {
    /// The VAPID key (P-256, base64url of the 32-byte secret), created with mode 0600 on first start if missing.
    pub vapid_key_file: PathBuf,
    /// The operator's contact, sent as the VAPID `sub` claim: a `mailto:` or `https:` URL. Empty: the `https://`
    /// form of `[server] public_url`.
    pub subject: String,
    /// Seconds to wait for a push service to answer.
    pub timeout_secs: u64,
    /// Where a click on a browser notification from the relay's `/notifications` page goes: `{id}` is replaced with
    /// the event id (hex) and `{nevent}` with its NIP-19 `nevent`.
    pub web_client_url: String,
}

impl Default for WebPushConfig {
    fn default() -> Self {
        Self {
            vapid_key_file: PathBuf::from("data/vapid.key"),
            subject: String::new(),
            timeout_secs: 10,
            web_client_url: "https://njump.me/{nevent}".into(),
        }
    }
}

/// Marmot push (marmot-push-v1; README, "Marmot apps (White Noise)"): gift-wrapped triggers to the push key wake the
/// devices whose encrypted tokens they carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MarmotConfig {
    pub enabled: bool,
    /// Other relays the push key's inbox list (kind 10050) names beside this one; each is watched for triggers.
    pub inbox_relays: Vec<String>,
    /// Characters of content a trigger's gift wrap may carry, whatever `[limits] max_content_length` says: a full
    /// 32-token trigger is about 109,000. The whole message must still fit `[limits] max_message_length`.
    pub max_trigger_content_length: usize,
    /// Triggers opened per minute, all senders together, counted before any decryption.
    pub unwraps_per_minute: u32,
    /// Triggers being opened or sent at once; past it, new ones are dropped.
    pub max_in_flight: usize,
    /// Wakes one device token gets per minute.
    pub wakes_per_token_per_minute: u32,
    /// A trigger whose content was acted on within this many seconds wakes nobody again.
    pub replay_window_secs: u64,
    /// Content hashes remembered in memory for that window, at most.
    pub max_replay_hashes: usize,
    /// Tries of one wake (its token is held in memory meanwhile, never queued durably).
    pub max_attempts: u32,
    /// `apns-topic` of the wakes: the Marmot app's bundle id. Empty: `[push.apns] topic`.
    pub apns_topic: String,
    /// Empty: a silent wake (APNs background, FCM data-only) the app answers by fetching its messages. Otherwise a
    /// visible notification with this text, for apps that are not woken silently.
    pub alert: String,
}

impl Default for MarmotConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            inbox_relays: Vec::new(),
            max_trigger_content_length: 120_000,
            unwraps_per_minute: 6_000,
            max_in_flight: 64,
            wakes_per_token_per_minute: 240,
            replay_window_secs: 300,
            max_replay_hashes: 100_000,
            max_attempts: 3,
            apns_topic: String::new(),
            alert: String::new(),
        }
    }
}
