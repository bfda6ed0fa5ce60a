//! Device ids as the app sends them, and where each form sends its notifications.

use crate::protocol::Refusal;

/// Longest device id accepted; real tokens and UnifiedPush URLs are far shorter.
const MAX_DEVICE_ID_LENGTH: usize = 4096;
/// APNs tokens are 32 bytes today (64 hex digits); Apple says they may grow.
const MIN_APNS_TOKEN_HEX: usize = 64;
const EMBEDDED_FCM_PREFIX: &str = "Embedded-FCM/FCM?";
/// A browser's Web Push subscription: this prefix, then the base64url of its `PushSubscription` JSON.
const WEB_PUSH_PREFIX: &str = "webpush:";
/// NIP-97 devices are stored under this prefix followed by their `challenge` (`google:<FCM token>`,
/// `apple:<hex APNs token>`, `unifiedpush:<endpoint>`): a form of their own, which no 0xchat device id may take.
pub const NIP97_PREFIX: &str = "nip97:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Device {
    /// iOS: `topic` is the bundle id that prefixed the token, or None for the configured default topic.
    Apns { topic: Option<String>, token: String },
    /// A bare FCM registration token: sent with `notification` and `data`.
    Fcm { token: String },
    /// FCM inside UnifiedPush (`Embedded-FCM/FCM?v2&instance=..&token=..`): a data-only message.
    EmbeddedFcm { instance: String, token: String },
    /// A UnifiedPush distributor's `https://` endpoint: the body is POSTed to it.
    UnifiedPush { endpoint: String },
    /// A browser (RFC 8030): the push service's endpoint and the subscription's keys (base64url), to which each
    /// payload is encrypted (RFC 8291).
    WebPush { endpoint: String, p256dh: String, auth: String },
}

impl Device {
    /// Parses a device id; `bundle_ids` are the iOS bundle ids that may prefix an APNs token. UnifiedPush
    /// endpoints must be `https://` unless `allow_plain_http` (test stand-ins).
    pub fn parse(device_id: &str, bundle_ids: &[String], allow_plain_http: bool) -> Result<Self, Refusal> {
        let unknown = || Refusal::invalid(format!("unrecognised deviceId {:?}", shorten(device_id)));
        if !is_plain(device_id) || device_id.starts_with(NIP97_PREFIX) {
            return Err(unknown());
        }
        if is_hex_token(device_id) {
            return Ok(Self::Apns { topic: None, token: device_id.to_ascii_lowercase() });
        }
        for bundle_id in bundle_ids {
            if let Some(token) = device_id.strip_prefix(bundle_id.as_str()).filter(|t| is_hex_token(t)) {
                return Ok(Self::Apns { topic: Some(bundle_id.clone()), token: token.to_ascii_lowercase() });
            }
        }
        if let Some(encoded) = device_id.strip_prefix(WEB_PUSH_PREFIX) {
            return web_push_subscription(encoded, allow_plain_http).map_err(|problem| {
                Refusal::invalid(format!(
                    "deviceId {:?} is not a usable Web Push subscription: {problem}",
                    shorten(device_id)
                ))
            });
        }
        if let Some(query) = device_id.strip_prefix(EMBEDDED_FCM_PREFIX) {
            let value = |key: &str| query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='));
            return match (value("instance"), value("token")) {
                (Some(instance), Some(token)) if !token.is_empty() => {
                    Ok(Self::EmbeddedFcm { instance: instance.to_owned(), token: token.to_owned() })
                }
                _ => Err(unknown()),
            };
        }
        if device_id.starts_with("https://") || device_id.starts_with("http://") {
            return match is_endpoint(device_id, allow_plain_http) {
                true => Ok(Self::UnifiedPush { endpoint: device_id.to_owned() }),
                false => Err(unknown()),
            };
        }
        // A bundle-like prefix before a long hex tail is an APNs token for a bundle id this relay does not serve.
        if looks_like_unconfigured_bundle(device_id) {
            return Err(Refusal::invalid(format!(
                "deviceId {:?} is an APNs token for a bundle id this relay does not serve",
                shorten(device_id)
            )));
        }
        if is_fcm_token(device_id) {
            return Ok(Self::Fcm { token: device_id.to_owned() });
        }
        Err(unknown())
    }

    /// A stored device id of either protocol: a NIP-97 challenge under `NIP97_PREFIX`, or a 0xchat device id.
    pub fn parse_stored(device_id: &str, bundle_ids: &[String], allow_plain_http: bool) -> Result<Self, Refusal> {
        match device_id.strip_prefix(NIP97_PREFIX) {
            Some(challenge) => Self::parse_challenge(challenge, allow_plain_http),
            None => Self::parse(device_id, bundle_ids, allow_plain_http),
        }
    }

