"""A real OpenID provider for the tests: tests/idp/idp.mjs (``oidc-provider`` on Node).

``TestIdp`` writes the provider's configuration (users with passwords and one-time codes,
signing keys, clients), starts it on a free loopback port, and can rotate its signing key
(a restart with a new key first; the old one still published, as providers do). ``Browser``
plays the person at the provider: it follows the redirects of an authorization URL, fills
the tests' login page (tests/idp/idp.mjs documents it: password, and the one-time code for
MFA), and stops at the loopback redirect, which it delivers to the CLI's listener.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
from joserfc.jwk import RSAKey

IDP_DIR = Path(__file__).resolve().parents[1] / "idp"
CLIENT_ID = "garrison-cli"
# The provider takes a second or two to start (Node + module load) on a loaded machine.
IDP_START_TIMEOUT_S = 30.0


def node_missing_reason() -> str | None:
    if shutil.which("node") is None:
        return "node is not installed: the sign-in tests need a real OpenID provider on Node"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def new_key(kid: str) -> dict[str, Any]:
    key = RSAKey.generate_key(2048, private=True, parameters={"kid": kid})
    return {**key.as_dict(private=True), "use": "sig", "alg": "RS256"}


@dataclass
class User:
    password: str
    otp: str | None = None
    groups: list[str] = field(default_factory=list)
    email: str = ""
    # The second factor the provider reports in amr ("otp"; "hwk": a hardware key).
    factor: str = "otp"


@dataclass
class TestIdp:
    root: Path
    users: dict[str, User]
    port: int = field(default_factory=_free_port)
    keys: list[dict[str, Any]] = field(default_factory=lambda: [new_key("key-1")])
    id_token_ttl: int = 300
    process: subprocess.Popen[bytes] | None = None

    __test__ = False  # not a test class, whatever its name

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _config(self) -> dict[str, Any]:
        grants = [
            "authorization_code",
            "refresh_token",
            "urn:ietf:params:oauth:grant-type:device_code",
        ]
        return {
            "issuer": self.issuer,
            "port": self.port,
            "keys": self.keys,
            "id_token_ttl": self.id_token_ttl,
            "clients": [
                {
                    "client_id": CLIENT_ID,
                    "token_endpoint_auth_method": "none",
                    "application_type": "native",
                    "redirect_uris": ["http://127.0.0.1/callback"],
                    "grant_types": grants,
                    "response_types": ["code"],
                    "require_auth_time": True,
                }
            ],
            "users": {
                name: {
                    "password": u.password,
                    "otp": u.otp,
                    "factor": u.factor,
                    "groups": u.groups,
                    "email": u.email,
                }
                for name, u in self.users.items()
            },
        }

    def start(self) -> TestIdp:
        if not (IDP_DIR / "node_modules" / "oidc-provider").is_dir():
            subprocess.run(
                ["npm", "ci", "--no-audit", "--no-fund"], cwd=IDP_DIR, check=True, timeout=300
            )
        path = self.root / f"idp-{self.port}.json"
        path.write_text(json.dumps(self._config()))
        self.process = subprocess.Popen(
            ["node", str(IDP_DIR / "idp.mjs"), str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + IDP_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1.0)
                return self
            except httpx.HTTPError:
                if self.process.poll() is not None:
                    err = self.process.stderr.read().decode() if self.process.stderr else ""
                    raise RuntimeError(f"the test provider exited: {err[-2000:]}") from None
                time.sleep(0.1)
        raise RuntimeError("the test provider did not start in time")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for stream in (self.process.stdout, self.process.stderr):
                if stream is not None:
                    stream.close()
            self.process = None

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on; the old one stays published for a while."""
        self.stop()
        self.keys = [new_key(kid), *self.keys]
        self.start()


_HIDDEN = re.compile(r'<input type="hidden" name="(\w+)" value="([^"]*)"/>')
_ACTION = re.compile(r'<form[^>]*action="([^"]+)"')


class Browser:
    """A person's browser at the provider (cookies kept between flows, as a browser does)."""

    def __init__(self, user: str, password: str, otp: str | None) -> None:
        self.client = httpx.Client(follow_redirects=False, timeout=10.0)
        self.user, self.password, self.otp = user, password, otp

    def close(self) -> None:
        self.client.close()

    def _login_if_asked(self, response: httpx.Response, url: str) -> httpx.Response:
        if response.status_code == 200 and 'name="password"' in response.text:
            action = urljoin(url, html.unescape(_ACTION.search(response.text).group(1)))  # type: ignore[union-attr]
            form = {"login": self.user, "password": self.password, "otp": self.otp or ""}
            return self.client.post(action, data=form)
        return response

    def follow(self, url: str, stop_at: str) -> str:
        """Follow redirects from ``url`` (logging in when the provider asks) until one goes
        to ``stop_at``; returns that URL."""
        for _ in range(20):
            response = self._login_if_asked(self.client.get(url), url)
            location = response.headers.get("location")
            if location is None:
                raise AssertionError(f"the provider stopped at {url}: {response.text[:300]}")
            url = urljoin(url, location)
            if url.startswith(stop_at):
                return url
        raise AssertionError("too many redirects at the provider")

    def open(self, authorization_url: str) -> None:
        """What ``webbrowser.open`` would do: sign in, then land on the CLI's listener."""
        redirect_uri = dict(
            pair.split("=", 1) for pair in urlsplit(authorization_url).query.split("&")
        )["redirect_uri"]
        from urllib.parse import unquote

        target = unquote(redirect_uri)
        landing = self.follow(authorization_url, target)
        httpx.get(landing, timeout=10.0)

    def approve_device(self, verification_uri: str) -> None:
        """Open the device page, submit its forms (the code, then the confirmation), sign
        in, and stop at the provider's success page."""
        url = verification_uri
        response = self.client.get(url)
        for _ in range(20):
            response = self._login_if_asked(response, url)
            location = response.headers.get("location")
            if location is not None:
                url = urljoin(url, location)
                response = self.client.get(url)
                continue
            form = _ACTION.search(response.text)
            if response.status_code == 200 and form and "xsrf" in response.text:
                url = urljoin(url, html.unescape(form.group(1)))
                response = self.client.post(url, data=dict(_HIDDEN.findall(response.text)))
                continue
            assert response.status_code == 200, response.text[:300]
            assert "Sign-in Success" in response.text or "success" in response.text.lower()
            return
        raise AssertionError("too many steps in the device flow")
