//! Talking to credential and secret providers: HTTP clients built one way
//! for all of them, and the OpenBao/Vault connection the broker, the KV
//! store and the ledger checkpoints share.

pub mod http;
pub mod openbao;
