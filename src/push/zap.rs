//! What a zap receipt (NIP-57, kind 9735) says about the zap: who sent it and how many sats.
//!
//! The receipt is signed by the recipient's wallet service, so the zapper is the pubkey of the zap request embedded
//! in its `description` tag. The amount comes from the `bolt11` invoice's human-readable part; reading that needs
//! only the prefix of the invoice, so it is parsed here rather than pulling in a Lightning invoice crate.

use crate::protocol::VerifiedEvent;

pub const ZAP_RECEIPT_KIND: u16 = 9735;

/// The zapper's pubkey (hex), from the zap request in the `description` tag.
pub fn zapper(receipt: &VerifiedEvent) -> Option<String> {
    let request: serde_json::Value = serde_json::from_str(tag_value(receipt, "description")?).ok()?;
    let pubkey = request["pubkey"].as_str()?;
    (pubkey.len() == 64 && pubkey.bytes().all(|b| b.is_ascii_hexdigit())).then(|| pubkey.to_ascii_lowercase())
}

/// The amount of the `bolt11` invoice, in whole sats.
pub fn sats(receipt: &VerifiedEvent) -> Option<u64> {
    invoice_msats(tag_value(receipt, "bolt11")?).map(|msats| msats / 1000)
}

fn tag_value<'a>(event: &'a VerifiedEvent, name: &str) -> Option<&'a str> {
    event.event.tags.iter().map(|t| t.as_slice()).find(|t| t[0] == name).and_then(|t| t.get(1)).map(String::as_str)
}

/// BOLT 11: the human-readable part (before the last `1`) is `ln` + currency + amount + multiplier, the amount in
/// bitcoin times the multiplier (m = 10^-3, u = 10^-6, n = 10^-9, p = 10^-12). An invoice without an amount
/// gives None.
fn invoice_msats(invoice: &str) -> Option<u64> {
    let invoice = invoice.trim().to_ascii_lowercase();
    let invoice = invoice.strip_prefix("lightning:").unwrap_or(&invoice);
    let hrp = invoice.get(..invoice.rfind('1')?)?.strip_prefix("ln")?;
    let amount = hrp.trim_start_matches(|c: char| c.is_ascii_alphabetic());
    let (digits, multiplier) = match amount.chars().last()? {
        c if c.is_ascii_digit() => (amount, None),
        // By the character's own width: the invoice is a stranger's text, and a multi-byte last character would
        // otherwise be cut inside.
        c => (&amount[..amount.len() - c.len_utf8()], Some(c)),
    };
    let value: u64 = digits.parse().ok()?;
    const MSATS_PER_BTC: u64 = 100_000_000_000;
    match multiplier {
        None => value.checked_mul(MSATS_PER_BTC),
        Some('m') => value.checked_mul(MSATS_PER_BTC / 1_000),
        Some('u') => value.checked_mul(MSATS_PER_BTC / 1_000_000),
        Some('n') => value.checked_mul(MSATS_PER_BTC / 1_000_000_000),
        Some('p') => Some(value / 10),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoice_amounts() {
        // From BOLT 11's examples.
        assert_eq!(
            invoice_msats("lnbc2500u1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfqypq"),
            Some(250_000_000)
        );
        assert_eq!(invoice_msats("lnbc20m1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfq"), Some(2_000_000_000));
        assert_eq!(invoice_msats("LNBC10U1PVJLUEZ"), Some(1_000_000));
        assert_eq!(
            invoice_msats("lntb20m1pvjluezhp58yjmdan79s6qqdhdzgynm4zwqd5d7xmw5fk98klysy043l2ahrqs"),
            Some(2_000_000_000)
        );
        assert_eq!(invoice_msats("lnbcrt5n1pvjluez"), Some(500));
        assert_eq!(invoice_msats("lnbc1pvjluezpp5qqqsyqcyq5rqwzqfqqqsyqcyq5rqwzqfq"), None);
        assert_eq!(invoice_msats("not an invoice"), None);
        assert_eq!(invoice_msats("lnbc99999999999999999999m1x"), None);
        // Multi-byte characters where the amount's multiplier would be: no amount, and no panic.
        for hostile in ["lné1", "ln10é1pvjluez", "lnbc2500€1x", "ln🤙1", "lnbcé"] {
            assert_eq!(invoice_msats(hostile), None, "{hostile}");
        }
    }
}
