"""Building the immutable in-memory view of the directory that the data plane reads.

Built in one read transaction; swapped in whole. The hot path never touches the database.
The frozen ``Snapshot`` type lives in ``garrison.domain.snapshot``; it is re-exported here
only as a temporary shim for modules not yet moved to the domain import (issue 15).
"""

from __future__ import annotations

import time
from dataclasses import replace
from types import MappingProxyType
from typing import Any

import orjson
import sqlalchemy as sa

from garrison.domain import (
    AuthStyle,
    Credential,
    Level,
    Model,
    Org,
    OrgKind,
    Principal,
    PrincipalKind,
    Status,
    UpstreamApi,
)
from garrison.domain.access import Grant
from garrison.domain.locks import Lock, LockKind, LockSet
from garrison.domain.networks import parse_network
from garrison.domain.snapshot import Snapshot as Snapshot  # temporary re-export (issue 15)
from garrison.domain.upstream_tls import parse_upstream_tls
from garrison.keyring import Sealer
from garrison.store import schema
from garrison.store.columns import parse_compartments as parse_compartments
from garrison.store.columns import parse_extra_fields as parse_extra_fields
from garrison.store.columns import parse_networks as parse_networks
from garrison.store.columns import terms_of
from garrison.store.key_containment import successors

# Expired grants are dropped from the snapshot only this long after they end.
GRANT_MEMORY_S = 7 * 86400.0


def current_version(conn: sa.Connection) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.coalesce(sa.func.max(schema.change_feed.c.seq), 0))
        ).scalar_one()
    )


def load_snapshot(engine: sa.Engine, sealer: Sealer) -> Snapshot:
    with engine.connect() as conn, conn.begin():
        version = current_version(conn)
        orgs = {r.id: _org(r) for r in conn.execute(sa.select(schema.orgs))}
        principals = {r.id: _principal(r) for r in conn.execute(sa.select(schema.principals))}
        credentials = {r.id: _credential(r) for r in conn.execute(sa.select(schema.credentials))}
        models = {r.name: _model(r, sealer) for r in conn.execute(sa.select(schema.models))}
        unlifted = [
            _lock(r)
            for r in conn.execute(sa.select(schema.locks).where(schema.locks.c.lifted_at.is_(None)))
        ]
        locks = LockSet.build(
            carried_to_successors(conn, unlifted), covers=_covers(principals, credentials)
        )
        g = schema.grants
        grants: dict[tuple[str, str], list[Grant]] = {}
        for r in conn.execute(
            # Whether a grant is active is decided per call with the gateway's clock; a week of
            # slack only keeps long-expired grants out of memory.
            sa.select(g).where(
                g.c.revoked_at.is_(None), g.c.expires_at > time.time() - GRANT_MEMORY_S
            )
        ):
            grants.setdefault((r.principal_id, r.model_id), []).append(
                Grant(r.id, r.principal_id, r.model_id, r.starts_at, r.expires_at)
            )
        ps = schema.policy_sets
        policy = conn.execute(sa.select(ps).order_by(ps.c.version.desc()).limit(1)).first()
    return Snapshot(
        version=version,
        orgs=MappingProxyType(orgs),
        principals=MappingProxyType(principals),
        credentials=MappingProxyType(credentials),
        models=MappingProxyType(models),
        locks=locks,
        grants=MappingProxyType({k: tuple(v) for k, v in grants.items()}),
        policy_version=policy.version if policy is not None else 0,
        policy_text=policy.text if policy is not None else "",
    )


def carried_to_successors(conn: sa.Connection, locks: list[Lock]) -> list[Lock]:
    """A lock on a key also covers every key rotated from it (same lock id, so a refusal
    or a cut names the lock that was placed)."""
    out = list(locks)
    for lock in locks:
        if lock.kind is LockKind.CREDENTIAL:
            out.extend(replace(lock, target=key) for key in successors(conn, lock.target))
    return out


def _lock(r: Any) -> Lock:
    kind = LockKind(r.kind)
    return Lock(
        id=r.id,
        kind=kind,
        target=r.target,
        reason=r.reason,
        created_by=r.created_by,
        created_at=r.created_at,
        expires_at=r.expires_at,
        incident_id=r.incident_id,
        network=parse_network(r.target) if kind is LockKind.NETWORK else None,
    )


def _org(r: Any) -> Org:
    kind = OrgKind(r.kind)
    # Every vendor org carries terms; one stored without a contract gets an empty window and
    # so is never usable (fail closed).
    vendor = terms_of(r) if kind is OrgKind.VENDOR else None
    return Org(id=r.id, name=r.name, kind=kind, vendor=vendor)


def _principal(r: Any) -> Principal:
    return Principal(
        id=r.id,
        name=r.name,
        org_id=r.org_id,
        kind=PrincipalKind(r.kind),
        clearance=Level(r.clearance),
        compartments=parse_compartments(r.compartments),
        status=Status(r.status),
        roles=parse_compartments(r.roles),
        owner_id=r.owner_id,
    )


def _covers(
    principals: dict[str, Principal], credentials: dict[str, Credential]
) -> dict[str, list[tuple[LockKind, str]]]:
    """What a lock on each person also covers: the service accounts they own and the keys
    they issued to anyone else."""
    out: dict[str, list[tuple[LockKind, str]]] = {}
    for p in principals.values():
        if p.owner_id is not None:
            out.setdefault(p.owner_id, []).append((LockKind.PRINCIPAL, p.id))
    for c in credentials.values():
        if (
            c.created_by is not None
            and c.created_by != c.principal_id
            and c.created_by in principals
        ):
            out.setdefault(c.created_by, []).append((LockKind.CREDENTIAL, c.id))
    return out


def _credential(r: Any) -> Credential:
    return Credential(
        id=r.id,
        principal_id=r.principal_id,
        secret_hash=bytes(r.secret_hash),
        created_at=r.created_at,
        expires_at=r.expires_at,
        networks=parse_networks(r.networks),
        revoked=r.revoked_at is not None,
        canary=bool(r.canary),
        provenance=r.provenance,
        created_by=r.created_by,
        cert_thumbprint=r.cert_thumbprint,
    )


def _model(r: Any, sealer: Sealer) -> Model:
    sealed = r.upstream_key_sealed
    return Model(
        id=r.id,
        name=r.name,
        upstream_url=r.upstream_url,
        upstream_model=r.upstream_model,
        api=UpstreamApi(r.api),
        auth_style=AuthStyle(r.auth_style),
        level=Level(r.level),
        compartments=parse_compartments(r.compartments),
        upstream_key=sealer.unseal(bytes(sealed)) if sealed is not None else None,
        requires_justification=bool(r.requires_justification),
        extra_fields=parse_extra_fields(r.extra_fields),
        upstream_tls=parse_upstream_tls(orjson.loads(r.upstream_tls) if r.upstream_tls else None),
    )
