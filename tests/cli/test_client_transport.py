"""Review fix 11, ``garrison.cli.client``: the admin key travels only over TLS or to this host's
loopback (``check_transport``: no plain http to another host, no user or password in the
URL), and the client never hands it to a proxy named in the environment (``trust_env``).
Pure unit tests: nothing leaves loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from garrison.cli.client import AdminClient, check_transport
from garrison.errors import ConfigError

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


# ── check_transport ───────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8443",
        "http://127.0.0.1",
        "http://127.1.2.3:9",
        "http://localhost:8443",
        "http://LOCALHOST:8443",
        "http://[::1]:8443",
        "https://127.0.0.1:8443",
        "https://garrison.example.com",
        "https://garrison.example.com:8443/",
        "https://10.0.0.5:8443",
    ],
)
def test_tls_anywhere_and_plain_http_to_loopback_are_accepted(url: str) -> None:
    check_transport(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://garrison.example.com",
        "http://garrison.example.com:8443/",
        "HTTP://garrison.example.com",
        "http://10.0.0.5:8443",
        "http://192.168.1.10",
        "http://[2001:db8::1]:8443",
        "http://localhost.example.com",
    ],
)
def test_plain_http_to_another_host_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="clear text"):
        check_transport(url)


@pytest.mark.parametrize(
    "url",
    [
        # Host names that merely start like a loopback address resolve wherever their owner
        # points them: the key would leave this host in clear text.
        "http://127.attacker.example",
        "http://127.0.0.1.nip.io:8443",
        "http://127.0.0.1.attacker.example/",
    ],
)
def test_plain_http_to_a_name_that_looks_like_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="clear text"):
        check_transport(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://admin:hunter2@garrison.example.com",
        "https://admin@garrison.example.com",
        "https://:@garrison.example.com",
        "http://admin:hunter2@127.0.0.1:8443",
        "http://user@localhost:8443",
    ],
)
def test_a_url_with_userinfo_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="user or password") as raised:
        check_transport(url)
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1:21", "ws://127.0.0.1:8443", "file:///etc/passwd", "127.0.0.1:8443"]
)
def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ConfigError):
        check_transport(url)


def test_the_client_checks_its_address_before_anything_else() -> None:
    with pytest.raises(ConfigError, match="clear text"):
        AdminClient("http://garrison.example.com", "gk_secret")
    with pytest.raises(ConfigError, match="user or password"):
        AdminClient("https://a:b@garrison.example.com", "gk_secret")


# ── trust_env ─────────────────────────────────────────────────────────────────────────────
class _Answer(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []  # noqa: RUF012 - set per server below

    def do_GET(self) -> None:
        self.seen.append((self.path, self.headers.get("authorization")))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server:
    """A loopback HTTP server in a thread, recording what it was asked."""

    def __init__(self) -> None:
        handler: Any = type("Handler", (_Answer,), {"seen": []})
        self.handler = handler
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    @property
    def seen(self) -> list[tuple[str, str | None]]:
        return self.handler.seen

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def servers() -> Iterator[tuple[_Server, _Server]]:
    """(the admin API, a "proxy"): both loopback servers that record every request."""
    api, proxy = _Server(), _Server()
    try:
        yield api, proxy
    finally:
        api.close()
        proxy.close()


def test_the_client_does_not_trust_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    client = AdminClient("http://127.0.0.1:9", "gk_secret")
    try:
        assert client._http.trust_env is False
    finally:
        client.close()


def test_a_proxy_in_the_environment_never_sees_the_admin_key(
    monkeypatch: pytest.MonkeyPatch, servers: tuple[_Server, _Server]
) -> None:
    api, proxy = servers
    for name in PROXY_VARIABLES:
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = AdminClient(api.url, "gk_the-admin-key")
    try:
        assert client.get("/whoami") == {"ok": True}
    finally:
        client.close()
    assert api.seen == [("/admin/v1/whoami", "Bearer gk_the-admin-key")]
    assert proxy.seen == []


def test_the_proxy_fixture_would_catch_a_client_that_trusts_the_environment(
    monkeypatch: pytest.MonkeyPatch, servers: tuple[_Server, _Server]
) -> None:
    """The check above is meaningful: an httpx client that does trust the environment sends
    the same call, key included, to the proxy."""
    import httpx

    api, proxy = servers
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("http_proxy", proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with httpx.Client(trust_env=True) as trusting:
        trusting.get(api.url + "/admin/v1/whoami", headers={"authorization": "Bearer gk_k"})
    assert api.seen == []
    assert proxy.seen and proxy.seen[0][1] == "Bearer gk_k"
