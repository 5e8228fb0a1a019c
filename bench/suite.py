"""ephemera's benchmark suite (run through bench/run, which builds what it needs).

Everything runs on 127.0.0.1. Envoy runs with one worker pinned to CPU 0 and
wrk runs on CPU 1; variants are measured in interleaved rounds (A B C, A B C,
...) so drift on a noisy machine hits every variant alike. Each throughput row
gives the median and min-max req/s over the rounds, the median p50/p99
latency, and Envoy's CPU microseconds per request (utime+stime from /proc
over the measured interval, the steadier figure). Ratios are taken between
rows of the same run. Then: memory, revocation latency (one node, and fanned
out to three through the bundle store in PostgreSQL), IPT through Envoy
against the same OpenBao calls made directly, durable ledger appends
beside pymayfly's FileAuditLedger (no fsync) and on a PostgreSQL table, and
secret reads with the
enforcement state in memory and in Redis.

usage: suite.py [--rounds N] [--seconds S] [--only a,b,...] [--skip memory,revocation,fanout,ipt,ledger,secrets]
"""

import argparse
import base64
import datetime
import hashlib
import http.client
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

REPO = Path(__file__).resolve().parent.parent
E = str(REPO / "target/release/ephemera")
WASM = REPO / "target/wasm32-wasip1/release/ephemera_envoy.wasm"
FLOOR = REPO / "target/wasm32-wasip1/release/ephemera_bench_floor.wasm"
PORT, ADMIN = 19000, 19001
TD = "example.org"
ORDERS, BILLING = f"spiffe://{TD}/orders", f"spiffe://{TD}/billing"
POOL = 20_000
# Proofs per WIMSE run: more than any run sends (each is single-use).
PROOFS = 150_000
WIMSE_ORIGIN = "http://bench"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def run(*args, env=None, check=True) -> str:
    out = subprocess.run(args, capture_output=True, text=True, env=env)
    if check and out.returncode != 0:
        # The command may carry a token: only its program is named.
        sys.exit(f"{args[0]} … failed:\n{out.stdout}{out.stderr}")
    return out.stdout


class Identities:
    """A trust domain made with the ephemera CLI, and tokens minted for it."""

    def __init__(self, work: Path):
        self.root = work / "root"
        run(E, "identity", "init", str(self.root), "--trust-domain", TD)
        for name in ("orders", "billing"):
            run(E, "identity", "add", str(self.root), name)
        issuer = work / "wit-issuer.pem"
        run(E, "identity", "wit-issuer", str(self.root), "--key", str(issuer))
        for name in ("orders", "billing"):
            run(E, "identity", "wit", str(self.root), name, "--issuer-key", str(issuer))

    def env(self, service: str) -> dict:
        env = dict(os.environ)
        for line in run(E, "identity", "env", str(self.root), service).splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'\"")
        return env

    def mint(self, service: str, audience: str = BILLING, ttl: int = 3600) -> str:
        return run(E, "token", "mint", "--audience", audience, "--ttl", str(ttl),
                   env=self.env(service)).strip()

    def jwks(self, service_id: str) -> str:
        bundle = json.loads((self.root / "bundle.json").read_text())
        return json.dumps({"keys": bundle["identities"][service_id]["keys"]})

    def tokens(self, count: int, audience: str = BILLING, ttl: int = 3600, tag: str = "bench"):
        """`count` distinct tokens of orders for `audience`, signed with
        orders' key exactly as `token mint` signs them."""
        key = serialization.load_pem_private_key(
            (self.root / "services/orders/key.pem").read_bytes(), password=None)
        kid = json.loads(self.jwks(ORDERS))["keys"][0]["kid"]
        header = b64(json.dumps({"alg": "ES256", "kid": kid, "typ": "JWT"}).encode())
        now = int(time.time())
        for i in range(count):
            claims = {"sub": ORDERS, "aud": audience, "iat": now, "exp": now + ttl,
                      "jti": f"{tag}-{i}"}
            signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
            r, s = decode_dss_signature(
                key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
            yield f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def wit(self) -> str:
        return (self.root / "services/orders/wit.jwt").read_text().strip()

    def proofs(self, count: int, path: Path, ttl: int = 55) -> None:
        """`count` distinct WIMSE proofs of orders for `WIMSE_ORIGIN/`, one
        per line, signed with its proof key as the outbound filter signs them."""
        key = serialization.load_pem_private_key(
            (self.root / "services/orders/wit-key.pem").read_bytes(), password=None)
        header = b64(json.dumps({"typ": "wpt+jwt", "alg": "ES256"}).encode())
        wth = b64(hashlib.sha256(self.wit().encode()).digest())
        exp = int(time.time()) + ttl
        with path.open("w") as out:
            for i in range(count):
                claims = {"aud": f"{WIMSE_ORIGIN}/", "exp": exp, "jti": f"p{i}", "wth": wth}
                signing_input = f"{header}.{b64(json.dumps(claims).encode())}"
                r, s = decode_dss_signature(
                    key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
                out.write(f"{signing_input}.{b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}\n")

    def pool(self, count: int, path: Path) -> None:
        """`count` distinct tokens of orders for billing, one per line."""
        with path.open("w") as out:
            for token in self.tokens(count):
                out.write(f"{token}\n")


def wasm_filter(name: str, root_id: str, code: Path, configuration: str) -> dict:
    return {"name": name, "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
        "config": {"root_id": root_id, "vm_config": {
            "vm_id": name, "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": str(code)}}},
            "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": configuration}}}}


