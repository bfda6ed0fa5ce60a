//! Which address a client has: the one rule every per-IP limit and every log line uses.
//!
//! Behind a reverse proxy every socket comes from the proxy, so the proxy's word on who its client is
//! (`X-Forwarded-For`, or RFC 7239 `Forwarded`) is taken, but only from a peer in `[server] trusted_proxies`:
//! anyone else could name any address to dodge the limits or to use up another's. Each proxy appends the address
//! it saw, so the list is read from the right and the first address that is not itself a trusted proxy is the
//! client; what lies left of it was written by the client and is not believed. IPv6 clients are counted by their
//! network (`[server] ipv6_prefix_len`), since one customer usually holds a whole /64.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::ServerConfig;
use crate::relay::rate::ClientAddress;

pub struct ClientIpRule {
    trusted: Vec<IpNet>,
    ipv6_prefix_len: u8,
}

impl ClientIpRule {
    pub fn new(server: &ServerConfig) -> Result<Self, String> {
        Ok(Self { trusted: server.trusted_proxy_networks()?, ipv6_prefix_len: server.ipv6_prefix_len.min(128) })
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> ClientAddress {
        let peer_ip = peer.ip().to_canonical();
        let ip = if self.is_trusted(peer_ip) { self.forwarded_client(headers).unwrap_or(peer_ip) } else { peer_ip };
        ClientAddress { ip, key: self.key(ip), peer }
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|network| network.contains(&ip))
    }

    /// What per-IP limits count `ip` under: IPv4 as it is, IPv6 cut to its network.
    pub fn key(&self, ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.ipv6_prefix_len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask))
            }
            v4 => v4,
        }
    }

    /// The client a trusted proxy names. `X-Forwarded-For` when present (what nginx and Caddy set), else
    /// `Forwarded`. None when the chain holds something that is not an address (`unknown`, an obfuscated name,
    /// garbage) before a client is found: then the peer itself is all that is known.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let values = |name: &str| -> Option<Vec<String>> {
            headers.get_all(name).iter().map(|v| v.to_str().ok().map(str::to_owned)).collect()
        };
        let hops: Vec<Option<IpAddr>> = match values("x-forwarded-for")? {
            xff if !xff.is_empty() => xff.iter().flat_map(|v| v.split(',')).map(parse_hop).collect(),
            _ => values("forwarded")?.iter().flat_map(|v| split_outside_quotes(v, ',')).map(forwarded_for).collect(),
        };
        let mut leftmost = None;
        for hop in hops.into_iter().rev() {
            let ip = hop?;
            if !self.is_trusted(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        // Every hop is a trusted proxy (one of them asking for itself): the first is the client.
        leftmost
    }
}

/// One `X-Forwarded-For` entry: an address, perhaps with a port (`1.2.3.4:80`, `[2001:db8::1]:80`), perhaps
/// bracketed.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    let ip = entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.60;proto=http`, `For="[2001:db8::1]:4711"`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = split_outside_quotes(element, ';').into_iter().find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        name.trim().eq_ignore_ascii_case("for").then(|| value.trim())
    })?;
    let node = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(quoted) => quoted.replace('\\', ""),
        None => value.to_owned(),
    };
    // An IPv6 node is always bracketed (and must be quoted); an IPv4 one may carry a port.
    let ip = match node.strip_prefix('[') {
        Some(rest) => IpAddr::V6(rest.split(']').next()?.parse().ok()?),
        None => IpAddr::V4(node.split(':').next()?.parse().ok()?),
    };
    Some(ip.to_canonical())
}

