//! The shim's IPT policy: which callers may take which action on which
//! resources, through which broker. Anything not allowed is denied.

use ephemera_core::SpiffeId;
use ephemera_core::filter::CallerPattern;
use ephemera_core::ipt::{Action, Resource};
use serde::Deserialize;

/// A resource pattern: exact, or `prefix/*` for everything below `prefix/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourcePattern(String);

impl ResourcePattern {
    /// True when `resource` is covered.
    pub fn matches(&self, resource: &Resource) -> bool {
        match self.0.strip_suffix('*') {
            Some(prefix) => resource.as_str().starts_with(prefix),
            None => resource.as_str() == self.0,
        }
    }
}

impl<'de> Deserialize<'de> for ResourcePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let concrete = text.strip_suffix("/*").unwrap_or(&text);
        Resource::parse(concrete).map_err(|e| {
            serde::de::Error::custom(format_args!("resource pattern {text:?}: {e}"))
        })?;
        let stored = match text.strip_suffix('*') {
            Some(prefix) => format!("{prefix}*"),
            None => text,
        };
        Ok(Self(stored))
    }
}

/// One allow rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Callers it admits.
    pub callers: Vec<CallerPattern>,
    /// Resources it covers.
    pub resources: Vec<ResourcePattern>,
    /// Actions it allows.
    pub actions: Vec<Action>,
    /// The broker that issues for it.
    pub broker: String,
}

/// True when some rule admits this caller, resource, action and broker.
pub fn allows(
    rules: &[Rule],
    caller: &SpiffeId,
    resource: &Resource,
    action: &Action,
    broker: &str,
) -> bool {
    rules.iter().any(|r| {
        r.broker == broker
            && r.callers.iter().any(|c| c.matches(caller))
            && r.resources.iter().any(|p| p.matches(resource))
            && r.actions.contains(action)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_explicit_rule_allows() {
        let rules: Vec<Rule> = serde_yaml_ng::from_str(
            "- {callers: ['spiffe://e.org/orders'], resources: ['secret/data/orders/*'], actions: [read], broker: vault}\n",
        )
        .unwrap();
        let orders = SpiffeId::parse("spiffe://e.org/orders").unwrap();
        let other = SpiffeId::parse("spiffe://e.org/other").unwrap();
        let r = Resource::parse("secret/data/orders/a").unwrap();
        let sibling = Resource::parse("secret/data/ordersX/a").unwrap();
        assert!(allows(&rules, &orders, &r, &Action::Read, "vault"));
        assert!(!allows(&rules, &other, &r, &Action::Read, "vault"));
        assert!(!allows(&rules, &orders, &r, &Action::Write, "vault"));
        assert!(!allows(&rules, &orders, &sibling, &Action::Read, "vault"));
        assert!(!allows(&rules, &orders, &r, &Action::Read, "aws"));
    }
}
