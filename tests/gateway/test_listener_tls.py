"""HTTPS on the gateway's own listener: the real OpenAI SDK over TLS with a CA made here,
TLS 1.2 at least, the certificate reloaded when its files change, and one clear line at
start for every broken pair."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import ssl
import warnings
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Any, Protocol

import httpx
import openai
import pytest

from garrison.errors import ConfigError
from garrison.server import Gateway
from garrison.tls.listener import (
    MIN_TLS_VERSION,
    TLS_FILE_MAX_BYTES,
    TLS_RELOAD_POLL_S,
    ReloadingTls,
    server_context,
)
from tests.support.certs import Ca, der, issue, make_ca
from tests.support.world import World, start_world, stop_world

pytestmark = pytest.mark.e2e


class MakeWorld(Protocol):
    """Starts a world whose gateway serves HTTPS with the given pair."""

    async def __call__(self, *, tls_cert_file: Path, tls_key_file: Path) -> World: ...


@pytest.fixture
async def make_world(tmp_path: Path) -> AsyncIterator[MakeWorld]:
    worlds: list[World] = []

    async def make(*, tls_cert_file: Path, tls_key_file: Path) -> World:
        world = await start_world(tmp_path / f"w{len(worlds)}")
        await world.gateway.stop()
        world.gateway = Gateway(
            dataclasses.replace(
                world.settings, tls_cert_file=tls_cert_file, tls_key_file=tls_key_file
            )
        )
        worlds.append(world)
        await world.gateway.start()
        return world

    try:
        yield make
    finally:
        for world in worlds:
            await stop_world(world)


@pytest.fixture
def ca(tmp_path: Path) -> Ca:
    return make_ca(tmp_path / "pki")


def _pair(ca: Ca, tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    return cert, key


def _client_context(ca: Ca) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca.file))


async def _served_cert(port: int, context: ssl.SSLContext) -> bytes:
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        peer = sslobj.getpeercert(binary_form=True)
        assert peer is not None
        return bytes(peer)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_openai_sdk_over_https(make_world: MakeWorld, ca: Ca, tmp_path: Path) -> None:
    cert, key = _pair(ca, tmp_path)
    world = await make_world(tls_cert_file=cert, tls_key_file=key)
    async with httpx.AsyncClient(verify=_client_context(ca)) as http:
        client = openai.AsyncOpenAI(
            base_url=f"https://127.0.0.1:{world.gateway.port}/v1",
            api_key=world.keys["alice"],
            # The SDK takes an httpx.AsyncClient at run time (its legacy-httpx branch), but
            # its annotation names only httpx2.AsyncClient.
            http_client=http,  # type: ignore[arg-type]
            max_retries=0,
        )
        answer = await client.chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "hello over TLS"}]
        )
    assert answer.choices[0].message.content
    # Plain HTTP to the TLS port is not served.
    async with httpx.AsyncClient() as plain:
        with pytest.raises(httpx.HTTPError):
            await plain.get(f"http://127.0.0.1:{world.gateway.port}/healthz")
    # A client that does not trust the CA is refused by its own verification.
    async with httpx.AsyncClient() as untrusting:
        with pytest.raises(httpx.ConnectError):
            await untrusting.get(f"https://127.0.0.1:{world.gateway.port}/healthz")


async def test_tls_1_1_is_refused_and_1_2_accepted(
    make_world: MakeWorld, ca: Ca, tmp_path: Path
) -> None:
    assert ssl.TLSVersion.TLSv1_2 == MIN_TLS_VERSION
    cert, key = _pair(ca, tmp_path)
    world = await make_world(tls_cert_file=cert, tls_key_file=key)
    old = _client_context(ca)
    # The client side is opened up as far as OpenSSL goes, so the refusal is the server's.
    old.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
        old.minimum_version = ssl.TLSVersion.TLSv1_1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    # The server alerts "protocol version" or drops the handshake.
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        await _served_cert(world.gateway.port, old)
    # The control: the same opened-up client, allowed 1.2, gets in (so 1.1 was the reason).
    tls12 = _client_context(ca)
    tls12.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tls12.minimum_version = ssl.TLSVersion.TLSv1_1
    tls12.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await asyncio.open_connection("127.0.0.1", world.gateway.port, ssl=tls12)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()
    await writer.wait_closed()


async def test_rotated_files_are_served_to_new_connections(
    make_world: MakeWorld, ca: Ca, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = issue(ca, cert, key)
    world = await make_world(tls_cert_file=cert, tls_key_file=key)
    context = _client_context(ca)
    assert await _served_cert(world.gateway.port, context) == der(first)
    # A connection opened before the rotation keeps working afterwards.
    reader, writer = await asyncio.open_connection("127.0.0.1", world.gateway.port, ssl=context)

    # Renewed by a new CA: the pair and the trust both change, as in a real re-issue.
    second_ca = make_ca(tmp_path / "pki2", "second-ca")
    second = issue(second_ca, cert, key)
    deadline = asyncio.get_running_loop().time() + TLS_RELOAD_POLL_S * 5
    while True:  # the gateway polls the files on its own: no signal, no restart
        try:
            served = await _served_cert(world.gateway.port, _client_context(second_ca))
        except ssl.SSLError:
            served = b""
        if served == der(second) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.2)
    assert served == der(second)
    assert world.gateway.tls is not None and world.gateway.tls.reloads == 1

    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    await writer.wait_closed()


async def test_a_broken_rotation_keeps_the_old_certificate(
    ca: Ca, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    issue(ca, cert, key)
    reloading = ReloadingTls(cert, key)
    before = reloading.current
    # Half a rotation: a new certificate whose key has not been written yet.
    other_key = tmp_path / "other-key.pem"
    issue(ca, cert, other_key)
    assert reloading.check() is False
    assert reloading.current is before
    assert "NOT reloaded" in caplog.text and "does not match" in caplog.text
    # The key arrives: the next check takes the pair.
    key.write_bytes(other_key.read_bytes())
    assert reloading.check() is True
    assert reloading.current is not before
    # Nothing changed since: no reload.
    assert reloading.check() is False


def _start_error(cert: Path, key: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        server_context(cert, key)
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_missing_mismatched_and_foreign_files_fail_at_start_in_one_line(
    ca: Ca, tmp_path: Path
) -> None:
    cert, key = _pair(ca, tmp_path)
    missing = tmp_path / "nowhere.pem"
    assert _start_error(missing, key) == f"[gateway] tls_cert_file {missing}: no such file"
    assert _start_error(cert, missing) == f"[gateway] tls_key_file {missing}: no such file"
    other_cert, other_key = tmp_path / "c2.pem", tmp_path / "k2.pem"
    issue(ca, other_cert, other_key)
    assert _start_error(cert, other_key) == (
        f"[gateway] tls_key_file {other_key} does not match [gateway] tls_cert_file {cert}"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    assert "not a PEM certificate and private key" in _start_error(garbage, key)
    assert "is a directory" in _start_error(tmp_path, key)
    # Files OpenSSL would block on or read without end are refused before it opens them.
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    assert "not a regular, non-empty file" in _start_error(cert, fifo)
    assert "not a regular, non-empty file" in _start_error(Path("/dev/zero"), key)
    assert "not a regular, non-empty file" in _start_error(Path("/proc/self/status"), key)
    huge = tmp_path / "huge.pem"
    huge.write_bytes(b"#" * (TLS_FILE_MAX_BYTES + 1))
    assert f"larger than {TLS_FILE_MAX_BYTES} bytes" in _start_error(huge, key)
    enc_cert, enc_key = tmp_path / "c3.pem", tmp_path / "k3.pem"
    issue(ca, enc_cert, enc_key, password=b"passphrase")
    assert "is encrypted" in _start_error(enc_cert, enc_key)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_an_unreadable_key_fails_at_start(ca: Ca, tmp_path: Path) -> None:
    cert, key = _pair(ca, tmp_path)
    key.chmod(0)
    assert _start_error(cert, key) == (
        f"[gateway] tls_key_file {key}: cannot be read (permission denied)"
    )


def test_unreadable_is_reported_as_permission_denied(
    ca: Ca, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same check as above, also where the tests run as root: the open is refused."""
    cert, key = _pair(ca, tmp_path)
    real_open = Path.open

    def refuse(
        self: Path,
        mode: str = "r",
        buffering: int = -1,
        encoding: str | None = None,
        errors: str | None = None,
        newline: str | None = None,
    ) -> IO[Any]:
        if self == key:
            raise PermissionError(13, "Permission denied")
        return real_open(self, mode, buffering, encoding, errors, newline)

    monkeypatch.setattr(Path, "open", refuse)  # the class garrison.tls.listener opens with
    assert _start_error(cert, key) == (
        f"[gateway] tls_key_file {key}: cannot be read (permission denied)"
    )


async def test_gateway_does_not_start_on_a_bad_pair(ca: Ca, tmp_path: Path) -> None:
    world = await start_world(tmp_path / "w")
    try:
        cert, _ = _pair(ca, tmp_path)
        with pytest.raises(ConfigError, match="no such file"):
            Gateway(
                dataclasses.replace(
                    world.settings, tls_cert_file=cert, tls_key_file=tmp_path / "absent.pem"
                )
            )
    finally:
        await stop_world(world)
