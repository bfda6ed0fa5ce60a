//! Device ids as the app sends them, and where each form sends its notifications.

/// Longest device id accepted; real tokens and UnifiedPush URLs are far shorter.
const MAX_DEVICE_ID_LENGTH: usize = 4096;
/// APNs tokens are 32 bytes today (64 hex digits); Apple says they may grow.
const MIN_APNS_TOKEN_HEX: usize = 64;
const EMBEDDED_FCM_PREFIX: &str = "Embedded-FCM/FCM?";

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
}

impl Device {
    /// Parses a device id; `bundle_ids` are the iOS bundle ids that may prefix an APNs token. UnifiedPush
    /// endpoints must be `https://` unless `allow_plain_http` (test stand-ins).
    pub fn parse(device_id: &str, bundle_ids: &[String], allow_plain_http: bool) -> Result<Self, String> {
        let unknown = || format!("invalid: unrecognised deviceId {:?}", shorten(device_id));
        if device_id.len() > MAX_DEVICE_ID_LENGTH || device_id.chars().any(|c| c.is_whitespace() || c.is_control()) {
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
        if let Some(query) = device_id.strip_prefix(EMBEDDED_FCM_PREFIX) {
            let value = |key: &str| query.split('&').find_map(|pair| pair.strip_prefix(key)?.strip_prefix('='));
            return match (value("instance"), value("token")) {
                (Some(instance), Some(token)) if !token.is_empty() => {
                    Ok(Self::EmbeddedFcm { instance: instance.to_owned(), token: token.to_owned() })
                }
                _ => Err(unknown()),
            };
        }
        if device_id.starts_with("https://") || (allow_plain_http && device_id.starts_with("http://")) {
            let url = url::Url::parse(device_id).map_err(|_| unknown())?;
            return match url.host_str() {
                Some(host) if !host.is_empty() => Ok(Self::UnifiedPush { endpoint: device_id.to_owned() }),
                _ => Err(unknown()),
            };
        }
        // A bundle-like prefix before a long hex tail is an APNs token for a bundle id this relay does not serve.
        if looks_like_unconfigured_bundle(device_id) {
            return Err(format!(
                "invalid: deviceId {:?} is an APNs token for a bundle id this relay does not serve",
                shorten(device_id)
            ));
        }
        if device_id.len() >= 16 && device_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b)) {
            return Ok(Self::Fcm { token: device_id.to_owned() });
        }
        Err(unknown())
    }

    pub fn platform(&self) -> &'static str {
        match self {
            Self::Apns { .. } => "apns",
            Self::Fcm { .. } | Self::EmbeddedFcm { .. } => "fcm",
            Self::UnifiedPush { .. } => "unifiedpush",
        }
    }
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
        ] {
            assert!(Device::parse(&bad, &bundles(), false).is_err(), "{bad}");
        }
    }
}
