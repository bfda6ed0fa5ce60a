//! Addresses chosen by strangers (UnifiedPush and Web Push endpoints, relays named in registrations) must not lead
//! the relay into its own network: these checks refuse loopback, private, link-local and other non-public
//! destinations, and resolve a name once so that the connection goes to the very addresses that were checked.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// False for every address that is not a unicast destination on the public internet: loopback, private,
/// link-local, unique-local, shared (CGNAT), broadcast, unspecified, multicast, reserved, documentation and
/// benchmarking ranges, and IPv6 forms that carry such an IPv4 address inside (mapped, translated, NAT64, 6to4,
/// Teredo), since a gateway would turn them into a connection to that IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(v4: Ipv4Addr) -> bool {
    let [a, b, c, _] = v4.octets();
    !(a == 0 // "this network" (0.0.0.0 reaches the host itself)
        || v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT), 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation, 192.0.2.0/24
        || (a == 198 && (b == 18 || b == 19)) // benchmarking, 198.18.0.0/15
        || (a == 198 && b == 51 && c == 100) // documentation, 198.51.100.0/24
        || (a == 203 && b == 0 && c == 113) // documentation, 203.0.113.0/24
        || v4.is_multicast() // 224.0.0.0/4
        || a >= 240) // reserved, 240.0.0.0/4, and the broadcast address
}

fn is_public_v6(v6: Ipv6Addr) -> bool {
    let embedded = |high: u16, low: u16| Ipv4Addr::from((u32::from(high) << 16) | u32::from(low));
    match v6.segments() {
        // ::/96: unspecified, loopback and the deprecated IPv4-compatible ::a.b.c.d, never routed.
        [0, 0, 0, 0, 0, 0, ..] => false,
        // IPv4-mapped ::ffff:0:0/96 and IPv4-translated ::ffff:0:0:0/96 (SIIT): the IPv4 address decides.
        [0, 0, 0, 0, 0, 0xffff, high, low] | [0, 0, 0, 0, 0xffff, 0, high, low] => is_public_v4(embedded(high, low)),
        // NAT64 well-known prefix 64:ff9b::/96: the gateway connects to the embedded IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => is_public_v4(embedded(high, low)),
        // Local-use NAT64, 64:ff9b:1::/48 (RFC 8215): inside one network by definition, and where the IPv4 address
        // sits depends on a prefix length not known here.
        [0x64, 0xff9b, 1, ..] => false,
        // 6to4, 2002::/16: the relay router sends to the IPv4 address in bits 16-47.
        [0x2002, high, low, ..] => is_public_v4(embedded(high, low)),
        // Teredo, 2001::/32: the client's IPv4 address is the last 32 bits, inverted.
        [0x2001, 0, .., high, low] => is_public_v4(embedded(!high, !low)),
        // Benchmarking 2001:2::/48, documentation 2001:db8::/32, discard-only 100::/64.
        [0x2001, 2, 0, ..] | [0x2001, 0xdb8, ..] | [0x100, 0, 0, 0, ..] => false,
        [first, ..] => {
            !((first & 0xfe00) == 0xfc00 // unique local, fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local, fe80::/10
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated), fec0::/10
                || (first & 0xff00) == 0xff00) // multicast, ff00::/8
        }
    }
}

/// Without DNS: refuses a URL whose host is `localhost` or a non-public IP literal (for checks at registration).
pub fn check_literal_host(url: &url::Url) -> Result<(), String> {
    match url.host() {
        Some(url::Host::Domain(domain)) if domain.eq_ignore_ascii_case("localhost") => {
            Err(format!("{url} is on a loopback address"))
        }
        Some(url::Host::Ipv4(ip)) if !is_public(ip.into()) => Err(format!("{url} is on a non-public address")),
        Some(url::Host::Ipv6(ip)) if !is_public(ip.into()) => Err(format!("{url} is on a non-public address")),
        None => Err(format!("{url} has no host")),
        _ => Ok(()),
    }
}

/// Resolves the URL's host once and refuses it if any of its addresses is not public (unless `allow_private`).
/// The caller connects to the addresses returned, never to the name again: a second resolution could answer
/// otherwise (DNS rebinding: a public address for the check, a private one for the connection).
pub async fn resolve_checked(url: &url::Url, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    if !allow_private {
        check_literal_host(url)?;
    }
    let port = url.port_or_known_default().ok_or_else(|| format!("{url} has no port"))?;
    match url.host() {
        Some(url::Host::Domain(domain)) => resolve_host(domain, port, allow_private).await,
        Some(url::Host::Ipv4(ip)) => Ok(vec![SocketAddr::new(ip.into(), port)]),
        Some(url::Host::Ipv6(ip)) => Ok(vec![SocketAddr::new(ip.into(), port)]),
        None => Err(format!("{url} has no host")),
    }
}

