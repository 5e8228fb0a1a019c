//! The gate every read passes: negative cache, `jti` anti-replay, policy,
//! then the grant the policy asks for. Pure: the caller passes the time and
//! holds the gate under one lock. [`judge`] and [`Keys`] are the policy
//! half alone, for a shared state store that applies the same rules.

use super::config::SecretsConfig;
use super::resolve::{Plan, ResolveError};
use crate::secrets::grants::{
    Enforcement, EnforcementOptions, GrantError, GrantKey, SenderBinding, Use,
};
use crate::spiffe_id::SpiffeId;

/// One read, as the gate sees it.
#[derive(Debug, Clone, Copy)]
pub struct GateRequest<'a> {
    /// The secret's name.
    pub name: &'a str,
    /// The verified caller.
    pub caller: &'a SpiffeId,
    /// Why it is read (part of the grant key).
    pub purpose: &'a str,
    /// The presented token's `jti`, if a token was presented.
    pub jti: Option<&'a str>,
    /// The presenting sender, if it proved one.
    pub sender: Option<&'a SenderBinding>,
    /// Now, Unix milliseconds.
    pub now_ms: u64,
}

/// The keys a read's enforcement state lives under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// A policy refusal: about the ref (its policy), whatever the purpose.
    pub refusal: GrantKey,
    /// The grant: about the secret itself, whichever ref names it.
    pub grant: GrantKey,
}

impl Keys {
    /// The keys of `r` for `tenant`.
    pub fn of(tenant: &str, config: &SecretsConfig, r: &GateRequest<'_>) -> Self {
        let grant = GrantKey {
            subject: r.caller.clone(),
            tenant: tenant.to_owned(),
            secret: config
                .reference(r.name)
                .unwrap_or_else(|| format!("ref:{}", r.name)),
            purpose: r.purpose.to_owned(),
        };
        let refusal = GrantKey {
            secret: format!("ref:{}", r.name),
            purpose: String::new(),
            ..grant.clone()
        };
        Self { refusal, grant }
    }
}

/// What policy alone says of a read, and so what it needs from the
/// enforcement state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Refused by the policy: the refusal is remembered briefly.
    Refused(ResolveError),
    /// Allowed without a grant: only the token's `jti` is remembered.
    Plain(Plan),
    /// Allowed under a grant: one use of the caller's grant is spent, and
    /// a grant with these terms is opened when none is in force.
    Grant {
        /// What to read.
        plan: Plan,
        /// The grant's lifetime, milliseconds.
        ttl_ms: u64,
        /// Its uses.
        max_uses: u32,
    },
}

impl Verdict {
    /// True when deciding it needs replay or grant state (a `jti` was
    /// presented, or a grant is spent); otherwise the state only caches.
    pub fn needs_state(&self, jti: Option<&str>) -> bool {
        match self {
            Self::Refused(_) => false,
            Self::Plain(_) => jti.is_some(),
            Self::Grant { .. } => true,
        }
    }
}

/// Judges `r` by policy alone; an error needs no state (an unknown or
/// misconfigured secret, a purpose the grant does not name).
pub fn judge(config: &SecretsConfig, r: &GateRequest<'_>) -> Result<Verdict, ResolveError> {
    let plan = match config.plan(r.name, r.caller) {
        Err(denied @ ResolveError::NotAuthorized { .. }) => return Ok(Verdict::Refused(denied)),
        other => other?,
    };
    let Some(grant) = plan.grant.clone() else {
        return Ok(Verdict::Plain(plan));
    };
    if !grant.purposes.iter().any(|p| p == r.purpose) {
        return Err(GrantError::Purpose(r.purpose.to_owned()).into());
    }
    Ok(Verdict::Grant {
        plan,
        ttl_ms: grant.ttl_secs.saturating_mul(1000),
        max_uses: grant.max_uses,
    })
}

/// The enforcement point of one tenant, in memory.
#[derive(Debug)]
pub struct Gate {
    tenant: String,
    enforcement: Enforcement,
}

impl Gate {
    /// A gate for `tenant`.
    pub fn new(tenant: &str, options: EnforcementOptions) -> Self {
        Self {
            tenant: tenant.to_owned(),
            enforcement: Enforcement::new(options),
        }
    }

