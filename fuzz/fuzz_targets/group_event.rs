//! Any event a stranger can send into a NIP-29 group, through the group rules (a post, a create, a join, leave or
//! moderation action by a stranger, a member, a moderator, an admin or the relay), the metadata events read back
//! into a group, and NIP-50's search words over its content. Nothing may panic. The event is built unsigned: these
//! steps run after verification and never look at the signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushrelay::groups::rules::{self, Context};
use pushrelay::groups::state::{ADMIN, Group, MODERATOR};
use pushrelay::protocol::{VerifiedEvent, search};
use serde_json::{Value, json};

const AUTHORS: [[u8; 32]; 5] = [[1; 32], [2; 32], [3; 32], [4; 32], [5; 32]];

fn group() -> Group {
    let mut group = Group::new("g");
    group.members.insert(AUTHORS[1], vec![]);
    group.members.insert(AUTHORS[2], vec![MODERATOR.into()]);
    group.members.insert(AUTHORS[3], vec![ADMIN.into()]);
    group.closed = true;
    group.invites.insert("code".into());
    group.saw(&[9; 32]);
    group
}

fuzz_target!(|data: &[u8]| {
    let Some(([kind_hi, kind_lo, who, flags], rest)) = data.split_first_chunk::<4>().map(|(h, r)| (*h, r)) else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    // The first line is the tags (JSON), the rest the content.
    let (tags, content) = text.split_once('\n').unwrap_or((text, ""));
    let Ok(tags @ Value::Array(_)) = serde_json::from_str::<Value>(tags) else { return };
    let author = AUTHORS[usize::from(who) % AUTHORS.len()];
    let event = json!({
        "id": "00".repeat(32),
        "pubkey": hex::encode(author),
        "created_at": 1_700_000_000u64,
        "kind": u16::from_be_bytes([kind_hi, kind_lo]),
        "tags": tags,
        "content": content,
        "sig": "00".repeat(64),
    });
    let Some(event) = VerifiedEvent::from_stored(&event.to_string()) else { return };
    let relay = AUTHORS[4];
    let creators = [AUTHORS[0]];
    let ctx = Context {
        relay: &relay,
        creators: if flags & 1 == 0 { &[] } else { &creators },
        created_by_author: usize::from(flags >> 4),
        max_groups_per_creator: 8,
        groups: usize::from(flags & 0x0e),
        max_groups: 10,
        max_members: 4,
        late_publication_secs: 3600,
        now: 1_700_000_100,
    };
    let mut group = group();
    let _ = rules::check_post(&group, &event, &ctx);
    let _ = rules::create(None, flags & 2 != 0, event.group().unwrap_or("g"), &event, &ctx);
    if let Ok(change) = rules::act(&group, &event, &ctx) {
        let _ = change.group.metadata_tags();
    }
    group.apply_metadata(&event);
    let _ = group.metadata_tags();
    let terms = search::terms(content);
    let _ = search::content_matches(&terms, content);
    let _ = search::fts5_query(&terms);
    let _ = search::indexed_text(event.kind(), content);
});
