"""TLS on Garrison's own listeners: a certificate and key from files, TLS 1.2 at least, and
the pair reloaded when the files change, without a restart.

With a client CA bundle (``[gateway] tls_client_ca_file``) the listener also asks clients
for a certificate, optionally (``CERT_OPTIONAL``: callers without one are unaffected). A
certificate that is sent must chain to that bundle, be within its validity and allow client
authentication, or the handshake fails; one that passes reaches the request
(``edge.request.peer_certificate``), where keys bound to it are checked
(``identity.cert_binding``). The bundle is reloaded with the certificate and key.

Reload is by polling: every ``TLS_RELOAD_POLL_S`` the two files' modification time, size and
inode are compared with those last loaded; when they moved, a new context is built and
every connection accepted from then on gets it (open connections keep the certificate they
negotiated). A pair that does not load — a rotation caught half-written, a key that does not
match — leaves the previous certificate in service, is logged as an error, and is tried again
at the next poll. The switch happens in the server context's SNI callback, which OpenSSL
calls for every ClientHello (with or without a server name).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import stat
from collections.abc import Callable
from pathlib import Path

from garrison.errors import ConfigError

log = logging.getLogger("garrison.gateway")

# Older protocol versions have known downgrade and cipher weaknesses (RFC 8996 deprecates
# TLS 1.0 and 1.1): nothing older than 1.2 is ever negotiated, on our listeners or upstream.
MIN_TLS_VERSION = ssl.TLSVersion.TLSv1_2
# How often the certificate and key files are checked for a change: a renewed certificate is
# in service within this, at the cost of two stat calls.
TLS_RELOAD_POLL_S = 2.0

# The largest certificate, key or CA bundle file read (the system's whole CA bundle is ~220 KB).
TLS_FILE_MAX_BYTES = 1024 * 1024
# How much of a key file is read to tell an encrypted PEM key ("ENCRYPTED" in its header).
PEM_PEEK_BYTES = 4096
# Permission bits refused on a private key: other users may not read or write it.
KEY_MODE_REFUSED = stat.S_IROTH | stat.S_IWOTH

Stamp = tuple[tuple[int, int, int], ...]


def check_pem_file(path: Path, what: str) -> bytes:
    """The file's first bytes; a one-line error naming the setting and the file when it
    cannot be opened, or is not a regular file of a PEM file's size (a FIFO, a device or
    ``/proc`` entry would block or never end when OpenSSL reads it)."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError
        if not stat.S_ISREG(info.st_mode) or info.st_size == 0:
            raise ConfigError(f"{what} {path}: not a regular, non-empty file")
        if info.st_size > TLS_FILE_MAX_BYTES:
            raise ConfigError(f"{what} {path}: larger than {TLS_FILE_MAX_BYTES} bytes")
        with path.open("rb") as file:
            return file.read(PEM_PEEK_BYTES)
    except FileNotFoundError:
        raise ConfigError(f"{what} {path}: no such file") from None
    except PermissionError:
        raise ConfigError(f"{what} {path}: cannot be read (permission denied)") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path}: is a directory, not a PEM file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path}: cannot be read ({exc.strerror})") from None


def load_pair(context: ssl.SSLContext, cert: Path, key: Path, names: tuple[str, str]) -> None:
    """Load a certificate chain and its key into ``context``; ConfigError in one line naming
    the settings (``names``) when a file is missing, unreadable, not PEM, or the two do not
    match. Encrypted keys are refused (there is nobody to type a passphrase)."""
    cert_name, key_name = names
    check_pem_file(cert, cert_name)
    if b"ENCRYPTED" in check_pem_file(key, key_name):
        raise ConfigError(f"{key_name} {key} is encrypted: give the key without a passphrase")
    mode = stat.S_IMODE(key.stat().st_mode)
    if mode & KEY_MODE_REFUSED:
        # Whoever reads the key is the gateway to its clients (or to the upstream), as
        # Garrison's own key files are refused when others can read them. A group (such as
        # ssl-cert) may read it.
        raise ConfigError(
            f"{key_name} {key}: readable by other users (mode {mode:o}); run `chmod 600 {key}`"
        )
    try:
        # An empty password: an unencrypted key ignores it, an encrypted one fails here
        # instead of OpenSSL prompting on the terminal.
        context.load_cert_chain(str(cert), str(key), password=b"")
    except ssl.SSLError as exc:
        reason = str(exc.reason or "")
        if "KEY_VALUES_MISMATCH" in reason:
            raise ConfigError(f"{key_name} {key} does not match {cert_name} {cert}") from None
        if "BAD_DECRYPT" in reason or "BAD_PASSWORD" in reason:
            raise ConfigError(
                f"{key_name} {key} is encrypted: give the key without a passphrase"
            ) from None
        raise ConfigError(
            f"{cert_name} {cert} / {key_name} {key}: not a PEM certificate and private key "
            f"({reason or exc.__class__.__name__})"
        ) from None