    /// A NIP-97 `challenge` tag's value: `google:<FCM token>`, `apple:<hex APNs token>` (the default topic) or
    /// `unifiedpush:<endpoint>`.
    pub fn parse_challenge(challenge: &str, allow_plain_http: bool) -> Result<Self, Refusal> {
        let refused =
            || Refusal::invalid("challenge must be google:<FCM token>, apple:<hex APNs token> or unifiedpush:<URL>");
        let (system, token) = challenge.split_once(':').filter(|(_, token)| is_plain(token)).ok_or_else(refused)?;
        match system {
            "google" if is_fcm_token(token) => Ok(Self::Fcm { token: token.to_owned() }),
            "apple" if is_hex_token(token) => Ok(Self::Apns { topic: None, token: token.to_ascii_lowercase() }),
            "unifiedpush" if is_endpoint(token, allow_plain_http) => {
                Ok(Self::UnifiedPush { endpoint: token.to_owned() })
            }
            _ => Err(refused()),
        }
    }

    /// Where notifications go, whichever form or protocol named the device: registrations with one address are
    /// one device to push (an event notifies it once).
    pub fn address(&self) -> String {
        let prefix = address_prefix(self.platform());
        match self {
            Self::Apns { token, .. } | Self::Fcm { token } | Self::EmbeddedFcm { token, .. } => {
                format!("{prefix}:{token}")
            }
            Self::UnifiedPush { endpoint } | Self::WebPush { endpoint, .. } => format!("{prefix}:{endpoint}"),
        }
    }

    pub fn platform(&self) -> &'static str {
        match self {
            Self::Apns { .. } => "apns",
            Self::Fcm { .. } | Self::EmbeddedFcm { .. } => "fcm",
            Self::UnifiedPush { .. } => "unifiedpush",
            Self::WebPush { .. } => "webpush",
        }
    }
}

/// What an address starts with (before a `:`), by service (`Device::platform`).
pub fn address_prefix(platform: &str) -> &'static str {
    match platform {
        "apns" => "apns",
        "fcm" => "fcm",
        "unifiedpush" => "up",
        _ => "webpush",
    }
}

/// An `https://` URL with a host (or `http://` when `allow_plain_http`, for test stand-ins).
fn is_endpoint(text: &str, allow_plain_http: bool) -> bool {
    let Ok(url) = url::Url::parse(text) else { return false };
    let scheme_ok = url.scheme() == "https" || (allow_plain_http && url.scheme() == "http");
    scheme_ok && url.host_str().is_some_and(|host| !host.is_empty())
}

/// The subscription JSON a browser gives (`PushSubscription.toJSON()`), checked enough that encrypting to it works.
fn web_push_subscription(encoded: &str, allow_plain_http: bool) -> Result<Device, &'static str> {
    #[derive(serde::Deserialize)]
    struct Subscription {
        endpoint: String,
        keys: Keys,
    }
    #[derive(serde::Deserialize)]
    struct Keys {
        p256dh: String,
        auth: String,
    }
    let json = base64url(encoded).ok_or("not base64url")?;
    let subscription: Subscription =
        serde_json::from_slice(&json).map_err(|_| "expected {\"endpoint\", \"keys\": {\"p256dh\", \"auth\"}}")?;
    if !is_endpoint(&subscription.endpoint, allow_plain_http) {
        return Err("endpoint must be an https:// URL");
    }
    // An uncompressed P-256 point, and a 16-byte authentication secret (RFC 8291).
    if !base64url(&subscription.keys.p256dh).is_some_and(|key| key.len() == 65 && key[0] == 4) {
        return Err("keys.p256dh must be an uncompressed P-256 public key");
    }
    if base64url(&subscription.keys.auth).is_none_or(|auth| auth.len() != 16) {
        return Err("keys.auth must be 16 bytes");
    }
    Ok(Device::WebPush {
        endpoint: subscription.endpoint,
        p256dh: subscription.keys.p256dh.trim_end_matches('=').to_owned(),
        auth: subscription.keys.auth.trim_end_matches('=').to_owned(),
    })
}

