//! Pre-signed events: generated and signed (on every core) before any clock starts.

use nostr::prelude::*;

/// `count` kind 1 notes by `authors` keys (round robin, so that per-author rate limits are not what is measured),
/// each `p`-tagging one of the authors and `t`-tagging one of ten hashtags, over the last `count` seconds.
pub(crate) fn notes(count: usize, authors: &[Keys]) -> Vec<Event> {
    let now = Timestamp::now().as_secs();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = count.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    (start..(start + chunk).min(count))
                        .map(|i| {
                            let author = &authors[i % authors.len()];
                            let tagged = authors[(i * 7 + 3) % authors.len()].public_key();
                            let tags = [Tag::public_key(tagged), Tag::hashtag(format!("topic{}", i % 10))];
                            EventBuilder::new(Kind::TextNote, format!("benchmark note {i} {}", "x".repeat(i % 200)))
                                .tags(tags)
                                .custom_created_at(Timestamp::from_secs(now - (count - i) as u64))
                                .finalize(author)
                                .expect("signing works")
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("signing does not panic")).collect()
    })
}

pub(crate) fn keys(count: usize) -> Vec<Keys> {
    (0..count).map(|_| Keys::generate()).collect()
}
