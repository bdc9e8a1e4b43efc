"""Client certificates on Garrison's listener (``[gateway] tls_client_ca_file``): optional,
verified against the bundle during the handshake (chain, validity, client use), the bundle
reloaded like the certificate, and one clear line for a bundle that does not load."""

from __future__ import annotations

import asyncio
import datetime
import os
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from garrison.config import load_settings
from garrison.errors import ConfigError
from garrison.tls.listener import ReloadingTls, server_context
from tests.support.certs import Ca, issue, make_ca


class Listener:
    """A TLS server on loopback that answers each connection with the client
    certificate's DER length (0: none) and closes."""

    def __init__(self, tls: ReloadingTls) -> None:
        self.tls = tls
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        async def answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.write(str(len(der or b"")).encode())
            await writer.drain()
            writer.close()

        self.server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=self.tls.context)
        self.port = self.server.sockets[0].getsockname()[1]

    async def peer_cert_size(self, context: ssl.SSLContext) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, ssl=context)
        try:
            return int(await reader.read() or b"-1")
        finally:
            writer.close()


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    return tmp_path / "pki"


@pytest.fixture
def server_ca(pki: Path) -> Ca:
    return make_ca(pki, "server-ca")


@pytest.fixture
def clients_ca(pki: Path) -> Ca:
    return make_ca(pki, "clients-ca")


@pytest.fixture
async def listener(pki: Path, server_ca: Ca, clients_ca: Ca) -> AsyncIterator[Listener]:
    issue(server_ca, pki / "server.pem", pki / "server-key.pem")
    tls = ReloadingTls(pki / "server.pem", pki / "server-key.pem", client_ca=clients_ca.file)
    served = Listener(tls)
    await served.start()
    try:
        yield served
    finally:
        assert served.server is not None
        served.server.close()
        await served.server.wait_closed()


def _client(server_ca: Ca, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(server_ca.file))
    if cert is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


async def test_a_client_without_a_certificate_is_served(listener: Listener, server_ca: Ca) -> None:
    assert await listener.peer_cert_size(_client(server_ca)) == 0


async def test_a_certificate_of_the_bundle_reaches_the_connection(
    listener: Listener, server_ca: Ca, clients_ca: Ca, pki: Path
) -> None:
    issue(clients_ca, pki / "c.pem", pki / "c-key.pem", name="batch", client=True)
    assert await listener.peer_cert_size(_client(server_ca, pki / "c.pem", pki / "c-key.pem")) > 0


async def _refused(listener: Listener, context: ssl.SSLContext) -> None:
    # TLS 1.3: the server's alert arrives after the client's handshake completed, as a read
    # error or an empty read.
    try:
        size = await listener.peer_cert_size(context)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
        return
    assert size == -1, "the server took a certificate it should have refused"


async def test_a_certificate_from_another_ca_fails_the_handshake(
    listener: Listener, server_ca: Ca, pki: Path
) -> None:
    stranger = make_ca(pki / "stranger", "stranger-ca")
    issue(stranger, pki / "s.pem", pki / "s-key.pem", name="batch", client=True)
    await _refused(listener, _client(server_ca, pki / "s.pem", pki / "s-key.pem"))


async def test_a_certificate_for_servers_only_is_not_a_client_certificate(
    listener: Listener, server_ca: Ca, clients_ca: Ca, pki: Path
) -> None:
    issue(clients_ca, pki / "srv.pem", pki / "srv-key.pem", name="batch", client=False)
    await _refused(listener, _client(server_ca, pki / "srv.pem", pki / "srv-key.pem"))


async def test_an_expired_certificate_fails_the_handshake(
    listener: Listener, server_ca: Ca, clients_ca: Ca, pki: Path
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "batch")]))
        .issuer_name(clients_ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=10))
        .not_valid_after(now - datetime.timedelta(days=1))
        .sign(clients_ca.key, hashes.SHA256())
    )
    (pki / "old.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (pki / "old-key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    await _refused(listener, _client(server_ca, pki / "old.pem", pki / "old-key.pem"))


async def test_the_bundle_is_reloaded_like_the_certificate(
    listener: Listener, server_ca: Ca, clients_ca: Ca, pki: Path
) -> None:
    successor = make_ca(pki / "next", "clients-ca-2026")
    issue(successor, pki / "n.pem", pki / "n-key.pem", name="batch", client=True)
    issue(clients_ca, pki / "o.pem", pki / "o-key.pem", name="batch", client=True)
    new_client = _client(server_ca, pki / "n.pem", pki / "n-key.pem")
    await _refused(listener, new_client)
    # The bundle now holds both CAs (a CA rotation): a new file, a new stamp.
    bundle = clients_ca.file
    bundle.write_bytes(bundle.read_bytes() + successor.file.read_bytes())
    os.utime(bundle, ns=(bundle.stat().st_atime_ns, bundle.stat().st_mtime_ns + 10**9))
    assert listener.tls.check()
    assert await listener.peer_cert_size(_client(server_ca, pki / "n.pem", pki / "n-key.pem")) > 0
    assert await listener.peer_cert_size(_client(server_ca, pki / "o.pem", pki / "o-key.pem")) > 0
    # A bundle broken mid-rotation keeps the previous one in service.
    bundle.write_text("not a certificate")
    assert not listener.tls.check()
    assert await listener.peer_cert_size(_client(server_ca, pki / "n.pem", pki / "n-key.pem")) > 0


def test_without_a_bundle_no_certificate_is_asked_for(server_ca: Ca, pki: Path) -> None:
    issue(server_ca, pki / "server.pem", pki / "server-key.pem")
    context = server_context(pki / "server.pem", pki / "server-key.pem")
    assert context.verify_mode is ssl.CERT_NONE
    with_bundle = server_context(pki / "server.pem", pki / "server-key.pem", server_ca.file)
    assert with_bundle.verify_mode is ssl.CERT_OPTIONAL


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "no such file"),
        (b"", "not a regular, non-empty file"),
        (b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", "not a PEM CA"),
        (b"hello", "not a PEM CA bundle"),
    ],
)
def test_a_bundle_that_does_not_load_is_one_line(
    server_ca: Ca, pki: Path, content: bytes | None, expected: str
) -> None:
    issue(server_ca, pki / "server.pem", pki / "server-key.pem")
    bundle = pki / "clients.pem"
    if content is not None:
        bundle.write_bytes(content)
    with pytest.raises(ConfigError) as refused:
        server_context(pki / "server.pem", pki / "server-key.pem", bundle)
    assert "[gateway] tls_client_ca_file" in str(refused.value)
    assert expected in str(refused.value)
    assert "\n" not in str(refused.value)


def test_config_reads_the_bundle_only_with_tls(tmp_path: Path) -> None:
    config = tmp_path / "garrison.toml"
    base = '[storage]\ndatabase_url = "sqlite:///x.db"\nkey_dir = "keys"\n'
    config.write_text(base + '[gateway]\ntls_client_ca_file = "clients.pem"\n')
    with pytest.raises(ConfigError, match="needs tls_cert_file"):
        load_settings(config, env={})
    config.write_text(
        base + '[gateway]\ntls_cert_file = "c.pem"\ntls_key_file = "k.pem"\n'
        'tls_client_ca_file = "clients.pem"\n'
    )
    assert load_settings(config, env={}).tls_client_ca_file == tmp_path / "clients.pem"
