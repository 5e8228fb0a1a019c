//! The secret enforcement point: grants keyed by (subject, tenant, canonical
//! URI, purpose) with a lifetime and a use budget, a short jittered negative
//! cache for denials, anti-replay of token `jti`s, and sender binding.
//! Pure state: callers pass the time and serialize access (one lock).

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::spiffe_id::SpiffeId;

/// What a grant is for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GrantKey {
    /// The verified caller.
    pub subject: SpiffeId,
    /// The tenant.
    pub tenant: String,
    /// The secret's canonical URI (`env:NAME` for environment stores).
    pub secret: String,
    /// Why it is read (e.g. `egress:api.example.com`).
    pub purpose: String,
}

/// Who may present a grant: the sender's key or TLS client certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SenderBinding {
    /// RFC 7638 thumbprint of the `cnf` JWK.
    JwkThumbprint(String),
    /// SHA-256 thumbprint of the mTLS client certificate.
    MtlsThumbprint(String),
}

/// Why a use was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// No grant for this key.
    #[error("no grant")]
    NoGrant,
    /// The grant's lifetime is over.
    #[error("grant expired")]
    Expired,
    /// The grant's uses are spent.
    #[error("grant uses exhausted")]
    Exhausted,
    /// This key was denied moments ago; not looked up again yet.
    #[error("recently denied")]
    NegativelyCached,
    /// The token's `jti` was seen before within the replay window.
    #[error("token replayed (jti seen before)")]
    Replay,
    /// The policy does not grant reads for this purpose.
    #[error("purpose {0:?} is not granted by the policy")]
    Purpose(String),
    /// The grant is bound to another sender.
    #[error("binding drift: the grant is bound to another sender")]
    BindingDrift,
}

#[derive(Debug, Clone)]
struct Grant {
    expires_at_ms: u64,
    uses_left: u32,
    binding: Option<SenderBinding>,
}

/// One use of a grant.
#[derive(Debug, Clone, Copy)]
pub struct Use<'a> {
    /// The grant's key.
    pub key: &'a GrantKey,
    /// The presenting token's `jti`.
    pub jti: Option<&'a str>,
    /// The presenting sender.
    pub sender: Option<&'a SenderBinding>,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
}

/// Tunables.
#[derive(Debug, Clone, Copy)]
pub struct EnforcementOptions {
    /// How long a denial is remembered, milliseconds (before jitter).
    pub negative_ttl_ms: u64,
    /// Up to this much is added per key, so expiries spread out.
    pub negative_jitter_ms: u64,
    /// How long a `jti` is remembered, milliseconds.
    pub replay_window_ms: u64,
}

impl EnforcementOptions {
    /// How long a denial of `key` is remembered: the TTL plus a jitter
    /// fixed per key, so expiries spread out.
    pub fn denial_ms(&self, key: &GrantKey) -> u64 {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        self.negative_ttl_ms + h.finish() % (self.negative_jitter_ms + 1)
    }
}

impl Default for EnforcementOptions {
    fn default() -> Self {
        Self {
            negative_ttl_ms: 3000,
            negative_jitter_ms: 1000,
            replay_window_ms: 300_000,
        }
    }
}

/// Grants, denials and seen `jti`s.
#[derive(Debug, Default)]
pub struct Enforcement {
    options: EnforcementOptions,
    grants: HashMap<GrantKey, Grant>,
    denied_until: HashMap<GrantKey, u64>,
    seen_jtis: HashMap<String, u64>,
}

impl Enforcement {
    /// An empty enforcement point.
    pub fn new(options: EnforcementOptions) -> Self {
        Self {
            options,
            ..Self::default()
        }
    }

    /// Grants `max_uses` uses (at least 1) until `now_ms + ttl_ms`,
    /// optionally bound to a sender. Clears a remembered denial of the key
    /// and forgets grants whose time is over.
    pub fn grant(
        &mut self,
        key: GrantKey,
        ttl_ms: u64,
        max_uses: u32,
        binding: Option<SenderBinding>,
        now_ms: u64,
    ) {
        self.grants.retain(|_, g| g.expires_at_ms > now_ms);
        self.denied_until.remove(&key);
        self.grants.insert(
            key,
            Grant {
                expires_at_ms: now_ms.saturating_add(ttl_ms),
                uses_left: max_uses.max(1),
                binding,
            },
        );
    }

