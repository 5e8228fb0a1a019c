//! `ephemera secrets uri`: canonical forms and error codes on the command line.

mod common;

use common::ephemera;

#[test]
fn a_valid_uri_prints_its_canonical_form() {
    let (code, out, _) = ephemera(&[
        "secrets",
        "uri",
        "OpenBao+KV2://secret/app/db?version=3#password",
    ]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), "openbao+kv2://secret/app/db#password?version=3");
}

#[test]
fn an_invalid_uri_exits_non_zero_with_its_error_code() {
    let cases = [
        (vec!["openbao+kv2://secret/../x"], "ILLEGAL_SEGMENT"),
        (vec!["openbao+kv2://secret/*"], "INVALID_WILDCARD"),
        (vec!["s3://b/k"], "UNSUPPORTED_ENGINE"),
        (
            vec!["openbao+kv2://secret/x?version=1&version=2"],
            "AMBIGUOUS_QUERY",
        ),
        (
            vec!["openbao+kv2://secret/x?mount=kv"],
            "DOUBLE_MOUNT_SOURCE",
        ),
        (
            vec!["openbao+kv2://other/x", "--allowed-mounts", "secret,kv"],
            "TENANT_MOUNT_MISMATCH",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["secrets", "uri"];
        all.extend(args.iter().copied());
        let (code, out, err) = ephemera(&all);
        assert_eq!(code, 1, "{args:?}");
        assert!(out.is_empty());
        assert!(err.starts_with(expected), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1);
    }
}
