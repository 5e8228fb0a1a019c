//! The audience a JWT-SVID must carry to ask a workload's shim for secrets:
//! the workload's ID with `/ephemera-secrets` appended. Tokens other
//! services send the workload carry the workload's own ID, so the workload
//! cannot turn them into secret reads as their senders.

use crate::spiffe_id::{SpiffeId, SpiffeIdError};

// The path segment that marks the secrets audience.
const SECRETS_SEGMENT: &str = "ephemera-secrets";

/// The secrets audience of `workload`.
pub fn secrets_audience(workload: &SpiffeId) -> Result<SpiffeId, SpiffeIdError> {
    SpiffeId::parse(&format!("{}/{SECRETS_SEGMENT}", workload.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secrets_audience_is_never_the_workload_itself() {
        let api = SpiffeId::parse("spiffe://example.org/api").unwrap();
        let audience = secrets_audience(&api).unwrap();
        assert_eq!(
            audience.as_str(),
            "spiffe://example.org/api/ephemera-secrets"
        );
        assert_ne!(audience, api);
        let root = SpiffeId::parse("spiffe://example.org").unwrap();
        assert_eq!(
            secrets_audience(&root).unwrap().as_str(),
            "spiffe://example.org/ephemera-secrets"
        );
    }
}