    fn deny(&mut self, key: &GrantKey, now_ms: u64, error: GrantError) -> Result<(), GrantError> {
        self.denied_until.retain(|_, until| *until > now_ms);
        self.denied_until
            .insert(key.clone(), now_ms + self.options.denial_ms(key));
        Err(error)
    }

    /// Remembers that a policy refused `key` (the negative cache).
    pub fn refuse(&mut self, key: &GrantKey, now_ms: u64) {
        let _ = self.deny(key, now_ms, GrantError::NoGrant);
    }

    /// Whether `key` was refused moments ago.
    pub fn recently_denied(&self, key: &GrantKey, now_ms: u64) -> bool {
        self.denied_until
            .get(key)
            .is_some_and(|until| *until > now_ms)
    }

    /// Whether `jti` was presented before within the replay window.
    pub fn replayed(&mut self, jti: &str, now_ms: u64) -> bool {
        self.seen_jtis.retain(|_, until| *until > now_ms);
        self.seen_jtis.contains_key(jti)
    }

    /// Records that `jti` was presented.
    pub fn remember_jti(&mut self, jti: &str, now_ms: u64) {
        self.seen_jtis
            .insert(jti.to_owned(), now_ms + self.options.replay_window_ms);
    }

    /// Whether a grant for `key` is in force.
    pub fn has_grant(&self, key: &GrantKey, now_ms: u64) -> bool {
        self.grants
            .get(key)
            .is_some_and(|g| g.expires_at_ms > now_ms)
    }

    /// Gives back the use `u` spent (and forgets its `jti`) when nothing
    /// was read with it, e.g. the store was unreachable.
    pub fn refund(&mut self, u: Use<'_>) {
        if let Some(grant) = self.grants.get_mut(u.key)
            && grant.expires_at_ms > u.now_ms
        {
            grant.uses_left = grant.uses_left.saturating_add(1);
        }
        if let Some(jti) = u.jti {
            self.seen_jtis.remove(jti);
        }
    }

