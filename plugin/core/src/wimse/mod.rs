//! WIMSE workload-to-workload authentication: the Workload Identity Token
//! (WIT, draft-ietf-wimse-workload-creds-02) names a workload and its proof
//! key; the Workload Proof Token (WPT, draft-ietf-wimse-wpt-01) proves, per
//! request, that the sender holds that key.

mod error;
mod issuers;
mod replay;
mod wit;
mod wpt;

pub use error::WimseError;
pub use issuers::{IssuersDocument, IssuersError, WitIssuers};
pub use replay::{
    BucketError, MAX_PER_BUCKET, MemoryReplay, RING_SECONDS, ReplayGuard, ReplayKey, SHARDS, admit,
    bucket_name, bucket_names,
};
pub use wit::{MAX_WIT_BYTES, VerifiedWit, WIT_TYPE, issue_wit, unverified_times, verify_wit};
pub use wpt::{
    CarriedTokens, MAX_WPT_BYTES, ProofRequest, VerifiedProof, WPT_TYPE, create_wpt, verify_wpt,
};

/// The header carrying the WIT.
pub const WIT_HEADER: &str = "workload-identity-token";
/// The header carrying the WPT.
pub const WPT_HEADER: &str = "workload-proof-token";
/// The header carrying an OAuth Transaction Token.
pub const TXN_TOKEN_HEADER: &str = "txn-token";
/// The most leeway a proof's `exp` gets, seconds.
pub const MAX_PROOF_LEEWAY_SECS: u64 = 5;

/// True when `token`'s header says it is a WIT (to name the mistake of
/// presenting one as a bearer token).
pub fn is_wit(token: &str) -> bool {
    crate::token::verify::decode(token, MAX_WIT_BYTES)
        .is_ok_and(|parts| wit::typed(&parts.header, WIT_TYPE))
}