def jwt_authn(jwks: str, cache: bool) -> dict:
    provider = {"audiences": [BILLING], "local_jwks": {"inline_string": jwks},
                "forward": False,
                "claim_to_headers": [{"header_name": "x-ephemera-caller", "claim_name": "sub"}]}
    if cache:
        provider["jwt_cache_config"] = {"jwt_cache_size": 1024}
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"spiffile": provider},
        "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "spiffile"}}]}}


RULES = {"unauthenticated": ["/healthz"],
         "routes": [{"path": "/admin/*", "allow": [f"spiffe://{TD}/ops"]},
                    {"path": "/*", "allow": [ORDERS]}]}


def ephemera_inbound(crypto="auto", **inbound) -> dict:
    return wasm_filter("ephemera", "ephemera_inbound", WASM, json.dumps(
        {"direction": "inbound", "crypto": crypto, "inbound": inbound}))


def ephemera_wimse_outbound() -> dict:
    return wasm_filter("ephemera", "ephemera_outbound", WASM, json.dumps(
        {"direction": "outbound", "outbound": {"wimse": {"origins": {"127.0.0.1": WIMSE_ORIGIN}}}}))


def ephemera_outbound(reuse_secs: int) -> dict:
    return wasm_filter("ephemera", "ephemera_outbound", WASM, json.dumps(
        {"direction": "outbound",
         "outbound": {"hosts": {"127.0.0.1": ORDERS}, "reuse_secs": reuse_secs}}))


# name -> (filter or None, load: one | pool | outbound, what it is)
def variants(ids: Identities) -> dict:
    jwks = ids.jwks(ORDERS)
    return {
        "none": (None, "one", "Envoy, no filter"),
        "noop": (wasm_filter("floor", "floor", FLOOR, "noop"), "one",
                 "Wasm floor: a filter that only continues"),
        "essential": (wasm_filter("floor", "floor", FLOOR, "essential"), "one",
                      "Wasm floor: read authorization, remove it, set the caller"),
        "jwt_authn-cache": (jwt_authn(jwks, True), "one", "native jwt_authn with its cache, one token"),
        "jwt_authn": (jwt_authn(jwks, False), "pool", "native jwt_authn, no cache, distinct tokens"),
        "warm": (ephemera_inbound(), "one", "ephemera inbound, one token (cache hit)"),
        "warm-rules": (ephemera_inbound(**RULES), "one",
                       "ephemera inbound, one token, route rules and an unauthenticated path"),
        "cold": (ephemera_inbound(), "pool", "ephemera inbound, distinct tokens, native verify_signature"),
        "cold-rules": (ephemera_inbound(**RULES), "pool", "ephemera inbound, distinct tokens, route rules"),
        "cold-rust": (ephemera_inbound(crypto="rust"), "pool",
                      "ephemera inbound, distinct tokens, pure-Rust p256 in the VM"),
        **before(),
        "wimse": (ephemera_inbound(wimse={"origin": WIMSE_ORIGIN}), "wimse",
                  "ephemera inbound, WIMSE: the WIT (verified once, then cached) and a fresh proof per request"),
        "out-wimse": (ephemera_wimse_outbound(), "outbound",
                      "ephemera outbound, the WIT and a proof signed per request"),
        "out-mint": (ephemera_outbound(0), "outbound", "ephemera outbound, a token minted per request"),
        "out-reuse": (ephemera_outbound(30), "outbound", "ephemera outbound, token reused (30 s)"),
    }