    /// Spends one use of a grant, or says why not.
    pub fn authorize(&mut self, u: Use<'_>) -> Result<(), GrantError> {
        if self.recently_denied(u.key, u.now_ms) {
            return Err(GrantError::NegativelyCached);
        }
        if let Some(jti) = u.jti
            && self.replayed(jti, u.now_ms)
        {
            return Err(GrantError::Replay);
        }
        let Some(grant) = self.grants.get_mut(u.key) else {
            return self.deny(u.key, u.now_ms, GrantError::NoGrant);
        };
        if grant.expires_at_ms <= u.now_ms {
            self.grants.remove(u.key);
            return self.deny(u.key, u.now_ms, GrantError::Expired);
        }
        if grant.binding.is_some() && grant.binding.as_ref() != u.sender {
            return Err(GrantError::BindingDrift);
        }
        if grant.uses_left == 0 {
            return self.deny(u.key, u.now_ms, GrantError::Exhausted);
        }
        grant.uses_left -= 1;
        if let Some(jti) = u.jti {
            self.remember_jti(jti, u.now_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(purpose: &str) -> GrantKey {
        GrantKey {
            subject: SpiffeId::parse("spiffe://e.org/orders").unwrap(),
            tenant: "acme".into(),
            secret: "openbao+kv2://secret/app/db#password".into(),
            purpose: purpose.into(),
        }
    }

    fn use_at<'a>(
        k: &'a GrantKey,
        jti: Option<&'a str>,
        sender: Option<&'a SenderBinding>,
        now_ms: u64,
    ) -> Use<'a> {
        Use {
            key: k,
            jti,
            sender,
            now_ms,
        }
    }

    fn point() -> Enforcement {
        Enforcement::new(EnforcementOptions {
            negative_ttl_ms: 3000,
            negative_jitter_ms: 500,
            replay_window_ms: 60_000,
        })
    }

    #[test]
    fn a_grant_lapses_with_its_ttl() {
        let mut e = point();
        let k = key("egress");
        e.grant(k.clone(), 1000, 5, None, 0);
        assert_eq!(e.authorize(use_at(&k, None, None, 999)), Ok(()));
        assert_eq!(
            e.authorize(use_at(&k, None, None, 1000)),
            Err(GrantError::Expired)
        );
    }

    #[test]
    fn uses_default_to_one_and_are_counted() {
        let mut e = point();
        let k = key("egress");
        e.grant(k.clone(), 10_000, 0, None, 0);
        assert_eq!(e.authorize(use_at(&k, None, None, 1)), Ok(()));
        assert_eq!(
            e.authorize(use_at(&k, None, None, 2)),
            Err(GrantError::Exhausted)
        );
        e.grant(k.clone(), 10_000, 3, None, 10);
        for t in 11..14 {
            assert_eq!(e.authorize(use_at(&k, None, None, t)), Ok(()));
        }
        assert_eq!(
            e.authorize(use_at(&k, None, None, 14)),
            Err(GrantError::Exhausted)
        );
    }

    #[test]
    fn denials_are_remembered_briefly_with_jitter_then_looked_up_again() {
        let mut e = point();
        let k = key("egress");
        assert_eq!(
            e.authorize(use_at(&k, None, None, 0)),
            Err(GrantError::NoGrant)
        );
        assert_eq!(
            e.authorize(use_at(&k, None, None, 2999)),
            Err(GrantError::NegativelyCached)
        );
        let until = e.denied_until[&k];
        assert!((3000..=3500).contains(&until), "{until}");
        assert_eq!(
            e.authorize(use_at(&k, None, None, until)),
            Err(GrantError::NoGrant)
        );
        // A new grant ends the remembered denial at once.
        e.grant(k.clone(), 10_000, 1, None, until + 1);
        assert_eq!(e.authorize(use_at(&k, None, None, until + 2)), Ok(()));
    }

    #[test]
    fn a_replayed_jti_is_refused_within_the_window() {
        let mut e = point();
        let k = key("egress");
        e.grant(k.clone(), 600_000, 10, None, 0);
        assert_eq!(e.authorize(use_at(&k, Some("j1"), None, 1)), Ok(()));
        assert_eq!(
            e.authorize(use_at(&k, Some("j1"), None, 2)),
            Err(GrantError::Replay)
        );
        assert_eq!(e.authorize(use_at(&k, Some("j2"), None, 3)), Ok(()));
        assert_eq!(
            e.authorize(use_at(&k, Some("j1"), None, 60_002)),
            Ok(()),
            "after the window"
        );
    }

    #[test]
    fn a_bound_grant_refuses_another_sender_as_binding_drift() {
        let mut e = point();
        let k = key("egress");
        let alice = SenderBinding::JwkThumbprint("alice-thumb".into());
        let mallory = SenderBinding::JwkThumbprint("mallory-thumb".into());
        let mtls = SenderBinding::MtlsThumbprint("alice-thumb".into());
        e.grant(k.clone(), 10_000, 2, Some(alice.clone()), 0);
        assert_eq!(
            e.authorize(use_at(&k, None, Some(&mallory), 1)),
            Err(GrantError::BindingDrift)
        );
        assert_eq!(
            e.authorize(use_at(&k, None, Some(&mtls), 2)),
            Err(GrantError::BindingDrift)
        );
        assert_eq!(
            e.authorize(use_at(&k, None, None, 3)),
            Err(GrantError::BindingDrift)
        );
        assert_eq!(
            e.authorize(use_at(&k, None, Some(&alice), 4)),
            Ok(()),
            "drift spends no use"
        );
        assert_eq!(e.authorize(use_at(&k, None, Some(&alice), 5)), Ok(()));
    }

    #[test]
    fn grants_are_per_purpose() {
        let mut e = point();
        e.grant(key("egress"), 10_000, 1, None, 0);
        assert_eq!(
            e.authorize(use_at(&key("debug"), None, None, 1)),
            Err(GrantError::NoGrant)
        );
    }
}
