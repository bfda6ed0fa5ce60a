//! pushrelay: a Nostr relay with push notifications built in. See ARCHITECTURE.md for the map of modules.

pub mod activity;
pub mod admin;
pub mod app;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod groups;
pub mod hooks;
pub mod http;
pub mod lifecycle;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod push;
pub mod relay;
pub mod report;
pub mod store;
pub mod upstream;

pub use app::RelayHandle;
pub use config::Config;
