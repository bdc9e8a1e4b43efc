"""``garrison curl``: one HTTP request to the gateway, signed with the stored session.

For tools that cannot take ``garrison.client``: the request carries the session's
DPoP-bound token and a proof made for exactly this method and URL, so the token is never
shown (nor usable) as a plain bearer token. The answer's body goes to standard output as it
arrives (streams included); a status of 400 or above is reported on standard error and
sets the exit code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urljoin

import click
import httpx

from garrison.cli import exits
from garrison.client import DPoPAuth
from garrison.identity.client_session import load_session

# Longest a model call may take before curl gives up (streams run for minutes).
CURL_TIMEOUT_S = 600.0


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise click.BadParameter(f"{text!r} is not 'Name: value'", param_hint="-H")
    if name.strip().lower() in ("authorization", "dpop", "x-api-key"):
        raise click.BadParameter(
            "the session signs the request: do not set that header", param_hint="-H"
        )
    return name.strip(), value.strip()


@click.command("curl")
@click.argument("target")
@click.option("-X", "--request", "method", default=None, help="Method (GET; POST with -d).")
@click.option("-H", "--header", "headers", multiple=True, help="Extra header 'Name: value'.")
@click.option("-d", "--data", default=None, help="Body; @FILE reads a file, @- standard input.")
@click.option(
    "--session",
    "session_path",
    type=click.Path(path_type=Path),
    default=None,
    help="Session file (default: ~/.config/garrison/session.json).",
)
def curl(
    target: str,
    method: str | None,
    headers: tuple[str, ...],
    data: str | None,
    session_path: Path | None,
) -> None:
    """Send one request to the gateway with the signed-in session (TARGET: a path such as
    /v1/models, or a full URL on the gateway)."""
    session = load_session(session_path)
    url = urljoin(session.gateway_url.rstrip("/") + "/", target.lstrip("/"))
    if not url.startswith(session.gateway_url.rstrip("/") + "/"):
        raise click.BadParameter(
            "the session's token is only sent to its own gateway", param_hint="TARGET"
        )
    body: bytes | None = None
    if data is not None:
        if data == "@-":
            body = sys.stdin.buffer.read()
        elif data.startswith("@"):
            body = Path(data[1:]).read_bytes()
        else:
            body = data.encode()
    extra = dict(_header(h) for h in headers)
    if body is not None and not any(k.lower() == "content-type" for k in extra):
        extra["Content-Type"] = "application/json"
    verb = (method or ("POST" if body is not None else "GET")).upper()
    out = sys.stdout.buffer
    with (
        httpx.Client(auth=DPoPAuth(session_path), timeout=CURL_TIMEOUT_S) as client,
        client.stream(verb, url, content=body, headers=extra) as response,
    ):
        for chunk in response.iter_bytes():
            out.write(chunk)
            out.flush()
    if response.status_code >= 400:
        click.echo(f"\nHTTP {response.status_code}", err=True)
        raise SystemExit(int(exits.for_status(response.status_code)))