/// Resolves `host` and refuses it if any of its addresses is not public (unless `allow_private`); the addresses
/// are to be connected to as they are.
pub async fn resolve_host(host: &str, port: u16, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    let addresses: Vec<SocketAddr> =
        tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?.collect();
    if addresses.is_empty() {
        return Err(format!("{host} has no address"));
    }
    // All or nothing: a name with one private address among public ones is someone aiming at the private one.
    if !allow_private && addresses.iter().any(|a| !is_public(a.ip())) {
        return Err(format!("{host} resolves to a non-public address"));
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_not_public(addresses: &[&str]) {
        for address in addresses {
            assert!(!is_public(address.parse().unwrap()), "{address} is not public");
        }
    }

    fn assert_public(addresses: &[&str]) {
        for address in addresses {
            assert!(is_public(address.parse().unwrap()), "{address} is public");
        }
    }

    #[test]
    fn private_addresses_are_not_public() {
        assert_not_public(&[
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
            "::",
        ]);
        assert_public(&["1.1.1.1", "8.8.8.8", "2606:4700::1111"]);
    }

    #[test]
    fn special_purpose_ipv4_ranges_are_not_public() {
        assert_not_public(&[
            "0.1.2.3",         // this network
            "192.0.0.8",       // IETF protocol assignments
            "192.0.2.1",       // documentation
            "198.51.100.1",    // documentation
            "203.0.113.1",     // documentation
            "198.18.0.1",      // benchmarking
            "198.19.255.255",  // benchmarking
            "224.0.0.1",       // multicast
            "239.255.255.250", // multicast (SSDP)
            "240.0.0.1",       // reserved
            "255.255.255.255", // broadcast
        ]);
        assert_public(&["192.0.1.1", "198.17.0.1", "198.20.0.1", "223.255.255.255", "100.128.0.1"]);
    }

    /// Each IPv6 form that carries an IPv4 address, with a private and then a public one inside.
    #[test]
    fn ipv6_forms_carrying_ipv4_are_judged_by_the_ipv4_inside() {
        for (private, public) in [
            ("::ffff:127.0.0.1", "::ffff:1.1.1.1"),     // IPv4-mapped
            ("::ffff:0:10.0.0.1", "::ffff:0:1.1.1.1"),  // IPv4-translated (SIIT)
            ("64:ff9b::127.0.0.1", "64:ff9b::1.1.1.1"), // NAT64 well-known prefix
            ("64:ff9b::a9fe:a9fe", "64:ff9b::808:808"), // NAT64: 169.254.169.254 (cloud metadata), 8.8.8.8
            ("2002:c0a8:101::1", "2002:101:101::1"),    // 6to4: 192.168.1.1, 1.1.1.1
            ("2002:7f00:1::", "2002:808:808::"),        // 6to4: 127.0.0.1, 8.8.8.8
            ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "2001:0:4136:e378:8000:63bf:fefe:fefe"), // Teredo: 10.0.0.1
        ] {
            assert_not_public(&[private]);
            assert_public(&[public]);
        }
        assert_not_public(&[
            "::10.0.0.1",        // IPv4-compatible (deprecated)
            "::1.1.1.1",         // IPv4-compatible, even with a public IPv4 inside: never routed
            "64:ff9b:1::a00:1",  // local-use NAT64
            "64:ff9b:1:ffff::1", // local-use NAT64
        ]);
    }

    #[test]
    fn special_purpose_ipv6_ranges_are_not_public() {
        assert_not_public(&[
            "ff02::1",     // multicast, link-local scope
            "ff05::2",     // multicast, site scope
            "ff0e::1",     // multicast, global scope
            "2001:db8::1", // documentation
            "2001:2::1",   // benchmarking
            "100::1",      // discard-only
            "fec0::1",     // site-local (deprecated)
            "febf::1",     // link-local, the top of fe80::/10
        ]);
        assert_public(&["2001:4860:4860::8888", "2a00:1450::1", "2001:db9::1", "64:ff9c::1", "100:0:0:1::1"]);
    }

    #[test]
    fn literal_hosts_are_checked_without_dns() {
        for bad in [
            "wss://localhost/",
            "ws://127.0.0.1:7777",
            "wss://[::1]/",
            "wss://10.0.0.8",
            "wss://[64:ff9b::a00:1]/",
            "wss://[2002:a00:1::1]/",
            "wss://[::ffff:169.254.169.254]/",
            "wss://224.0.0.1/",
        ] {
            assert!(check_literal_host(&url::Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(check_literal_host(&url::Url::parse("wss://relay.example.com").unwrap()).is_ok());
    }

    #[tokio::test]
    async fn names_are_resolved_once_and_every_address_checked() {
        assert!(resolve_checked(&url::Url::parse("https://localhost:8443/").unwrap(), false).await.is_err());
        // Past the literal check, the resolution itself refuses a name that resolves to loopback.
        let err = resolve_host("localhost", 8443, false).await.unwrap_err();
        assert!(err.contains("non-public"), "{err}");
        // Allowed (tests): the addresses come back, port included, for the caller to connect to.
        let addresses = resolve_host("localhost", 8443, true).await.unwrap();
        assert!(addresses.iter().all(|a| a.ip().is_loopback() && a.port() == 8443), "{addresses:?}");
        let literal = url::Url::parse("wss://[2606:4700::1111]/").unwrap();
        assert_eq!(resolve_checked(&literal, false).await.unwrap(), vec!["[2606:4700::1111]:443".parse().unwrap()]);
        assert!(resolve_checked(&url::Url::parse("wss://[64:ff9b::7f00:1]/").unwrap(), false).await.is_err());
    }
}
