"""Writes each fuzz target's seed corpus from the test fixtures (run by
tests/fuzz.sh when a target's corpus folder is empty)."""

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURES = json.loads((HERE.parent / "tests/data/spiffile-fixtures.json").read_text())

TOKEN = FIXTURES["token_orders_to_billing_exp_2035"]
HEADER = b'{"alg":"ES256","kid":"%s","typ":"JWT"}' % FIXTURES["orders_jwk"]["kid"].encode()
CLAIMS = (b'{"sub":"spiffe://example.org/orders","aud":"spiffe://example.org/billing",'
          b'"iat":1999999000,"exp":2000000060,"jti":"j1"}')
WIT_CLAIMS = (b'{"sub":"spiffe://example.org/orders","exp":2000003600,"iat":1999999000,'
              b'"cnf":{"jwk":{"kty":"EC","crv":"P-256","x":"%s","y":"%s","alg":"ES256"}}}'
              % (FIXTURES["billing_jwk"]["x"].encode(), FIXTURES["billing_jwk"]["y"].encode()))
WPT_CLAIMS = b'{"aud":"https://billing.example.org/a","exp":2000000030,"jti":"p1","wth":"x","ath":"y","oth":{"x-session":"z"}}'

SEEDS = {
    "token_verify": [TOKEN.encode(), FIXTURES["token_orders_to_billing_multi_aud_exp_2035"].encode()],
    "token_signed": [HEADER + b"\xff" + CLAIMS,
                     HEADER + b"\xff" + CLAIMS.replace(b'"aud":"spiffe://example.org/billing"',
                                                       b'"aud":["spiffe://example.org/billing"]')],
    "bundle_parse": [json.dumps(FIXTURES["bundle"]).encode(),
                     json.dumps({"keys": [FIXTURES["orders_jwk"] | {"use": "jwt-svid"}],
                                 "spiffe_sequence": 3, "spiffe_refresh_hint": 300}).encode(),
                     json.dumps({"trust_domain": "example.org", "keys": [FIXTURES["orders_jwk"]],
                                 "bindings": {"spiffe://example.org/orders": "jkt"}}).encode()],
    "filter_config": [
        b'{"direction":"inbound"}',
        json.dumps({"direction": "inbound", "inbound": {
            "unauthenticated": ["/healthz"],
            "routes": [{"path": "/admin/*", "allow": ["spiffe://example.org/ops"]}],
            "transactions": [{"path": "/objects/{bucket}/{key*}", "resource": "arn:aws:s3:::{bucket}/{key}",
                              "broker": "aws", "credential_headers": {"access_key_id": "x-aws-key"}}],
            "wimse": {"origin": "https://billing.example.org", "other_tokens": ["x-session"]}}}).encode(),
        json.dumps({"direction": "outbound", "outbound": {
            "hosts": {"billing": "spiffe://example.org/billing"},
            "secrets": [{"host": "api.example.com", "secret": "api-key", "inject": {"as": "bearer"}}],
            "wimse": {"origins": {"audit": "https://audit.example.org"}}}}).encode(),
    ],
    "shim_configs": [
        b"inbound:\n  routes:\n    - { path: /admin/*, allow: [\"spiffe://example.org/ops\"] }\n"
        b"outbound:\n  destinations:\n    - { host: billing, address: \"127.0.0.1:1\", spiffe_id: \"spiffe://example.org/billing\", auth: wimse }\n",
        b"ledger: { path: /tmp/l.jsonl, signing_key_file: /tmp/k }\nbrokers:\n  vault: { kind: openbao, address: \"http://127.0.0.1:8200\", token_file: /tmp/t }\n"
        b"policy:\n  - { callers: [\"spiffe://example.org/orders\"], resources: [\"secret/data/orders/*\"], actions: [read], broker: vault }\n",
        b"stores:\n  bao: { backend: openbao, address: \"http://127.0.0.1:8200\", mount: secret }\n"
        b"refs:\n  db: { uri: \"openbao+kv2://secret/app/db#password\", policy: readers }\n"
        b"policies:\n  readers: { allowed_principals: [orders], grant: { ttl_secs: 60, max_uses: 2 } }\n",
    ],
    "secret_uri": [b"openbao+kv2://secret/app/db#password?version=3", b"aws+sm://prod/db#password",
                   b"gopass://team/api/key", b"openbao+kv2://tenant-a/secret/x#y"],
    "path_template": [b"/objects/{bucket}/{key*}\n/objects/b/a/b/c", b"/orders/{name}\n/ORDERS/x?y=1"],
    "shim_bodies": [
        json.dumps({"transaction_id": "6f1c3d2e-8a4b-4c5d-9e6f-7a8b9c0d1e2f", "token": TOKEN,
                    "resource": "secret/data/orders/a", "action": "read", "broker": "vault"}).encode(),
        b'{"outcome":{"kind":"responded","status":200}}',
        b'{"name":"api-key","purpose":"egress"}',
    ],
    "strict_json": [json.dumps(FIXTURES["bundle"]).encode(), b'{"a":1,"a":2}', b'[1,2.5e3,"x",null,true]'],
    "wimse_tokens": [b"\x00" + b'{"typ":"wit+jwt","alg":"ES256"}' + b"\xff" + WIT_CLAIMS,
                     b"\x01" + b'{"typ":"wpt+jwt","alg":"ES256"}' + b"\xff" + WPT_CLAIMS],
    "admission_review": [
        b"\x00" + json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE", "namespace": "shop", "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller"},
            "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"generateName": "orders-7d9f-", "namespace": "shop",
                                                                       "labels": {"app": "orders"}},
                       "spec": {"serviceAccountName": "orders", "containers": [{"name": "app", "image": "shop/orders:1",
                                                                                "ports": [{"containerPort": 8080}]}]}}}}).encode(),
        b"\x03apiVersion: apps/v1\nkind: Deployment\nmetadata: { name: orders, namespace: shop }\nspec:\n  selector: { matchLabels: { app: orders } }\n"
        b"  template:\n    metadata: { labels: { app: orders } }\n    spec:\n      containers: [ { name: app, image: shop/orders:1, ports: [ { containerPort: 8080 } ] } ]\n"
        b"---\napiVersion: v1\nkind: Service\nmetadata: { name: orders }\nspec: { selector: { app: orders }, ports: [ { port: 80, targetPort: 8080 } ] }\n",
    ],
}


def main(target: str, folder: str) -> None:
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(SEEDS[target]):
        (out / f"seed-{i}").write_bytes(seed)


if __name__ == "__main__":
    main(*sys.argv[1:])
