"""The spiffile reference implementation as a command-line peer for ephemera's tests.

usage: spiffile_peer.py init ROOT TRUST_DOMAIN
       spiffile_peer.py add|remove ROOT NAME
       spiffile_peer.py rotate ROOT NAME [--drop-old]
       spiffile_peer.py mint ROOT NAME AUDIENCE          -> token on stdout
       spiffile_peer.py verify ROOT NAME TOKEN [AUDIENCE] -> caller on stdout, or exit 1
       spiffile_peer.py verify-env TOKEN [AUDIENCE]      -> as verify, identity from SPIFFILE_* env
       spiffile_peer.py sign-claims ROOT NAME CLAIMS_JSON -> a token with exactly these claims,
                                                            signed with NAME's key (for negative tests)
"""

import json
import sys
from pathlib import Path

import jwt as pyjwt

from spiffile import Identity, SpiffileError
from spiffile import provision
from spiffile.keys import private_key_from_pem, public_jwk


def main(argv: list[str]) -> int:
    op, *args = argv
    if op == "init":
        provision.init_root(args[0], args[1])
    elif op == "add":
        print(provision.add_service(args[0], args[1]))
    elif op == "remove":
        provision.remove_service(args[0], args[1])
    elif op == "rotate":
        print(provision.rotate_service(args[0], args[1], keep_old="--drop-old" not in args))
    elif op == "mint":
        print(provision.load_identity(args[0], args[1]).token(args[2]))
    elif op == "sign-claims":
        key = private_key_from_pem((Path(args[0]) / "services" / args[1] / "key.pem").read_bytes())
        headers = {"kid": public_jwk(key)["kid"], "typ": "JWT"}
        print(pyjwt.encode(json.loads(args[2]), key, algorithm="ES256", headers=headers))
    elif op in ("verify", "verify-env"):
        if op == "verify":
            identity, token, rest = provision.load_identity(args[0], args[1]), args[2], args[3:]
        else:
            identity, token, rest = Identity.from_env(), args[0], args[1:]
        try:
            caller = identity.verify(token, audience=rest[0] if rest else None)
        except SpiffileError as e:
            print(f"{type(e).__name__}: {e}", file=sys.stderr)
            return 1
        print(caller.id)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