/// `text` split at `separator` where it is not inside a quoted string.
fn split_outside_quotes(text: &str, separator: char) -> Vec<&str> {
    let (mut parts, mut start, mut quoted, mut escaped) = (Vec::new(), 0, false, false);
    for (i, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == separator && !quoted => {
                parts.push(&text[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(trusted: &[&str], ipv6_prefix_len: u8) -> ClientIpRule {
        let server = ServerConfig {
            trusted_proxies: trusted.iter().map(|s| s.to_string()).collect(),
            ipv6_prefix_len,
            ..ServerConfig::default()
        };
        ClientIpRule::new(&server).unwrap()
    }

    fn client_of(rule: &ClientIpRule, peer: &str, headers: &[(&str, &str)]) -> String {
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.parse().unwrap());
        }
        rule.client(peer.parse().unwrap(), &map).ip.to_string()
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_network() {
        let by_64 = rule(&[], 64);
        let key = |r: &ClientIpRule, ip: &str| r.key(ip.parse().unwrap()).to_string();
        assert_eq!(key(&by_64, "2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(key(&by_64, "2001:db8:1:2::1"), key(&by_64, "2001:db8:1:2:ffff::9"));
        assert_ne!(key(&by_64, "2001:db8:1:2::1"), key(&by_64, "2001:db8:1:3::1"));
        assert_eq!(key(&by_64, "203.0.113.7"), "203.0.113.7", "IPv4 as it is");
        assert_eq!(key(&by_64, "::ffff:203.0.113.7"), "203.0.113.7", "IPv4-mapped IPv6 as IPv4");
        assert_eq!(key(&rule(&[], 128), "2001:db8::1"), "2001:db8::1");
        assert_eq!(key(&rule(&[], 48), "2001:db8:1:2::1"), "2001:db8:1::");
        assert_eq!(key(&rule(&[], 1), "2001:db8::1"), "::");
        let peer = by_64.client("[2001:db8:5:6::7]:4000".parse().unwrap(), &HeaderMap::new());
        assert_eq!((peer.ip.to_string(), peer.key.to_string()), ("2001:db8:5:6::7".into(), "2001:db8:5:6::".into()));
    }

    #[test]
    fn forwarded_headers_count_only_from_trusted_proxies() {
        let proxied = rule(&["127.0.0.1", "10.0.0.0/8"], 64);
        let xff = |value: &str| client_of(&proxied, "127.0.0.1:5000", &[("x-forwarded-for", value)]);
        assert_eq!(xff("203.0.113.7"), "203.0.113.7");
        // The client wrote the left part; the proxy appended what it saw.
        assert_eq!(xff("1.1.1.1, 203.0.113.7"), "203.0.113.7");
        // A chain of trusted proxies is skipped from the right.
        assert_eq!(xff("198.51.100.2, 10.1.1.1, 10.2.2.2"), "198.51.100.2");
        assert_eq!(xff("2001:db8::1"), "2001:db8::1");
        assert_eq!(xff("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(xff("203.0.113.7:8080"), "203.0.113.7");
        assert_eq!(xff("::ffff:203.0.113.7"), "203.0.113.7");
        // Only trusted proxies in the chain: the first of them.
        assert_eq!(xff("10.9.9.9, 10.2.2.2"), "10.9.9.9");
        // Garbage where the client should be: only the peer is known.
        for garbage in ["", "nonsense", "203.0.113.7, unknown", "999.1.1.1", "1.1.1.1,,", "<script>"] {
            assert_eq!(xff(garbage), "127.0.0.1", "{garbage:?}");
        }
        // Garbage left of the client is the client's own writing and does not matter.
        assert_eq!(xff("nonsense, 203.0.113.7"), "203.0.113.7");
        // Several header lines are one list, in order.
        let two = [("x-forwarded-for", "1.1.1.1"), ("x-forwarded-for", "203.0.113.9, 10.0.0.5")];
        assert_eq!(client_of(&proxied, "127.0.0.1:5000", &two), "203.0.113.9");
        // From an IPv4-mapped peer address too.
        assert_eq!(
            client_of(&proxied, "[::ffff:127.0.0.1]:5000", &[("x-forwarded-for", "203.0.113.7")]),
            "203.0.113.7"
        );

        // From a peer that is not a trusted proxy, the headers are ignored.
        let stranger = [("x-forwarded-for", "203.0.113.7"), ("forwarded", "for=203.0.113.8")];
        assert_eq!(client_of(&proxied, "198.51.100.1:5000", &stranger), "198.51.100.1");
        assert_eq!(client_of(&rule(&[], 64), "127.0.0.1:5000", &stranger), "127.0.0.1");
    }

    #[test]
    fn rfc_7239_forwarded_is_read_when_there_is_no_x_forwarded_for() {
        let proxied = rule(&["127.0.0.1"], 64);
        let fwd = |value: &str| client_of(&proxied, "127.0.0.1:5000", &[("forwarded", value)]);
        assert_eq!(fwd("for=192.0.2.60;proto=http;by=203.0.113.43"), "192.0.2.60");
        assert_eq!(fwd("For=\"[2001:db8:cafe::17]:4711\""), "2001:db8:cafe::17");
        assert_eq!(fwd("for=\"[2001:db8::1]\""), "2001:db8::1");
        assert_eq!(fwd("for=192.0.2.43, for=198.51.100.17"), "198.51.100.17");
        assert_eq!(fwd("for=198.51.100.17, for=127.0.0.1"), "198.51.100.17");
        assert_eq!(fwd("proto=https;for=\"192.0.2.1:8080\";host=\"a,b\""), "192.0.2.1");
        for garbage in ["for=unknown", "for=_hidden", "proto=http", "for=\"[nonsense]\"", "for=", "=;=,"] {
            assert_eq!(fwd(garbage), "127.0.0.1", "{garbage:?}");
        }
        // X-Forwarded-For, when there, is the one read.
        let both = [("forwarded", "for=192.0.2.60"), ("x-forwarded-for", "203.0.113.7")];
        assert_eq!(client_of(&proxied, "127.0.0.1:5000", &both), "203.0.113.7");
    }
}
