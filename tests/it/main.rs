//! The integration tests, in one binary: the crate is linked once instead of once per file, and the helpers in
//! `common` are compiled once. They talk to the relay over real WebSockets, to real SQLite files, to a real PostgreSQL
//! server (`TEST_DATABASE_URL`) and to local stand-ins that speak the push services' HTTP APIs. One folder per area;
//! `scripts/test -E 'test(/^push::nip9a::/)'` runs one file's tests.

mod common;
mod hostile;
mod ops;
mod push;
mod relay;
