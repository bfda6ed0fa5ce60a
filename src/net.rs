//! Addresses chosen by strangers (UnifiedPush endpoints, relays named in registrations) must not lead the relay
//! into its own network: these checks refuse loopback, private and link-local destinations.

use std::net::IpAddr;

/// False for loopback, private, link-local, unique-local, shared (CGNAT), broadcast and unspecified addresses.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80)
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

/// Resolves the URL's host and refuses it if any of its addresses is not public.
pub async fn check_public(url: &url::Url) -> Result<(), String> {
    check_literal_host(url)?;
    let host = url.host_str().ok_or("no host")?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses = tokio::net::lookup_host((host, port)).await.map_err(|e| format!("cannot resolve {host}: {e}"))?;
    for address in addresses {
        if !is_public(address.ip()) {
            return Err(format!("{host} resolves to a non-public address"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for private in [
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
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_without_dns() {
        for bad in ["wss://localhost/", "ws://127.0.0.1:7777", "wss://[::1]/", "wss://10.0.0.8"] {
            assert!(check_literal_host(&url::Url::parse(bad).unwrap()).is_err(), "{bad}");
        }
        assert!(check_literal_host(&url::Url::parse("wss://relay.example.com").unwrap()).is_ok());
    }
}