    /// Decides one read: a plan to read, or why not. A policy refusal is
    /// remembered briefly; a read under a grant policy spends one use of
    /// the caller's grant, opening one when none is in force.
    pub fn decide(
        &mut self,
        config: &SecretsConfig,
        r: &GateRequest<'_>,
    ) -> Result<Plan, ResolveError> {
        let keys = Keys::of(&self.tenant, config, r);
        let e = &mut self.enforcement;
        if e.recently_denied(&keys.refusal, r.now_ms) {
            return Err(GrantError::NegativelyCached.into());
        }
        if let Some(jti) = r.jti
            && e.replayed(jti, r.now_ms)
        {
            return Err(GrantError::Replay.into());
        }
        match judge(config, r)? {
            Verdict::Refused(denied) => {
                e.refuse(&keys.refusal, r.now_ms);
                Err(denied)
            }
            Verdict::Plain(plan) => {
                if let Some(jti) = r.jti {
                    e.remember_jti(jti, r.now_ms);
                }
                Ok(plan)
            }
            Verdict::Grant {
                plan,
                ttl_ms,
                max_uses,
            } => {
                if !e.has_grant(&keys.grant, r.now_ms) {
                    e.grant(
                        keys.grant.clone(),
                        ttl_ms,
                        max_uses,
                        r.sender.cloned(),
                        r.now_ms,
                    );
                }
                e.authorize(Use {
                    key: &keys.grant,
                    jti: r.jti,
                    sender: r.sender,
                    now_ms: r.now_ms,
                })?;
                Ok(plan)
            }
        }
    }

    /// Gives back the use a decided read spent, when nothing was read
    /// (the store was unreachable): a transient failure costs no budget.
    pub fn refund(&mut self, config: &SecretsConfig, r: &GateRequest<'_>) {
        let keys = Keys::of(&self.tenant, config, r);
        self.enforcement.refund(Use {
            key: &keys.grant,
            jti: r.jti,
            sender: r.sender,
            now_ms: r.now_ms,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
      "stores": {"files": {"backend": "file", "dir": "/run/secrets", "mount": "creds"}},
      "refs": {"once": {"store": "files", "path": "once", "policy": "granted"},
               "twice": {"store": "files", "path": "twice", "policy": "twice"},
               "open": {"store": "files", "path": "open", "policy": "plain"}},
      "policies": {"granted": {"allowed_principals": ["app"], "grant": {"ttl_secs": 10}},
                   "twice": {"allowed_principals": ["app"], "grant": {"ttl_secs": 10, "max_uses": 2}},
                   "plain": {"allowed_principals": ["app"]}},
      "principals": [{"match": "spiffe://e.org/app", "principal": "app"}]
    }"#;

    fn setup() -> (SecretsConfig, Gate, SpiffeId) {
        let options = EnforcementOptions {
            negative_ttl_ms: 1000,
            negative_jitter_ms: 0,
            replay_window_ms: 60_000,
        };
        (
            serde_json::from_str(CONFIG).unwrap(),
            Gate::new("acme", options),
            SpiffeId::parse("spiffe://e.org/app").unwrap(),
        )
    }

    fn read<'a>(
        name: &'a str,
        caller: &'a SpiffeId,
        jti: Option<&'a str>,
        now_ms: u64,
    ) -> GateRequest<'a> {
        GateRequest {
            name,
            caller,
            purpose: "egress",
            jti,
            sender: None,
            now_ms,
        }
    }