CLIENT_CA_SETTING = "[gateway] tls_client_ca_file"


def load_client_ca(context: ssl.SSLContext, bundle: Path) -> None:
    """Ask clients for a certificate (optional) that must chain to a CA of ``bundle``;
    ConfigError in one line when the bundle is unreadable or holds no CA certificate."""
    check_pem_file(bundle, CLIENT_CA_SETTING)
    try:
        context.load_verify_locations(cafile=str(bundle))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{CLIENT_CA_SETTING} {bundle}: not a PEM CA bundle "
            f"({exc.reason or exc.__class__.__name__})"
        ) from None
    if not any(ca.get("subject") for ca in context.get_ca_certs()):
        raise ConfigError(f"{CLIENT_CA_SETTING} {bundle}: holds no CA certificate")
    # Optional: a caller without a certificate (an unbound key, a sign-in token) is not
    # affected; one with a certificate that does not verify fails the handshake.
    context.verify_mode = ssl.CERT_OPTIONAL


def server_context(cert: Path, key: Path, client_ca: Path | None = None) -> ssl.SSLContext:
    """A server context for one certificate and key (and, with ``client_ca``, client
    certificates verified against that bundle); ConfigError when they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MIN_TLS_VERSION
    context.set_alpn_protocols(["http/1.1"])
    load_pair(context, cert, key, ("[gateway] tls_cert_file", "[gateway] tls_key_file"))
    if client_ca is not None:
        load_client_ca(context, client_ca)
    return context


def file_stamp(*paths: Path) -> Stamp:
    """What changes when a file is rewritten or replaced (mtime, size, inode); a file that
    cannot be read stamps as zeros (so its return counts as a change)."""
    out = []
    for path in paths:
        try:
            st = path.stat()
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
        except OSError:
            out.append((0, 0, 0))
    return tuple(out)


class ReloadingTls:
    """The listener's TLS: ``context`` is handed to the server once; it switches each new
    connection to the newest context that loaded."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        client_ca: Path | None = None,
        loader: Callable[..., ssl.SSLContext] = server_context,
    ) -> None:
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self._loader = loader
        self._stamp = file_stamp(*self._files)
        self.current = self._load()  # ConfigError at start: the gateway does not start
        self.context = self.current
        self.context.sni_callback = self._pick
        self.reloads = 0
        self._failed_stamp: Stamp | None = None

    @property
    def _files(self) -> tuple[Path, ...]:
        return (self.cert, self.key) + ((self.client_ca,) if self.client_ca else ())

    def _load(self) -> ssl.SSLContext:
        if self.client_ca is None:
            return self._loader(self.cert, self.key)
        return self._loader(self.cert, self.key, client_ca=self.client_ca)

    def _pick(
        self, sock: ssl.SSLObject | ssl.SSLSocket, name: str | None, ctx: ssl.SSLContext
    ) -> None:
        if self.current is not ctx:
            sock.context = self.current
        return None

    def check(self) -> bool:
        """Reload when the files changed; True when a new certificate is now served."""
        stamp = file_stamp(*self._files)
        if stamp == self._stamp:
            return False
        try:
            fresh = self._load()
        except ConfigError as exc:
            if stamp != self._failed_stamp:  # once per change, not every poll
                log.error(
                    "TLS certificate NOT reloaded, the previous one stays in service: %s", exc
                )
                self._failed_stamp = stamp
            return False
        self._stamp = stamp
        self._failed_stamp = None
        self.current = fresh
        self.reloads += 1
        log.warning("TLS certificate reloaded from %s", self.cert)
        return True

    async def watch(self, poll_s: float = TLS_RELOAD_POLL_S) -> None:
        while True:
            await asyncio.sleep(poll_s)
            try:
                await asyncio.to_thread(self.check)
            except Exception as exc:  # keep watching; the loaded certificate stays
                log.error("TLS reload check failed: %s", exc)
