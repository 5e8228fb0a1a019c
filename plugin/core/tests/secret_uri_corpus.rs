//! The secret URI corpus: each input with its expected canonical form or
//! error code. `tenant` marks inputs checked against the allowed mounts
//! `secret` and `kv`.

use ephemera_core::secrets::uri::SecretUri;

enum Tenant {
    Any,
    Mounts,
}
use Tenant::{Any, Mounts};

const OK: &str = "";

/// (input, tenant, expected canonical form — or the error code).
const CORPUS: &[(&str, Tenant, &str, &str)] = &[
    // Valid, already canonical.
    (
        "openbao+kv2://secret/app/db#password",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password",
    ),
    (
        "openbao+kv2://secret/app/db#password?version=3",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password?version=3",
    ),
    (
        "hashicorp+kv2://kv/team/api_key#value",
        Any,
        OK,
        "hashicorp+kv2://kv/team/api_key#value",
    ),
    (
        "file://creds/db/password",
        Any,
        OK,
        "file://creds/db/password",
    ),
    ("openbao+kv2://secret/a", Any, OK, "openbao+kv2://secret/a"),
    (
        "openbao+kv2://secret/a/b/c/d/e",
        Any,
        OK,
        "openbao+kv2://secret/a/b/c/d/e",
    ),
    (
        "openbao+kv2://secret/a.b-c_d/E9",
        Any,
        OK,
        "openbao+kv2://secret/a.b-c_d/E9",
    ),
    (
        "openbao+kv2://secret/marketdata/databento/api_key#key?version=12",
        Any,
        OK,
        "openbao+kv2://secret/marketdata/databento/api_key#key?version=12",
    ),
    ("file://m/x", Any, OK, "file://m/x"),
    (
        "openbao+kv2://secret/app/db?version=2",
        Any,
        OK,
        "openbao+kv2://secret/app/db?version=2",
    ),
    // Valid, canonicalized: scheme case, query before fragment, key case, alias.
    (
        "OPENBAO+KV2://secret/app/db#password",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password",
    ),
    (
        "OpenBao+Kv2://secret/app/db",
        Any,
        OK,
        "openbao+kv2://secret/app/db",
    ),
    ("File://creds/db", Any, OK, "file://creds/db"),
    ("HashiCorp+KV2://kv/a#f", Any, OK, "hashicorp+kv2://kv/a#f"),
    (
        "openbao+kv2://secret/app/db?version=3#password",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password?version=3",
    ),
    (
        "openbao+kv2://secret/app/db#password?VERSION=3",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password?version=3",
    ),
    // Deliberate deviations from the reference (README, "Secret URIs"):
    // the field may follow the query; query keys are case-insensitive.
    (
        "openbao+kv2://secret/app/db?version=3#password",
        Any,
        OK,
        "openbao+kv2://secret/app/db#password?version=3",
    ),
    // Case matters in mounts, paths and fields (they are distinct secrets).
    (
        "openbao+kv2://Secret/App/DB#Password",
        Any,
        OK,
        "openbao+kv2://Secret/App/DB#Password",
    ),
    // Tenant mounts.
    (
        "openbao+kv2://secret/app/db",
        Mounts,
        OK,
        "openbao+kv2://secret/app/db",
    ),
    (
        "hashicorp+kv2://kv/app/db",
        Mounts,
        OK,
        "hashicorp+kv2://kv/app/db",
    ),
    (
        "openbao+kv2://other/app/db",
        Mounts,
        "TENANT_MOUNT_MISMATCH",
        "",
    ),
    ("file://creds/db", Mounts, "TENANT_MOUNT_MISMATCH", ""),
    (
        "openbao+kv2://Secret/app/db",
        Mounts,
        "TENANT_MOUNT_MISMATCH",
        "",
    ),
    (
        "openbao+kv2://secrets/app/db",
        Mounts,
        "TENANT_MOUNT_MISMATCH",
        "",
    ),
    // Traversal and relative segments.
    (
        "openbao+kv2://secret/../admin/db",
        Any,
        "ILLEGAL_SEGMENT",
        "",
    ),
    (
        "openbao+kv2://secret/app/../../x",
        Any,
        "ILLEGAL_SEGMENT",
        "",
    ),
    ("openbao+kv2://secret/./db", Any, "ILLEGAL_SEGMENT", ""),
    ("file://creds/../etc/passwd", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://../secret/db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/app/..", Any, "ILLEGAL_SEGMENT", ""),
    // Encoded slashes and other percent-encoding.
    ("openbao+kv2://secret/app%2fdb", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/app%2Fdb", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/%2e%2e/db", Any, "ILLEGAL_SEGMENT", ""),
    ("file://creds/a%20b", Any, "ILLEGAL_SEGMENT", ""),
    (
        "openbao+kv2://secret/db#pass%77ord",
        Any,
        "ILLEGAL_SEGMENT",
        "",
    ),
    // Wildcards.
    ("openbao+kv2://secret/*", Any, "INVALID_WILDCARD", ""),
    ("openbao+kv2://secret/app/*/db", Any, "INVALID_WILDCARD", ""),
    ("openbao+kv2://*/app", Any, "INVALID_WILDCARD", ""),
    ("openbao+kv2://secret/app/db#*", Any, "INVALID_WILDCARD", ""),
    ("file://creds/*", Any, "INVALID_WILDCARD", ""),
    // Empty segments and missing parts.
    ("openbao+kv2://secret//db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/db/", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2:///secret/db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/db#", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/a b", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/caf\u{e9}", Any, "ILLEGAL_SEGMENT", ""),
    // Fragments.
    ("openbao+kv2://secret/db#a#b", Any, "ILLEGAL_SEGMENT", ""),
    (
        "openbao+kv2://secret/db#a?version=1#b",
        Any,
        "ILLEGAL_SEGMENT",
        "",
    ),
    ("file://creds/db#field", Any, "ILLEGAL_SEGMENT", ""),
    // Queries.
    (
        "openbao+kv2://secret/db?version=1&version=2",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=1&VERSION=2",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=1?version=2",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=0",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=-1",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=latest",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/db?color=red",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    ("file://creds/db?version=1", Any, "AMBIGUOUS_QUERY", ""),
    // Mount in the query.
    (
        "openbao+kv2://secret/db?mount=other",
        Any,
        "DOUBLE_MOUNT_SOURCE",
        "",
    ),
    (
        "openbao+kv2://secret/db?version=1&mount=secret",
        Any,
        "DOUBLE_MOUNT_SOURCE",
        "",
    ),
    (
        "openbao+kv2://secret/db?MOUNT=x",
        Any,
        "DOUBLE_MOUNT_SOURCE",
        "",
    ),
    // Unknown providers and engines.
    ("openbao+kv1://secret/db", Any, "UNSUPPORTED_ENGINE", ""),
    ("openbao://secret/db", Any, "UNSUPPORTED_ENGINE", ""),
    ("hashicorp+transit://k/x", Any, "UNSUPPORTED_ENGINE", ""),
    ("s3://bucket/key", Any, "UNSUPPORTED_ENGINE", ""),
    (
        "https://vault.example/v1/secret/db",
        Any,
        "UNSUPPORTED_ENGINE",
        "",
    ),
    // `vault` is no provider of the reference's: no alias for hashicorp.
    ("vault+kv2://kv/a#f", Any, "UNSUPPORTED_ENGINE", ""),
    // Malformed scheme separators name no scheme at all.
    ("secret/app/db", Any, "ILLEGAL_SEGMENT", ""),
    ("", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2:/secret/app/db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2//secret/app/db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2:secret/app/db", Any, "ILLEGAL_SEGMENT", ""),
    ("://secret/app/db", Any, "ILLEGAL_SEGMENT", ""),
    // `..` anywhere in a segment, as in the reference.
    ("openbao+kv2://secret/a..b/db", Any, "ILLEGAL_SEGMENT", ""),
    ("openbao+kv2://secret/app/db..", Any, "ILLEGAL_SEGMENT", ""),
    ("file://creds/..hidden", Any, "ILLEGAL_SEGMENT", ""),
    // Deliberate deviations: stricter than the reference.
    ("openbao+kv2://secret/app/db/", Any, "ILLEGAL_SEGMENT", ""),
    (
        "openbao+kv2://secret/app/db?owner=ops",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/app/db?version",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "openbao+kv2://secret/app/db#pass*",
        Any,
        "INVALID_WILDCARD",
        "",
    ),
    (
        "openbao+kv2://secret/app/db#pa/ss",
        Any,
        "ILLEGAL_SEGMENT",
        "",
    ),
    ("db://secret/app/db", Any, "UNSUPPORTED_ENGINE", ""),
    ("yaml://secret/app/db", Any, "UNSUPPORTED_ENGINE", ""),
    ("db+cred://secret/app/db", Any, "UNSUPPORTED_ENGINE", ""),
    ("bootstrap://secret/app/db", Any, "UNSUPPORTED_ENGINE", ""),
    (
        "openbao+kv2://secret/app/db?version=latest",
        Any,
        "AMBIGUOUS_QUERY",
        "",
    ),
    (
        "aws+secretsmanager://prod/db",
        Any,
        "UNSUPPORTED_ENGINE",
        "",
    ),
];

#[test]
fn the_corpus_has_at_least_sixty_inputs_of_every_kind() {
    assert!(CORPUS.len() >= 60, "{}", CORPUS.len());
    for code in [
        "ILLEGAL_SEGMENT",
        "INVALID_WILDCARD",
        "UNSUPPORTED_ENGINE",
        "AMBIGUOUS_QUERY",
        "DOUBLE_MOUNT_SOURCE",
        "TENANT_MOUNT_MISMATCH",
    ] {
        assert!(CORPUS.iter().any(|c| c.2 == code), "{code}");
    }
}

#[test]
fn every_corpus_input_gets_its_canonical_form_or_its_error_code() {
    let mounts = vec!["secret".to_owned(), "kv".to_owned()];
    for (input, tenant, code, canonical) in CORPUS {
        let allowed = match tenant {
            Any => None,
            Mounts => Some(mounts.as_slice()),
        };
        match SecretUri::parse(input, allowed) {
            Ok(uri) => {
                assert_eq!(*code, OK, "{input:?} was accepted as {uri}");
                assert_eq!(uri.to_string(), *canonical, "{input:?}");
                // Canonical forms are fixed points.
                assert_eq!(
                    SecretUri::parse(canonical, allowed).unwrap().to_string(),
                    *canonical
                );
            }
            Err(e) => {
                assert_eq!(e.code(), *code, "{input:?}: {e}");
                assert!(e.to_string().starts_with(code), "{e}");
            }
        }
    }
}

#[test]
fn parts_are_available_after_parsing() {
    let uri = SecretUri::parse("openbao+kv2://secret/app/db#password?version=3", None).unwrap();
    assert_eq!(uri.mount(), "secret");
    assert_eq!(uri.path(), "app/db");
    assert_eq!(uri.field(), Some("password"));
    assert_eq!(uri.version(), Some(3));
}
