"""A SPIRE-style application: the Python `spiffe` package (py-spiffe) as a
Workload API client, for ephemera's tests.

usage: workload_client.py fetch SOCKET AUDIENCE          -> {"spiffe_id", "token"}
       workload_client.py validate SOCKET AUDIENCE TOKEN -> the token's SPIFFE ID, or exit 1
       workload_client.py bundles SOCKET                 -> {trust domain: [key IDs]}
       workload_client.py watch SOCKET COUNT SECONDS     -> one line per bundle update; exit 1
                                                            unless COUNT arrive in time
       workload_client.py raw SOCKET CASE                -> "<gRPC status> <details>" for a request
                                                            py-spiffe would not send: no-header,
                                                            empty-audience, two-audiences, x509
"""

import json
import sys
import threading

import grpc
from spiffe import WorkloadApiClient
from spiffe._proto import workload_pb2, workload_pb2_grpc

HEADER = [("workload.spiffe.io", "true")]


def kids(bundle_set) -> dict:
    return {b.trust_domain.name: sorted(b.jwt_authorities) for b in bundle_set.bundles}


def raw(socket: str, case: str) -> str:
    stub = workload_pb2_grpc.SpiffeWorkloadAPIStub(grpc.insecure_channel(f"unix:{socket}"))
    calls = {
        "no-header": lambda: stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=["spiffe://example.org/billing"]), timeout=5
        ),
        "empty-audience": lambda: stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(audience=[]), metadata=HEADER, timeout=5
        ),
        "two-audiences": lambda: stub.FetchJWTSVID(
            workload_pb2.JWTSVIDRequest(
                audience=["spiffe://example.org/billing", "spiffe://example.org/orders"]
            ),
            metadata=HEADER,
            timeout=5,
        ),
        "x509": lambda: next(
            stub.FetchX509SVID(workload_pb2.X509SVIDRequest(), metadata=HEADER, timeout=5)
        ),
    }
    try:
        calls[case]()
    except grpc.RpcError as e:
        return f"{e.code().name} {e.details()}"
    return "OK"


def main(argv: list[str]) -> int:
    op, socket, *args = argv
    if op == "raw":
        print(raw(socket, args[0]))
        return 0
    client = WorkloadApiClient(socket_path=f"unix:{socket}", default_timeout=10)
    if op == "fetch":
        svid = client.fetch_jwt_svid(audience={args[0]})
        print(json.dumps({"spiffe_id": str(svid.spiffe_id), "token": svid.token}))
    elif op == "validate":
        try:
            svid = client.validate_jwt_svid(args[1], args[0])
        except Exception as e:  # py-spiffe wraps the gRPC status
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(svid.spiffe_id)
    elif op == "bundles":
        print(json.dumps(kids(client.fetch_jwt_bundles())))
    elif op == "watch":
        want, seconds = int(args[0]), float(args[1])
        seen = 0
        done = threading.Event()

        def on_success(bundle_set) -> None:
            nonlocal seen
            seen += 1
            print(f"update {json.dumps(kids(bundle_set))}", flush=True)
            if seen >= want:
                done.set()

        def on_error(err: Exception) -> None:
            print(f"error {err}", flush=True)

        handle = client.stream_jwt_bundles(on_success, on_error)
        print("watching", flush=True)
        ok = done.wait(seconds)
        handle.cancel()
        return 0 if ok else 1
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
