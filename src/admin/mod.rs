//! Commands an operator runs beside (or instead of) the relay, on the same database: stats, devices, export,
//! import, vacuum.
//!
//! They open the store directly and never go through the relay's write path, so nothing they write is pushed or
//! fanned out to live subscribers: bulk intake is not news.

pub mod export;
pub mod import;
pub mod inspect;
