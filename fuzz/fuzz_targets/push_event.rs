//! Any event a stranger can get stored (tags, content, zap receipts, mute lists) through what push computes for it
//! on the write path: the registration index's matching, mute lists (the event as a list, and against one), the
//! summary and notification text, and a zap's zapper and amount. Nothing may panic. The event is built unsigned:
//! these steps run after verification and never look at the signature.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use pushrelay::protocol::VerifiedEvent;
use pushrelay::push::audience::index::{Hellthreads, Registration, RegistrationIndex};
use pushrelay::push::audience::mutes::{MuteList, MuteLists};
use pushrelay::push::audience::values::TagValue;
use pushrelay::push::device::Device;
use pushrelay::push::text::{Summary, body, profile_name};
use pushrelay::push::zap;
use serde_json::{Value, json};

const USER: [u8; 32] = [7; 32];

static INDEX: LazyLock<RegistrationIndex> = LazyLock::new(|| {
    let mut index = RegistrationIndex::default();
    let device_id = "ab".repeat(32);
    let device = Device::parse(&device_id, &[], false).unwrap();
    index.insert(Registration {
        kinds: [1, 4, 7, 9, 1059, 9735, 10000].into(),
        p_tags: [USER].into(),
        e_tags: [TagValue::new("group-1"), TagValue::new(&"ee".repeat(32))].into(),
        limit_mentions: true,
        ..Registration::new(USER, &device_id, device, 0)
    });
    index
});

fuzz_target!(|data: &[u8]| {
    let Some((kind, rest)) = data.split_first_chunk::<2>() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    // The first line is the tags (JSON), the rest the content.
    let (tags, content) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(tags @ Value::Array(_)) = serde_json::from_str::<Value>(tags) else { return };
    let event = json!({
        "id": "00".repeat(32),
        "pubkey": "02".repeat(32),
        "created_at": 1_700_000_000u64,
        "kind": u16::from_be_bytes(*kind),
        "tags": tags,
        "content": content,
        "sig": "00".repeat(64),
    });
    let Some(event) = VerifiedEvent::from_stored(&event.to_string()) else { return };
    let _ = INDEX.matching(&event, 1_700_000_000, 180, Hellthreads { max_mentions: 10, for_everyone: false });
    let mutes = MuteLists::default();
    mutes.offer(&event);
    let _ = mutes.silences(event.pubkey(), &event);
    let _ = MuteList::from_event(&event).silences(&event);
    let summary = Summary::of(&event);
    let _ = body(summary.actor("someone"), event.kind(), &summary);
    let _ = body(None, event.kind(), &summary);
    let _ = profile_name(&event.event.content);
    let _ = (zap::zapper(&event), zap::sats(&event));
});
