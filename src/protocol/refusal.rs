//! Why the relay says no: NIP-01's machine-readable prefix and a message for people, the one type every door
//! refuses with (admission, policy, groups, push intake, the hooks between them). The prefix is written here
//! once; callers pick a kind of refusal, never type a prefix, so a client can rely on it (`OK false`, `CLOSED`,
//! `NEG-ERR`, `NOTICE`, and the HTTP answers of NIP-97 and NIP-86 alike).

use std::borrow::Cow;
use std::fmt;

/// NIP-01's standard prefixes of an `OK false` or `CLOSED` message (and `NOTICE`s, by the same habit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Prefix {
    Duplicate,
    Pow,
    Blocked,
    RateLimited,
    Invalid,
    Restricted,
    Mute,
    Error,
    AuthRequired,
    /// NIP-77's answer to a message about a reconciliation that is not open.
    Closed,
}

impl Prefix {
    /// The prefix another relay's message starts with, if it is a standard one.
    pub fn of(message: &str) -> Option<Self> {
        let (prefix, _) = message.split_once(':')?;
        ALL.into_iter().find(|p| p.as_str() == prefix)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Duplicate => "duplicate",
            Self::Pow => "pow",
            Self::Blocked => "blocked",
            Self::RateLimited => "rate-limited",
            Self::Invalid => "invalid",
            Self::Restricted => "restricted",
            Self::Mute => "mute",
            Self::Error => "error",
            Self::AuthRequired => "auth-required",
            Self::Closed => "closed",
        }
    }
}

const ALL: [Prefix; 10] = [
    Prefix::Duplicate,
    Prefix::Pow,
    Prefix::Blocked,
    Prefix::RateLimited,
    Prefix::Invalid,
    Prefix::Restricted,
    Prefix::Mute,
    Prefix::Error,
    Prefix::AuthRequired,
    Prefix::Closed,
];

/// A refusal: shown to clients as `prefix: message`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    prefix: Prefix,
    message: Cow<'static, str>,
}

impl Refusal {
    pub fn new(prefix: Prefix, message: impl Into<Cow<'static, str>>) -> Self {
        Self { prefix, message: message.into() }
    }

    pub fn duplicate(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::Duplicate, message)
    }

    pub fn blocked(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::Blocked, message)
    }

    pub fn rate_limited(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::RateLimited, message)
    }

    pub fn invalid(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::Invalid, message)
    }

    pub fn restricted(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::Restricted, message)
    }

    pub fn error(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::Error, message)
    }

    pub fn auth_required(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(Prefix::AuthRequired, message)
    }

    pub fn prefix(&self) -> Prefix {
        self.prefix
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prefix.as_str(), self.message)
    }
}

impl std::error::Error for Refusal {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_reads_as_nip01_prefix_and_message() {
        assert_eq!(Refusal::rate_limited("slow down").to_string(), "rate-limited: slow down");
        assert_eq!(Refusal::auth_required(format!("group {}", 7)).to_string(), "auth-required: group 7");
        assert_eq!(Refusal::invalid("x").prefix(), Prefix::Invalid);
        assert_eq!(Prefix::of("auth-required: log in"), Some(Prefix::AuthRequired));
        assert_eq!((Prefix::of("nonsense: x"), Prefix::of("no colon")), (None, None));
    }
}
