//! Admission limits over time and per address: connections per IP, events per IP and per author, REQs per
//! connection. Built on governor's GCRA limiters; a limit of 0 turns that limiter off.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::LimitsConfig;
use crate::protocol::filter::Hash32;

/// Who a connection comes from, as the per-IP limits and the logs know it (`http::client_ip` decides).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddress {
    /// The client's own address: the socket's peer, or the address a trusted proxy named.
    pub ip: IpAddr,
    /// What every per-IP limit counts under: `ip`, or for IPv6 its network (`[server] ipv6_prefix_len`).
    pub key: IpAddr,
    /// The socket's peer (the proxy, when one named the client).
    pub peer: SocketAddr,
}

impl fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ip == self.peer.ip().to_canonical() {
            write!(f, "{}", self.peer)
        } else {
            write!(f, "{} via {}", self.ip, self.peer)
        }
    }
}

/// `per_minute` a minute, in bursts of up to as many.
fn quota(per_minute: u32) -> Option<Quota> {
    NonZeroU32::new(per_minute).map(Quota::per_minute)
}

pub struct RateLimits {
    per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// NIP-97 registrations per IP (`[limits] ip_registrations_per_hour`).
    registrations_per_ip: Option<DefaultKeyedRateLimiter<IpAddr>>,
    per_pubkey: Option<DefaultKeyedRateLimiter<Hash32>>,
    reqs: Option<Quota>,
}

impl RateLimits {
    pub fn new(limits: &LimitsConfig) -> Self {
        Self {
            per_ip: quota(limits.ip_events_per_minute).map(RateLimiter::keyed),
            registrations_per_ip: NonZeroU32::new(limits.ip_registrations_per_hour)
                .map(|per_hour| RateLimiter::keyed(Quota::per_hour(per_hour))),
            per_pubkey: quota(limits.pubkey_events_per_minute).map(RateLimiter::keyed),
            reqs: quota(limits.reqs_per_minute),
        }
    }

    pub fn allow_event_from_ip(&self, ip: IpAddr) -> bool {
        self.per_ip.as_ref().is_none_or(|l| l.check_key(&ip).is_ok())
    }

    pub fn allow_registration_from_ip(&self, ip: IpAddr) -> bool {
        self.registrations_per_ip.as_ref().is_none_or(|l| l.check_key(&ip).is_ok())
    }

    pub fn allow_event_from_pubkey(&self, pubkey: &Hash32) -> bool {
        self.per_pubkey.as_ref().is_none_or(|l| l.check_key(pubkey).is_ok())
    }

    /// A limiter for one connection's REQ and COUNT messages.
    pub fn req_limiter(&self) -> Option<DefaultDirectRateLimiter> {
        self.reqs.map(RateLimiter::direct)
    }

    /// Drops the state of keys that have been quiet long enough to be back at full allowance, so that the maps
    /// do not grow with every address ever seen.
    pub fn forget_idle(&self) {
        for l in [&self.per_ip, &self.registrations_per_ip].into_iter().flatten() {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.per_pubkey {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

/// Open connections per IP address.
pub struct ConnectionCounter {
    max_per_ip: std::sync::atomic::AtomicUsize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionCounter {
    pub fn new(max_per_ip: usize) -> Arc<Self> {
        Arc::new(Self { max_per_ip: max_per_ip.into(), open: Mutex::default() })
    }

    /// A new limit (a reload); connections already open stay.
    pub fn set_limit(&self, max_per_ip: usize) {
        self.max_per_ip.store(max_per_ip, std::sync::atomic::Ordering::Relaxed);
    }

    /// A slot for one more connection from `ip`, or None past the limit. The slot frees itself when dropped.
    pub fn try_open(self: &Arc<Self>, ip: IpAddr) -> Option<ConnectionSlot> {
        let mut open = self.open.lock().expect("connection counter lock");
        let count = open.entry(ip).or_default();
        let max = self.max_per_ip.load(std::sync::atomic::Ordering::Relaxed);
        if max > 0 && *count >= max {
            return None;
        }
        *count += 1;
        Some(ConnectionSlot { counter: self.clone(), ip })
    }
}

pub struct ConnectionSlot {
    counter: Arc<ConnectionCounter>,
    ip: IpAddr,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut open = self.counter.open.lock().expect("connection counter lock");
        if let Some(count) = open.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.ip);
            }
        }
    }
}
