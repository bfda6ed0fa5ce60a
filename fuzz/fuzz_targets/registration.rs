//! A registration's content: the first byte chooses whether the rest is ciphertext (decrypted with the relay's
//! push key, as a stranger's event would be) or already decrypted text (parsed against the default limits).
//! Nothing may panic.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use nostr::prelude::*;
use pushrelay::config::PushConfig;
use pushrelay::push::intake::content::{decrypt, parse};

static PUSH_KEY: LazyLock<Keys> =
    LazyLock::new(|| Keys::parse("7f3b02c8b5d1a3e4f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d").unwrap());
static USER: LazyLock<Keys> =
    LazyLock::new(|| Keys::parse("1f2e3d4c5b6a79880716253443526170f1e2d3c4b5a69788f9e0d1c2b3a49586").unwrap());

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let plaintext = if mode % 2 == 0 {
        let event = EventBuilder::new(Kind::Custom(22456), text)
            .tag(Tag::public_key(PUSH_KEY.public_key()))
            .finalize(&*USER)
            .unwrap();
        match decrypt(&event, PUSH_KEY.secret_key()) {
            Ok(plaintext) => plaintext,
            Err(_) => return,
        }
    } else {
        text.to_owned()
    };
    let _ = parse(&plaintext, &PushConfig::default(), |_| Ok(()));
});
