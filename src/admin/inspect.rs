//! `pushrelay stats` and `pushrelay devices`: what the database holds, for an operator at a terminal. Device tokens
//! are secrets of their users' phones, so they are shown shortened.

use std::fmt::Write;
use std::sync::Arc;

use crate::clock::Clock;
use crate::config::Config;
use crate::protocol::Filter;
use crate::protocol::filter::parse_hash;
use crate::push::audience::registry::Registry;
use crate::push::device::shorten;
use crate::store::{Store, Visibility};

pub async fn stats(config: &Config, store: Arc<dyn Store>) -> Result<String, String> {
    let events = store.count(&[Filter::default()], Visibility::default(), u64::MAX).await.map_err(|e| e.to_string())?;
    let pending = store.pending().await.map_err(|e| e.to_string())?;
    let registry = open_registry(config, store).await?;
    let (devices, online, offline) = registry.census(Clock::system().db_secs());
    let mut text = String::new();
    let _ = writeln!(text, "events stored        {events}");
    let _ = writeln!(text, "pushes waiting       {pending}");
    let _ = writeln!(text, "devices registered   {devices}");
    let _ = writeln!(text, "pubkeys online       {online}");
    let _ = writeln!(text, "pubkeys offline      {offline}");
    Ok(text)
}

/// Device counts per platform; with `pubkey` (hex or npub), that pubkey's registrations.
pub async fn devices(config: &Config, store: Arc<dyn Store>, pubkey: Option<&str>) -> Result<String, String> {
    let registry = open_registry(config, store).await?;
    let mut text = String::new();
    match pubkey {
        None => {
            for (platform, count) in registry.platforms() {
                let _ = writeln!(text, "{platform:<12} {count}");
            }
            if text.is_empty() {
                text.push_str("no devices registered\n");
            }
        }
        Some(pubkey) => {
            let key = parse_pubkey(pubkey)?;
            let online = registry.is_online(&key, Clock::system().db_secs());
            let _ = writeln!(text, "{} ({})", hex::encode(key), if online { "online" } else { "offline" });
            for r in registry.registrations_of(&key) {
                let _ = writeln!(
                    text,
                    "  {:<11} {}  kinds {:?}  #p {}  #e {}  relays {}",
                    r.platform,
                    shorten(&r.device_id),
                    r.kinds,
                    r.p_tags.len(),
                    r.e_tags.len(),
                    r.relays.join(" ")
                );
            }
        }
    }
    Ok(text)
}

async fn open_registry(config: &Config, store: Arc<dyn Store>) -> Result<Registry, String> {
    Registry::open(store, config.push.clone()).await.map_err(|e| format!("cannot read the registrations: {e}"))
}

fn parse_pubkey(text: &str) -> Result<[u8; 32], String> {
    if let Some(key) = parse_hash(text) {
        return Ok(key);
    }
    nostr::key::PublicKey::parse(text)
        .map(|key| key.to_bytes())
        .map_err(|_| format!("not a pubkey (hex or npub): {text}"))
}