def before() -> dict:
    """With EPHEMERA_WASM_BEFORE=<an earlier build of the filter>: the same
    inbound rows for it, to compare a change side by side."""
    wasm = os.environ.get("EPHEMERA_WASM_BEFORE")
    if not wasm:
        return {}

    def inbound(**config):
        return wasm_filter("ephemera", "ephemera_inbound", Path(wasm), json.dumps(
            {"direction": "inbound", "inbound": config}))

    return {"warm-before": (inbound(), "one", "the earlier build, one token (cache hit)"),
            "cold-before": (inbound(), "pool", "the earlier build, distinct tokens")}


def bootstrap(filters: list, shim: Path, port: int = PORT, admin: int = ADMIN) -> dict:
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
           "stat_prefix": "bench",
           "route_config": {"virtual_hosts": [{"name": "a", "domains": ["*"], "routes": [
               {"match": {"prefix": "/"},
                "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
           "http_filters": filters + [{"name": "envoy.filters.http.router", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                           "filter_chains": [{"filters": [{"name": "hcm", "typed_config": hcm}]}]}],
            "clusters": [{"name": "ephemera_shim", "type": "STATIC", "connect_timeout": "1s",
                          "load_assignment": {"cluster_name": "ephemera_shim", "endpoints": [{
                              "lb_endpoints": [{"endpoint": {"address": {"pipe": {"path": str(shim)}}}}]}]}}]},
    }


def status(headers: dict, path: str = "/", port: int = PORT) -> int:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", path, headers=headers)
        return c.getresponse().status
    except OSError:
        return 0


class Envoy:
    """One Envoy; every one started is stopped when the suite ends, however it ends."""

    running: list = []

    def __init__(self, work: Path, name: str, filters: list, shim: Path, workers: int = 1,
                 port: int = PORT, admin: int = ADMIN):
        self.port = port
        config = work / f"{name}-{workers}.json"
        config.write_text(json.dumps(bootstrap(filters, shim, port, admin)))
        cpus = "0" if workers == 1 else "0,1"
        self.log = (work / f"{name}-{workers}.log").open("w")
        self.proc = subprocess.Popen(
            ["taskset", "-c", cpus, "envoy", "-c", str(config), "--concurrency", str(workers),
             "--disable-hot-restart", "-l", "error"], stdout=self.log, stderr=self.log)
        Envoy.running.append(self)

    def ready(self, headers: dict) -> None:
        for _ in range(200):
            # Another Envoy on the port (reuse_port) would answer too: this
            # one must be alive, and so own its admin port.
            if status(headers, port=self.port) == 200 and self.proc.poll() is None:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        sys.exit(f"Envoy never answered 200 (see {self.log.name})")

    def cpu_ticks(self) -> int:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])

    def rss_mb(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait()
        self.log.close()
        Envoy.running.remove(self)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wrk(seconds: float, load: str, work: Path, proof_offset: int = 0) -> dict:
    args = ["taskset", "-c", "1", "wrk", "-t1", "-c16", f"-d{round(seconds)}s", "--latency"]
    if load == "pool":
        args += ["-s", str(REPO / "bench/pool.lua")]
    elif load == "wimse":
        args += ["-s", str(REPO / "bench/wimse.lua")]
    elif load == "one":
        args += ["-H", f"authorization: Bearer {os.environ['BENCH_TOKEN']}"]
    args.append(f"http://127.0.0.1:{PORT}/")
    out = run(*args, env=dict(os.environ, TOKENS=str(work / "pool.txt"),
                              PROOFS=str(work / "proofs.txt"), PROOF_OFFSET=str(proof_offset),
                              WIT=os.environ.get("BENCH_WIT", "")))
    if "Non-2xx" in out:
        sys.exit(f"non-2xx responses:\n{out}")

    def latency_ms(q: str) -> float:
        value, unit = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return {"requests": int(re.search(r"(\d+) requests in", out).group(1)),
            "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50_ms": latency_ms("50"), "p99_ms": latency_ms("99")}


def throughput(ids, work, shim, names, rounds, seconds) -> dict:
    table = variants(ids)
    samples = {name: [] for name in names}
    for r in range(rounds):
        for name in names:
            filt, load, _ = table[name]
            envoy = Envoy(work, name, [filt] if filt else [], shim)
            probe = {"authorization": f"Bearer {os.environ['BENCH_TOKEN']}"} if load != "outbound" else {}
            if load == "wimse":
                # Fresh, unused proofs for each run (warm-up included); the
                # readiness probe is a JWT-SVID the filter also accepts.
                ids.proofs(PROOFS, work / "proofs.txt")
            envoy.ready(probe)
            # warm-up: caches, JIT tiers, connection pools (WIMSE: the pool's
            # second half, so the measured run's proofs are all unused)
            wrk(1, load, work, proof_offset=PROOFS // 2)
            before = envoy.cpu_ticks()
            result = wrk(seconds, load, work)
            after = envoy.cpu_ticks()
            result["cpu_us_per_req"] = (after - before) * 1e6 / os.sysconf("SC_CLK_TCK") / result["requests"]
            result["rss_mb"] = envoy.rss_mb()
            envoy.stop()
            samples[name].append(result)
            print(f"  round {r + 1} {name:16} {result['rps']:9.0f} req/s "
                  f"{result['cpu_us_per_req']:6.1f} µs/req", flush=True)
    rows = {}
    for name, runs in samples.items():
        rps = [x["rps"] for x in runs]
        rows[name] = {
            "what": table[name][2],
            "rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
            "p50_ms": statistics.median(x["p50_ms"] for x in runs),
            "p99_ms": statistics.median(x["p99_ms"] for x in runs),
            "cpu_us_per_req": statistics.median(x["cpu_us_per_req"] for x in runs),
            "rounds": runs,
        }
    return rows


def memory(ids, work, shim) -> dict:
    """Envoy RSS after load, with no filter, the noop Wasm filter and
    ephemera (warm), at 1 and 2 workers."""
    table = variants(ids)
    out = {}
    for workers in (1, 2):
        for name in ("none", "noop", "warm"):
            filt, load, _ = table[name]
            envoy = Envoy(work, f"mem-{name}", [filt] if filt else [], shim, workers)
            envoy.ready({"authorization": f"Bearer {os.environ['BENCH_TOKEN']}"})
            wrk(3, load, work)
            out[f"{name}@{workers}"] = {"rss_mb": round(envoy.rss_mb(), 1), **admin_memory()}
            envoy.stop()
    return out


def admin_memory() -> dict:
    """Envoy's tcmalloc figures: live heap bytes and the heap it holds."""
    c = http.client.HTTPConnection("127.0.0.1", ADMIN, timeout=5)
    c.request("GET", "/memory")
    m = json.loads(c.getresponse().read())
    mb = lambda k: round(int(m.get(k, 0)) / 2**20, 1)
    return {"heap_allocated_mb": mb("allocated"), "heap_size_mb": mb("heap_size")}


def revocation(ids, work, shim, trials=20) -> dict:
    """`identity remove` of a caller → the first 401 for its token."""
    envoy = Envoy(work, "revocation", [variants(ids)["warm"][0]], shim)
    envoy.ready({"authorization": f"Bearer {os.environ['BENCH_TOKEN']}"})
    samples = []
    for i in range(trials):
        name = f"caller{i}"
        run(E, "identity", "add", str(ids.root), name)
        token = ids.mint(name)
        headers = {"authorization": f"Bearer {token}"}
        deadline = time.monotonic() + 10
        while status(headers) != 200:
            if time.monotonic() > deadline:
                sys.exit(f"{name} was never admitted")
            time.sleep(0.01)
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
        start = time.monotonic()
        run(E, "identity", "remove", str(ids.root), name)
        while True:
            conn.request("GET", "/", headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status == 401:
                break
            if time.monotonic() - start > 10:
                sys.exit(f"{name} was still admitted 10 s after its removal")
        samples.append((time.monotonic() - start) * 1e3)
    envoy.stop()
    samples.sort()
    pick = lambda q: samples[round((len(samples) - 1) * q)]
    return {"trials": trials, "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": samples[-1]}


def fanout(ids, work, trials=20) -> dict:
    """A caller removed through the bundle store (PostgreSQL) → its first
    401 at each of three Envoys, each with its own shim following the store."""
    pg = Postgres(work, "fanout-pg")
    pg.psql("CREATE ROLE ephemera_shim LOGIN; CREATE ROLE ephemera_publisher LOGIN")
    pg.psql(run(E, "identity", "schema"))
    publisher = pg.url("ephemera_publisher")
    run(E, "identity", "publish", str(ids.root), "--postgres", publisher)
    shims, envoys = [], []
    try:
        for n in range(3):
            sock = work / f"fanout-{n}/shim.sock"
            log = (work / f"fanout-shim-{n}.log").open("w")
            shims.append(subprocess.Popen(
                [E, "serve", "--listen", f"unix:{sock}", "--bundle-postgres", pg.url("ephemera_shim")],
                env=ids.env("billing"), stdout=log, stderr=log))
            envoy = Envoy(work, f"fanout-{n}", [variants(ids)["warm"][0]], sock,
                          port=PORT + 10 + n, admin=PORT + 20 + n)
            envoy.ready({"authorization": f"Bearer {os.environ['BENCH_TOKEN']}"})
            envoys.append(envoy)
        samples = []
        for i in range(trials):
            name = f"fanout{i}"
            run(E, "identity", "add", str(ids.root), name, "--postgres", publisher)
            headers = {"authorization": f"Bearer {ids.mint(name)}"}
            deadline = time.monotonic() + 10
            while any(status(headers, port=e.port) != 200 for e in envoys):
                if time.monotonic() > deadline:
                    sys.exit(f"{name} was never admitted everywhere")
                time.sleep(0.01)
            start = time.monotonic()
            run(E, "identity", "remove", str(ids.root), name, "--postgres", publisher)
            waiting = {e.port for e in envoys}
            while waiting:
                for port in sorted(waiting):
                    if status(headers, port=port) == 401:
                        waiting.discard(port)
                        samples.append((time.monotonic() - start) * 1e3)
                if time.monotonic() - start > 10:
                    logs = "".join((work / f"fanout-shim-{n}.log").read_text()[-2000:] for n in range(3))
                    answers = {p: status(headers, port=p) for p in waiting}
                    sys.exit(f"{name} was still admitted 10 s after its removal: {answers}\n{logs}")
        samples.sort()
        pick = lambda q: samples[round((len(samples) - 1) * q)]
        return {"trials": trials, "samples": len(samples), "p50_ms": pick(0.5),
                "p99_ms": pick(0.99), "max_ms": samples[-1]}
    finally:
        for envoy in envoys:
            envoy.stop()
        for shim in shims:
            shim.terminate()
            shim.wait()
        pg.stop()


def ipt(requests=300) -> dict:
    out = run(str(REPO / "target/release/examples/ipt_bench"), str(requests),
              env=dict(os.environ, EPHEMERA_BIN=E))
    return json.loads(out.strip().splitlines()[-1])


class Postgres:
    """A throwaway PostgreSQL cluster (Debian's server), run as nobody when
    this is root (PostgreSQL refuses root)."""

    def __init__(self, work: Path, name: str):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
        if not bins:
            sys.exit("PostgreSQL is not installed (tests/setup.sh installs it)")
        self.bin = bins[-1].parent
        self.data = work / name
        self.data.mkdir()
        drop = []
        if os.geteuid() == 0:
            os.chmod(work, 0o755)
            os.chown(self.data, 65534, 65534)
            drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
        os.chmod(self.data, 0o700)
        run(*drop, str(self.bin / "initdb"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--no-sync", "-D", str(self.data))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [*drop, str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-k", str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while subprocess.run([str(self.bin / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                             capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit("PostgreSQL did not start")
            time.sleep(0.1)

    def url(self, role: str) -> str:
        return f"postgres://{role}@127.0.0.1:{self.port}/postgres"

    def psql(self, sql: str):
        run("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(self.data), "-p", str(self.port),
            "-U", "postgres", "-d", "postgres", "-c", sql)

    def stop(self):
        self.proc.send_signal(2)
        self.proc.wait()


def ledger(work) -> dict:
    """Durable appends: the file ledger beside pymayfly, and the same
    writer on a PostgreSQL table (durable on commit) on the same disk."""
    plan = {1: 3000, 8: 1000, 64: 200}
    out = {}
    pg = Postgres(work, "ledger-pg")
    pg.psql("CREATE ROLE ephemera_ledger_writer LOGIN")
    pg.psql(run(E, "ledger", "schema"))
    try:
        for writers, each in plan.items():
            bench = str(REPO / "target/release/examples/ledger_bench")
            ours = run(bench, str(writers), str(each), str(work))
            table = run(bench, str(writers), str(each), pg.url("ephemera_ledger_writer"))
            theirs = run(sys.executable, str(REPO / "bench/pymayfly_ledger.py"), str(writers), str(each), str(work))
            out[writers] = {"ephemera": json.loads(ours.strip().splitlines()[-1]),
                            "postgres": json.loads(table.strip().splitlines()[-1]),
                            "pymayfly": json.loads(theirs.strip().splitlines()[-1])}
            print(f"  ledger {writers:2} writers: ephemera {out[writers]['ephemera']['per_s']:.0f}/s "
                  f"({out[writers]['ephemera']['records_per_sync']:.1f} per fdatasync), "
                  f"on PostgreSQL {out[writers]['postgres']['per_s']:.0f}/s "
                  f"({out[writers]['postgres']['records_per_sync']:.1f} per commit), "
                  f"pymayfly {out[writers]['pymayfly']['per_s']:.0f}/s", flush=True)
    finally:
        pg.stop()
    return out


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=5)
        self.path = str(path)

    def connect(self):
        import socket
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def secrets(ids, work, reads=500) -> dict:
    """Sequential secret reads by a caller presenting a fresh JWT-SVID each
    time, at a shim keeping its enforcement state in memory and at one
    keeping it in Redis (same machine): the latency Redis adds per read."""
    files = work / "secret-files"
    files.mkdir()
    (files / "plain").write_text("bench-value")
    (files / "granted").write_text("bench-value")
    out = {}
    for mode in ("memory", "redis"):
        redis = None
        state = ""
        if mode == "redis":
            port = free_port()
            redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                                      "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            state = f'state: {{ redis: {{ url: "redis://127.0.0.1:{port}" }} }}\n'
        config = work / f"secrets-{mode}.yaml"
        config.write_text(
            f'stores: {{ files: {{ backend: file, dir: "{files}", mount: creds }} }}\n'
            "refs:\n  plain: { store: files, path: plain, policy: plain }\n"
            "  granted: { store: files, path: granted, policy: granted }\n"
            "policies:\n  plain: { allowed_principals: [orders] }\n"
            "  granted: { allowed_principals: [orders], grant: { ttl_secs: 600, max_uses: 100000 } }\n"
            + state)
        sockets = work / f"secrets-{mode}"
        shim = subprocess.Popen(
            [E, "serve", "--listen", f"unix:{sockets}/envoy.sock", "--secrets-config", str(config),
             "--app-listen", f"unix:{sockets}/app.sock"],
            env=ids.env("billing"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(100):
                if (sockets / "app.sock").exists():
                    break
                time.sleep(0.05)
            audience = f"{BILLING}/ephemera-secrets"
            for name in ("plain", "granted"):
                tokens = list(ids.tokens(reads + 20, audience, ttl=120, tag=f"{mode}-{name}"))
                samples = []
                conn = UnixHTTPConnection(sockets / "app.sock")
                for i, token in enumerate(tokens):
                    start = time.perf_counter()
                    conn.request("POST", "/v1/secrets/resolve", body=json.dumps({"name": name}),
                                 headers={"authorization": f"Bearer {token}",
                                          "content-type": "application/json"})
                    response = conn.getresponse()
                    response.read()
                    if response.status != 200:
                        sys.exit(f"secret read at the {mode} shim: {response.status}")
                    if i >= 20:  # warm-up: connections, script cache
                        samples.append((time.perf_counter() - start) * 1e3)
                samples.sort()
                pick = lambda q: samples[round((len(samples) - 1) * q)]
                out[f"{mode}/{name}"] = {"reads": reads, "p50_ms": pick(0.5), "p99_ms": pick(0.99)}
        finally:
            shim.terminate()
            shim.wait()
            if redis:
                redis.terminate()
                redis.wait()
    return out


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ratio(rows, a, b):
    if a in rows and b in rows:
        return rows[a]["rps_median"] / rows[b]["rps_median"]
    return None


def targets(result) -> list:
    rows = result.get("throughput", {})
    t = []

    def add(what, value, goal, met):
        t.append({"target": what, "value": value, "goal": goal,
                  "met": None if value is None else met})

    r = ratio(rows, "warm", "essential")
    add("warm ≥ 0.95× essential floor", r, 0.95, r is not None and r >= 0.95)
    r = ratio(rows, "cold", "jwt_authn")
    add("cold ≥ 0.9× jwt_authn uncached", r, 0.9, r is not None and r >= 0.9)
    r = ratio(rows, "out-reuse", "essential")
    add("outbound with reuse ≥ 0.95× essential floor", r, 0.95, r is not None and r >= 0.95)
    rev = result.get("revocation")
    v = rev and rev["p99_ms"]
    add("revocation p99 ≤ 1000 ms", v, 1000, v is not None and v <= 1000)
    fan = result.get("fanout")
    v = fan and fan["p99_ms"]
    add("revocation fanned out to three nodes, p99 ≤ 1000 ms", v, 1000, v is not None and v <= 1000)
    i = result.get("ipt")
    v = i and i["ipt_ms"]["p50"] / i["raw_ms"]["p50"]
    add("IPT p50 ≤ 1.2× direct OpenBao calls", v, 1.2, v is not None and v <= 1.2)
    led = result.get("ledger")
    if led:
        v = led[64]["ephemera"]["per_s"] / led[64]["pymayfly"]["per_s"]
        add("ledger at 64 writers ≥ 1.5× pymayfly (no fsync)", v, 1.5, v >= 1.5)
        v = led[8]["ephemera"]["records_per_sync"]
        add("ledger at 8 writers ≥ 6.4 records per fdatasync", v, 6.4, v >= 6.4)
    mem = result.get("memory")
    if mem:
        for w in (1, 2):
            v = mem[f"warm@{w}"]["rss_mb"] - mem[f"noop@{w}"]["rss_mb"]
            add(f"Envoy RSS with ephemera ≤ noop + 10 MB per worker ({w} worker{'s' * (w > 1)})",
                v, 10 * w, v <= 10 * w)
    return t


def machine() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    envoy = run("envoy", "--version").strip().split("version:")[-1].strip()
    return {"cpu": cpu, "cpus": os.cpu_count(), "kernel": platform.release(), "envoy": envoy,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def report(result) -> str:
    lines = [f"machine: {result['machine']['cpu']} ×{result['machine']['cpus']}, "
             f"Linux {result['machine']['kernel']}, Envoy {result['machine']['envoy']}"]
    rows = result.get("throughput")
    if rows:
        lines += ["", f"throughput ({result['rounds']} interleaved rounds × {result['seconds']} s, "
                      "Envoy --concurrency 1 on CPU 0, wrk -t1 -c16 on CPU 1)",
                  f"{'variant':16} {'req/s':>8} {'min–max':>15} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'CPU µs/req':>10}  what"]
        for name, row in rows.items():
            lines.append(f"{name:16} {row['rps_median']:8.0f} "
                         f"{row['rps_min']:7.0f}–{row['rps_max']:<7.0f} {row['p50_ms']:7.2f} "
                         f"{row['p99_ms']:7.2f} {row['cpu_us_per_req']:10.1f}  {row['what']}")
        pairs = [("noop", "none"), ("essential", "none"), ("warm", "essential"),
                 ("warm", "jwt_authn-cache"), ("warm-rules", "essential"), ("cold", "jwt_authn"),
                 ("warm", "warm-before"), ("cold", "cold-before"),
                 ("cold-rules", "jwt_authn"), ("cold-rust", "jwt_authn"),
                 ("out-reuse", "essential"), ("out-mint", "none"),
                 ("wimse", "cold"), ("wimse", "jwt_authn"), ("out-wimse", "out-mint")]
        lines += ["", "ratios (req/s medians; CPU µs/req ratio in brackets, lower is better)"]
        for a, b in pairs:
            r = ratio(rows, a, b)
            if r is not None:
                cpu = rows[a]["cpu_us_per_req"] / rows[b]["cpu_us_per_req"]
                lines.append(f"  {a} / {b}: {r:.2f}× [{cpu:.2f}×]")
    if "memory" in result:
        lines += ["", "Envoy memory after load, MB (RSS / tcmalloc live heap / heap held):"]
        lines += [f"  {k:8} {v['rss_mb']:6.1f} / {v['heap_allocated_mb']:5.1f} / {v['heap_size_mb']:5.1f}"
                  for k, v in result["memory"].items()]
    if "revocation" in result:
        r = result["revocation"]
        lines.append(f"revocation (identity remove → first 401, {r['trials']} trials): "
                     f"p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms")
    if "fanout" in result:
        r = result["fanout"]
        lines.append(f"revocation through the bundle store (identity remove --postgres → first 401 at "
                     f"each of 3 Envoys, {r['samples']} samples): p50 {r['p50_ms']:.0f} ms, "
                     f"p99 {r['p99_ms']:.0f} ms, max {r['max_ms']:.0f} ms")
    if "ipt" in result:
        i = result["ipt"]
        lines.append(f"IPT ({i['requests']} sequential requests): through Envoy p50 {i['ipt_ms']['p50']:.2f} ms "
                     f"p99 {i['ipt_ms']['p99']:.2f} ms; direct OpenBao calls p50 {i['raw_ms']['p50']:.2f} ms "
                     f"p99 {i['raw_ms']['p99']:.2f} ms; verified request without IPT p50 "
                     f"{i['plain_ms']['p50']:.2f} ms; shim RSS {i['shim_rss_kb'] / 1024:.1f} MB")
    if "ledger" in result:
        lines.append("ledger, durable appends/s (signed chain, fdatasync) vs pymayfly FileAuditLedger (no fsync):")
        for w, x in result["ledger"].items():
            o = x["ephemera"]
            lines.append(f"  {w:2} writers: {o['per_s']:.0f}/s, {o['records_per_sync']:.1f} records per "
                         f"fdatasync, append p50 {o['p50_us']:.0f} µs p99 {o['p99_us']:.0f} µs; "
                         f"pymayfly {x['pymayfly']['per_s']:.0f}/s")
            if "postgres" in x:
                p = x["postgres"]
                lines.append(f"      on PostgreSQL: {p['per_s']:.0f}/s, {p['records_per_sync']:.1f} records per "
                             f"commit, append p50 {p['p50_us']:.0f} µs p99 {p['p99_us']:.0f} µs")
    if "secrets" in result:
        lines.append("secret reads through the shim (a fresh JWT-SVID each, sequential), p50 / p99 ms:")
        for name in ("plain", "granted"):
            m, r = result["secrets"][f"memory/{name}"], result["secrets"][f"redis/{name}"]
            lines.append(f"  {name:8} state in memory {m['p50_ms']:.2f} / {m['p99_ms']:.2f}; "
                         f"in Redis {r['p50_ms']:.2f} / {r['p99_ms']:.2f} "
                         f"(+{r['p50_ms'] - m['p50_ms']:.2f} ms at p50)")
    lines += ["", "targets"]
    for t in result["targets"]:
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.2f}"
        lines.append(f"  [{mark}] {t['target']}: {value}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=6)
    p.add_argument("--only", help="throughput variants to run (comma-separated)")
    p.add_argument("--skip", default="", help="parts to skip: throughput,memory,revocation,fanout,ipt,ledger,secrets")
    args = p.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="ephemera-bench-", dir=REPO / "target"))
    shim_proc = None
    try:
        ids = Identities(work)
        shim = work / "run/shim.sock"
        shim_proc = subprocess.Popen([E, "serve", "--listen", f"unix:{shim}"], env=ids.env("billing"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.environ["BENCH_TOKEN"] = ids.mint("orders")
        os.environ["BENCH_WIT"] = ids.wit()
        ids.pool(POOL, work / "pool.txt")
        result = {"machine": machine(), "rounds": args.rounds, "seconds": args.seconds}
        names = list(variants(ids))
        if args.only:
            names = [n for n in names if n in args.only.split(",")]
        if "throughput" not in skip:
            print("throughput", flush=True)
            result["throughput"] = throughput(ids, work, shim, names, args.rounds, args.seconds)
        if "memory" not in skip:
            print("memory", flush=True)
            result["memory"] = memory(ids, work, shim)
        if "revocation" not in skip:
            print("revocation", flush=True)
            result["revocation"] = revocation(ids, work, shim)
        if "fanout" not in skip:
            print("fanout", flush=True)
            result["fanout"] = fanout(ids, work)
        if "ipt" not in skip:
            print("ipt", flush=True)
            result["ipt"] = ipt()
        if "ledger" not in skip:
            print("ledger", flush=True)
            result["ledger"] = ledger(work)
        if "secrets" not in skip:
            print("secrets", flush=True)
            result["secrets"] = secrets(ids, work)
        result["targets"] = targets(result)
        text = report(result)
        print("\n" + text)
        results = REPO / "bench/results"
        results.mkdir(exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        (results / f"{stamp}.json").write_text(json.dumps(result, indent=2, default=str))
        (results / f"{stamp}.txt").write_text(text + "\n")
        print(f"\nwritten: bench/results/{stamp}.json and .txt")
    finally:
        for envoy in list(Envoy.running):
            envoy.stop()
        if shim_proc:
            shim_proc.terminate()
            shim_proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
