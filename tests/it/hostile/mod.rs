//! What strangers send to stop, blind or eavesdrop the relay (RELIABILITY.md, "Abuse" and "Attacks tried").

mod abuse;
mod attacks;
mod bad_input;
