//! The push matcher's cost per event as the number of registrations grows (10k, 100k, 1M): it should stay flat,
//! since it is a few hash look-ups per tag. `cargo bench --bench matcher`.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use nostr::prelude::*;
use pushrelay::protocol::VerifiedEvent;
use pushrelay::push::audience::index::{Hellthreads, Registration, RegistrationIndex};
use pushrelay::push::audience::values::TagValue;
use pushrelay::push::device::Device;

/// The n-th of `size` registrations; every group has 100 members whatever the size, so that the work an event
/// causes is the same and only the index size varies.
fn registration(n: u32, size: u32) -> Registration {
    let mut pubkey = [0x5au8; 32];
    pubkey[..4].copy_from_slice(&n.to_le_bytes());
    let token = hex::encode(pubkey);
    let device = Device::Apns { topic: None, token: token.clone() };
    Registration {
        kinds: [4, 44, 1059, 42, 9735, 9, 10, 1, 6, 7].into(),
        p_tags: [pubkey].into(),
        e_tags: [TagValue::new(&format!("group-{}", n % (size / 100)))].into(),
        ..Registration::new(pubkey, &token, device, 0)
    }
}

fn event(tags: &[&[&str]]) -> VerifiedEvent {
    let keys = Keys::generate();
    let builder =
        EventBuilder::new(Kind::from(4), "x").tags(tags.iter().map(|t| Tag::parse(t.iter().copied()).unwrap()));
    VerifiedEvent::new(builder.finalize(&keys).unwrap())
}

fn matcher(c: &mut Criterion) {
    let mut group = c.benchmark_group("matcher");
    for size in [10_000u32, 100_000, 1_000_000] {
        let mut index = RegistrationIndex::default();
        for n in 0..size {
            index.insert(registration(n, size));
        }
        let target = hex::encode(registration(size / 2, size).pubkey);
        let hit = event(&[&["p", &target]]);
        let stranger = hex::encode([7u8; 32]);
        let miss = event(&[&["p", &stranger], &["e", "nothing"], &["t", "nostr"]]);
        let group_message = event(&[&["h", "group-7"]]);
        group.bench_with_input(BenchmarkId::new("dm_to_a_registered_user", size), &hit, |b, e| {
            b.iter(|| index.matching(e, 0, 180, Hellthreads { max_mentions: 10, for_everyone: false }))
        });
        group.bench_with_input(BenchmarkId::new("event_matching_no_one", size), &miss, |b, e| {
            b.iter(|| index.matching(e, 0, 180, Hellthreads { max_mentions: 10, for_everyone: false }))
        });
        group.bench_with_input(BenchmarkId::new("group_message", size), &group_message, |b, e| {
            b.iter(|| index.matching(e, 0, 180, Hellthreads { max_mentions: 10, for_everyone: false }))
        });
    }
    group.finish();
}

criterion_group!(benches, matcher);
criterion_main!(benches);
