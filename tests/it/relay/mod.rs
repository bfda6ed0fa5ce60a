//! The relay as any Nostr client meets it: NIP-01 and the NIPs it adds, search, sync, groups.

mod completeness;
mod differential;
mod groups;
mod nip01;
mod search;
mod sync;
