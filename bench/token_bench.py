"""Sign-in tokens: what verifying an access token and its DPoP proof adds to each call.

    python bench/token_bench.py [--calls 3000] [--rounds 3] [--json OUT]

Single thread, each verification timed alone with ``perf_counter_ns`` (the proofs, which the
client makes, are made before the clock starts: a fresh one per call, as on the wire):

* token: ``verify_access_token`` on Garrison's HS256 token (the chosen algorithm), and the
  same steps (joserfc extract + validate + claims JSON) on ES256 and Ed25519 tokens — the
  alternatives the choice was measured against;
* proof: ``verify_proof`` on fresh ES256 and Ed25519 proofs (the proof key parsed once and
  cached, as for a client making many calls), and ES256 with that cache cleared before
  every call (a client's first call);
* reference: one raw P-256 ECDSA verify with ``cryptography`` — the floor, measured in the
  same run so that load on a shared machine shows up as a ratio;
* total: ``authenticate_token`` — token, proof, ``cnf.jkt`` and the person — with an HS256
  token and an ES256 proof: the per-call cost the gateway pays. Target ≤ 150 µs. A session
  sends the same token with every call, so its check is remembered (``VerifiedTokens``);
  "a session's first call" empties that memory before each call.

Reports median and p99 per measurement (medians over rounds). Bounded: a few seconds a round.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jws, jwt
from joserfc.jwk import ECKey, OKPKey

from garrison.domain import Level, Principal, PrincipalKind, Status
from garrison.identity import dpop
from garrison.identity.access_tokens import (
    SessionClaims,
    TokenSigner,
    issue_access_token,
    verify_access_token,
)
from garrison.identity.dpop import MemoryReplayCache, make_proof, verify_proof
from garrison.identity.token_auth import TokenAuth, authenticate_token

TARGET_TOTAL_US = 150.0
PUBLIC = "https://garrison.example"
PATH = "/v1/chat/completions"
# Calls per measurement and round: stable percentiles in a few seconds.
DEFAULT_CALLS = 3000


def _pct(samples: list[int], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def _timed(fn: Callable[[Any], object], inputs: list[Any]) -> list[int]:
    out: list[int] = []
    for item in inputs:
        start = time.perf_counter_ns()
        fn(item)
        out.append(time.perf_counter_ns() - start)
    return out


def _claims(jkt: str, now: float) -> SessionClaims:
    return SessionClaims(
        principal_id="p-dana",
        session_id="s-1",
        jkt=jkt,
        amr=("pwd", "hwk"),
        acr=None,
        auth_time=now,
        idp_issuer="https://idp.example",
        idp_subject="dana",
        issued_at=now,
        expires_at=now + 3600,
    )


def _asymmetric_token_check(alg: str, key: ECKey | OKPKey, body: dict[str, Any]) -> Any:
    """The same steps verify_access_token takes, on a token signed with ``alg``."""
    token = jwt.encode({"alg": alg, "kid": "k", "typ": "at+jwt"}, body, key, algorithms=[alg])
    public = type(key).import_key(key.as_dict(private=False))
    registry = jws.JWSRegistry(algorithms=[alg])

    def check(_: object) -> object:
        obj = jws.extract_compact(token.encode(), registry=registry)
        assert jws.validate_compact(obj, public, registry=registry)
        return json.loads(obj.payload)

    return check


def run_round(calls: int, key_dir: Path) -> dict[str, list[int]]:
    now = time.time()
    signer = TokenSigner.from_dir(key_dir)
    es_key = ECKey.generate_key("P-256", private=True)
    ed_key = OKPKey.generate_key("Ed25519", private=True)
    token = issue_access_token(signer, _claims(es_key.thumbprint(), now))
    body = json.loads(jws.extract_compact(token.encode()).payload)
    url = PUBLIC + PATH

    def proofs(key: ECKey | OKPKey) -> list[str]:
        return [
            make_proof(key, method="POST", url=url, now=now, access_token=token)
            for _ in range(calls)
        ]

    def proof_check(proof: str) -> str:
        return verify_proof(
            proof, method="POST", url=url, now=now, access_token=token, replay=replay
        )

    def proof_check_cold(proof: str) -> str:
        dpop._public_key.cache_clear()
        return proof_check(proof)

    out: dict[str, list[int]] = {}
    # The floor no implementation can go under: one raw P-256 ECDSA verify (cryptography),
    # measured in the same run so a loaded machine shows as a ratio, not a guess.
    raw_key = ec.generate_private_key(ec.SECP256R1())
    message = b"x" * 400
    signature = raw_key.sign(message, ec.ECDSA(hashes.SHA256()))
    raw_public = raw_key.public_key()
    out["reference: raw ES256 verify"] = _timed(
        lambda _: raw_public.verify(signature, message, ec.ECDSA(hashes.SHA256())), [None] * calls
    )
    out["token HS256 (chosen)"] = _timed(
        lambda t: verify_access_token(signer.keys, t, now=now), [token] * calls
    )
    out["token ES256 (same steps)"] = _timed(
        _asymmetric_token_check("ES256", es_key, body), [None] * calls
    )
    out["token Ed25519 (same steps)"] = _timed(
        _asymmetric_token_check("Ed25519", ed_key, body), [None] * calls
    )
    replay = MemoryReplayCache()
    out["proof ES256"] = _timed(proof_check, proofs(es_key))
    replay = MemoryReplayCache()
    ed_token = token  # ath binds the proof to the token; the key need not match here
    out["proof Ed25519"] = _timed(
        lambda p: verify_proof(
            p, method="POST", url=url, now=now, access_token=ed_token, replay=replay
        ),
        proofs(ed_key),
    )
    replay = MemoryReplayCache()
    out["proof ES256, key not cached"] = _timed(proof_check_cold, proofs(es_key))
    tokens = TokenAuth(signer, MemoryReplayCache(), PUBLIC)
    dana = Principal(
        id="p-dana",
        name="dana",
        org_id="internal",
        kind=PrincipalKind.HUMAN,
        clearance=Level.RESTRICTED,
        compartments=frozenset(),
        status=Status.ACTIVE,
    )
    address = ipaddress.ip_address("10.0.0.5")

    def total(proof: str) -> None:
        result = authenticate_token(
            token,
            [proof],
            method="POST",
            path=PATH,
            tokens=tokens,
            principals={dana.id: dana},
            now=now,
            address=address,
        )
        assert result.ok, result.auth.reason

    out["total: HS256 token + ES256 proof"] = _timed(total, proofs(es_key))

    def total_first_call(proof: str) -> None:
        assert tokens.verified is not None
        tokens.verified._claims.clear()  # the session's first call: the token not yet seen
        total(proof)

    out["total, a session's first call"] = _timed(total_first_call, proofs(es_key))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=DEFAULT_CALLS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rounds: list[dict[str, list[int]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            rounds.append(run_round(args.calls, Path(tmp) / f"r{i}"))
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "calls": args.calls,
        "rounds": args.rounds,
        "results_us": {},
    }
    print(f"{'measurement':36} {'median µs':>10} {'p99 µs':>10}")
    for name in rounds[0]:
        median = statistics.median(_pct(r[name], 0.5) for r in rounds)
        p99 = statistics.median(_pct(r[name], 0.99) for r in rounds)
        report["results_us"][name] = {"median": round(median, 1), "p99": round(p99, 1)}
        print(f"{name:36} {median:10.1f} {p99:10.1f}")
    total = report["results_us"]["total: HS256 token + ES256 proof"]["median"]
    verdict = "meets" if total <= TARGET_TOTAL_US else "MISSES"
    raw = report["results_us"]["reference: raw ES256 verify"]["median"]
    report["total_over_raw_es256"] = round(total / raw, 2)
    print(f"total median {total:.1f} µs {verdict} the {TARGET_TOTAL_US:.0f} µs target")
    print(f"total = {total / raw:.2f} × one raw ES256 verify measured in the same run")
    print(f"(load average {report['load_avg_1m']:.2f} on {report['cpus']} CPUs)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