/// Browsers write base64url without padding; some libraries add it.
fn base64url(text: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

/// Not over-long, no white space or control characters.
fn is_plain(text: &str) -> bool {
    text.len() <= MAX_DEVICE_ID_LENGTH && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_fcm_token(text: &str) -> bool {
    text.len() >= 16 && text.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
}

/// A NIP-97 device's stored id.
pub fn is_nip97(device_id: &str) -> bool {
    device_id.starts_with(NIP97_PREFIX)
}

fn is_hex_token(text: &str) -> bool {
    text.len() >= MIN_APNS_TOKEN_HEX && text.bytes().all(|b| b.is_ascii_hexdigit())
}

fn looks_like_unconfigured_bundle(device_id: &str) -> bool {
    let hex_tail = device_id.bytes().rev().take_while(u8::is_ascii_hexdigit).count();
    let prefix = &device_id[..device_id.len() - hex_tail.min(device_id.len())];
    hex_tail >= MIN_APNS_TOKEN_HEX && prefix.contains('.') && !prefix.contains(':')
}

/// Device ids are long; error messages show their start only.
pub fn shorten(device_id: &str) -> String {
    let mut short: String = device_id.chars().take(24).collect();
    if short.len() < device_id.len() {
        short.push('…');
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundles() -> Vec<String> {
        vec!["com.example.app".to_owned()]
    }

    #[test]
    fn recognises_every_form() {
        let token = "a1b2".repeat(16);
        assert_eq!(
            Device::parse(&format!("com.example.app{token}"), &bundles(), false),
            Ok(Device::Apns { topic: Some("com.example.app".into()), token: token.clone() })
        );
        assert_eq!(Device::parse(&token, &bundles(), false), Ok(Device::Apns { topic: None, token: token.clone() }));
        assert_eq!(
            Device::parse("Embedded-FCM/FCM?v2&instance=default&token=abc:DEF_123", &bundles(), false),
            Ok(Device::EmbeddedFcm { instance: "default".into(), token: "abc:DEF_123".into() })
        );
        assert_eq!(
            Device::parse("https://up.example.org/UP?token=xyz", &bundles(), false),
            Ok(Device::UnifiedPush { endpoint: "https://up.example.org/UP?token=xyz".into() })
        );
        let fcm = "dXk3:APA91bH-some_FCM.token";
        assert_eq!(Device::parse(fcm, &bundles(), false), Ok(Device::Fcm { token: fcm.into() }));
        let (p256dh, auth) = (web_key(&[4; 65]), web_key(&[7; 16]));
        let subscription =
            serde_json::json!({"endpoint": "https://push.example/x", "keys": {"p256dh": p256dh, "auth": auth}});
        assert_eq!(
            Device::parse(&format!("webpush:{}", web_key(subscription.to_string().as_bytes())), &bundles(), false),
            Ok(Device::WebPush { endpoint: "https://push.example/x".into(), p256dh, auth })
        );
    }

    #[test]
    fn nip97_challenges_and_one_address_per_device() {
        let token = "dXk3:APA91bH-some_FCM.token";
        let google = Device::parse_challenge(&format!("google:{token}"), false).unwrap();
        assert_eq!(google.address(), Device::parse(token, &bundles(), false).unwrap().address());
        let stored = Device::parse_stored(&format!("{NIP97_PREFIX}google:{token}"), &bundles(), false).unwrap();
        assert_eq!(stored, google);
        let apple = Device::parse_challenge(&format!("apple:{}", "AB".repeat(32)), false).unwrap();
        assert_eq!(apple, Device::Apns { topic: None, token: "ab".repeat(32) });
        let up = Device::parse_challenge("unifiedpush:https://up.example/x", false).unwrap();
        assert_eq!(up.address(), "up:https://up.example/x");
        for bad in ["fax:1", "google:short", "apple:xyz", "unifiedpush:http://up.example/x", "google", ""] {
            assert!(
                Device::parse_challenge(bad, false).unwrap_err().to_string().starts_with("invalid: challenge"),
                "{bad}"
            );
        }
    }

    fn web_key(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn refuses_unusable_web_push_subscriptions() {
        let subscription = |endpoint: &str, p256dh: &[u8], auth: &[u8]| {
            let json =
                serde_json::json!({"endpoint": endpoint, "keys": {"p256dh": web_key(p256dh), "auth": web_key(auth)}});
            format!("webpush:{}", web_key(json.to_string().as_bytes()))
        };
        for bad in [
            "webpush:not*base64".to_owned(),
            format!("webpush:{}", web_key(b"{}")),
            subscription("http://push.example/x", &[4; 65], &[7; 16]),
            subscription("https://push.example/x", &[4; 33], &[7; 16]),
            subscription("https://push.example/x", &[4; 65], &[7; 8]),
        ] {
            let refused = Device::parse(&bad, &bundles(), false).unwrap_err().to_string();
            assert!(refused.starts_with("invalid: deviceId"), "{refused}");
        }
    }

    #[test]
    fn refuses_unknown_forms() {
        let token = "ab".repeat(32);
        for bad in [
            String::new(),
            "short".into(),
            "has space in it, quite long".into(),
            "http://insecure.example/up".into(),
            "Embedded-FCM/FCM?v2&instance=x".into(),
            format!("org.other.app{token}"),
            "x".repeat(5000),
            "nip97:google:abcdefghijklmnopqrstuvwxyz".into(),
        ] {
            assert!(Device::parse(&bad, &bundles(), false).is_err(), "{bad}");
        }
    }
}
