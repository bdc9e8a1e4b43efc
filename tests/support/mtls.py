"""A world whose gateway asks for client certificates (keys bound to one, RFC 8705 style).
Set-up through the admin API only: a service account and a key bound to a certificate's
thumbprint are made over plain HTTP, then the gateway restarts over TLS with a server
certificate of its own CA and the clients' CA to check certificates against."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from garrison.server import Gateway
from tests.support.admin import admin_call
from tests.support.certs import Ca, issue, make_ca
from tests.support.world import World


async def bound_service_key(
    world: World, name: str, thumbprint: str, **principal: str
) -> dict[str, Any]:
    """A service account ``name`` in the internal org (``principal``: more of its fields) and
    a key of its bound to the certificate ``thumbprint``: the admin API's answer for the key."""
    status, made = await admin_call(
        world,
        world.admin_key,
        "POST",
        "/principals",
        {"name": name, "org": "internal", "kind": "service", **principal},
    )
    assert status == 201, made
    status, bound = await admin_call(
        world, world.admin_key, "POST", "/keys", {"principal": name, "cert_thumbprint": thumbprint}
    )
    assert status == 201, bound
    return dict(bound)


async def restart_over_tls(world: World, pki: Path, clients_ca: Ca) -> Ca:
    """Restart the world's gateway over TLS, asking for client certificates that chain to
    ``clients_ca``; its server certificate comes from a new CA in ``pki``, which it returns
    (what callers trust)."""
    server_ca = make_ca(pki, "server-ca")
    cert, key = pki / "server.pem", pki / "server-key.pem"
    issue(server_ca, cert, key)
    await world.gateway.stop()
    world.gateway = Gateway(
        dataclasses.replace(
            world.settings,
            tls_cert_file=cert,
            tls_key_file=key,
            tls_client_ca_file=clients_ca.file,
        )
    )
    await world.gateway.start()
    return server_ca


async def denied_reasons(world: World, event: str) -> list[list[str]]:
    """The reasons of every ``event`` (``request.denied``, ``admin.denied``) audited so far."""
    await world.settle()
    return [e["data"]["reasons"] for e in world.events(event)]