    fn refused(r: Result<Plan, ResolveError>) -> GrantError {
        match r {
            Err(ResolveError::Refused(e)) => e,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_grant_policy_allows_max_uses_reads_per_window() {
        let (c, mut g, app) = setup();
        assert!(g.decide(&c, &read("twice", &app, None, 0)).is_ok());
        assert!(g.decide(&c, &read("twice", &app, None, 1)).is_ok());
        assert_eq!(
            refused(g.decide(&c, &read("twice", &app, None, 2))),
            GrantError::Exhausted
        );
        // The window closes with the grant's TTL; the next read opens another.
        assert!(g.decide(&c, &read("twice", &app, None, 10_000)).is_ok());
        // Grants are per secret: `once` has its own budget of one.
        assert!(g.decide(&c, &read("once", &app, None, 10_000)).is_ok());
        assert_eq!(
            refused(g.decide(&c, &read("once", &app, None, 10_001))),
            GrantError::Exhausted
        );
    }

    #[test]
    fn a_purpose_the_policy_does_not_name_gets_no_grant() {
        let (c, mut g, app) = setup();
        let mut other = read("once", &app, None, 0);
        other.purpose = "backup";
        assert_eq!(
            refused(g.decide(&c, &other)),
            GrantError::Purpose("backup".into())
        );
        assert!(g.decide(&c, &read("once", &app, None, 1)).is_ok());
        assert_eq!(
            refused(g.decide(&c, &other)),
            GrantError::Purpose("backup".into()),
            "naming a new purpose buys no new budget"
        );
    }

    #[test]
    fn refs_without_a_grant_policy_are_read_every_time() {
        let (c, mut g, app) = setup();
        for t in 0..5 {
            assert!(g.decide(&c, &read("open", &app, None, t)).is_ok());
        }
    }

    #[test]
    fn a_policy_refusal_is_remembered_briefly_for_that_ref() {
        let (c, mut g, _) = setup();
        let other = SpiffeId::parse("spiffe://e.org/other").unwrap();
        assert!(matches!(
            g.decide(&c, &read("open", &other, None, 0)),
            Err(ResolveError::NotAuthorized { .. })
        ));
        assert_eq!(
            refused(g.decide(&c, &read("open", &other, None, 500))),
            GrantError::NegativelyCached
        );
        assert!(
            matches!(
                g.decide(&c, &read("once", &other, None, 500)),
                Err(ResolveError::NotAuthorized { .. })
            ),
            "another ref is decided by its own policy"
        );
        assert!(matches!(
            g.decide(&c, &read("open", &other, None, 1500)),
            Err(ResolveError::NotAuthorized { .. })
        ));
    }

    #[test]
    fn a_refusal_is_remembered_whatever_purpose_the_caller_names_next() {
        let (c, mut g, _) = setup();
        let other = SpiffeId::parse("spiffe://e.org/other").unwrap();
        assert!(g.decide(&c, &read("open", &other, None, 0)).is_err());
        let mut renamed = read("open", &other, None, 1);
        renamed.purpose = "anything-else";
        assert_eq!(
            refused(g.decide(&c, &renamed)),
            GrantError::NegativelyCached
        );
    }

    #[test]
    fn a_read_that_found_the_store_unreachable_costs_no_use_and_no_jti() {
        let (c, mut g, app) = setup();
        let first = read("once", &app, Some("j1"), 0);
        assert!(g.decide(&c, &first).is_ok());
        g.refund(&c, &first);
        let again = read("once", &app, Some("j1"), 1);
        assert!(g.decide(&c, &again).is_ok(), "the same token reads again");
        assert_eq!(
            refused(g.decide(&c, &read("once", &app, Some("j2"), 2))),
            GrantError::Exhausted,
            "one refund, one use"
        );
    }

    #[test]
    fn a_replayed_jti_is_refused_even_without_a_grant_policy() {
        let (c, mut g, app) = setup();
        assert!(g.decide(&c, &read("open", &app, Some("j1"), 0)).is_ok());
        assert_eq!(
            refused(g.decide(&c, &read("open", &app, Some("j1"), 1))),
            GrantError::Replay
        );
        assert!(g.decide(&c, &read("open", &app, Some("j2"), 2)).is_ok());
    }

    #[test]
    fn a_grant_opened_by_one_sender_refuses_another() {
        let (c, mut g, app) = setup();
        let a = SenderBinding::JwkThumbprint("a".into());
        let b = SenderBinding::JwkThumbprint("b".into());
        let mut first = read("twice", &app, None, 0);
        first.sender = Some(&a);
        assert!(g.decide(&c, &first).is_ok());
        let mut drift = read("twice", &app, None, 1);
        drift.sender = Some(&b);
        assert_eq!(refused(g.decide(&c, &drift)), GrantError::BindingDrift);
        first.now_ms = 2;
        assert!(g.decide(&c, &first).is_ok(), "the bound sender still reads");
    }
}
