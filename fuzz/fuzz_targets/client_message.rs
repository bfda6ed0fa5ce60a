//! Any text a client sends: parsed as a client message; an EVENT's event is then admitted (parse, limits, id and
//! signature) as the relay does. Nothing may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pushrelay::config::LimitsConfig;
use pushrelay::protocol::message::ClientMessage;
use pushrelay::relay::admission::admit;

fuzz_target!(|text: &str| {
    if let Ok(ClientMessage::Event(raw) | ClientMessage::Auth(raw)) = ClientMessage::parse(text) {
        let _ = admit(&raw, &LimitsConfig::default(), None, pushrelay::clock::Clock::system().secs());
    }
});
