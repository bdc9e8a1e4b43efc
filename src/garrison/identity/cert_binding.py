"""Keys bound to a client certificate (RFC 8705, "certificate-bound access tokens", applied
to a service account's API key): the key records the SHA-256 thumbprint of a certificate
(``x5t#S256``), and a call made with it is taken only over a TLS connection on which the
client proved it holds that certificate's private key. A key copied off the machine without
that private key is refused.

Pure: DER bytes in, a thumbprint or a reason code out. The listener verifies the
certificate's chain and validity during the handshake (``garrison.tls.listener``); this
module only compares what the handshake left.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from garrison.domain import Reason

# base64url without padding of a 32-byte SHA-256: 43 characters (RFC 8705 section 3.1).
THUMBPRINT_CHARS = 43
_THUMBPRINT = re.compile(rf"[A-Za-z0-9_-]{{{THUMBPRINT_CHARS}}}")
# A certificate file read to bind a key is a certificate, perhaps with its chain: a few KB.
CERT_FILE_MAX_BYTES = 256 * 1024


def thumbprint(der: bytes) -> str:
    """The ``x5t#S256`` of a DER certificate: base64url(SHA-256(DER)), no padding."""
    digest = hashlib.sha256(der).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def is_thumbprint(text: str) -> bool:
    return _THUMBPRINT.fullmatch(text) is not None


def thumbprint_of_certificate(data: bytes) -> str:
    """The thumbprint of the first certificate in ``data`` (PEM, or one DER certificate).
    Only the certificate is read: a private key in the same file is left alone (it never
    leaves the client). ValueError when there is no certificate."""
    if len(data) > CERT_FILE_MAX_BYTES:
        raise ValueError(f"larger than {CERT_FILE_MAX_BYTES} bytes: not a certificate file")
    if b"-----BEGIN CERTIFICATE-----" in data:
        cert = x509.load_pem_x509_certificates(data)[0]
    else:
        try:
            cert = x509.load_der_x509_certificate(data)
        except ValueError:
            raise ValueError("no certificate in it (PEM or DER expected)") from None
    return thumbprint(cert.public_bytes(serialization.Encoding.DER))


def binding_refusal(bound: str | None, peer_der: bytes | None) -> Reason | None:
    """None when the key is not bound, or the connection's client certificate is the one
    it is bound to; else why not. ``peer_der``: the certificate the client proved it holds
    in this connection's handshake (None: no TLS, or no certificate sent)."""
    if bound is None:
        return None
    if peer_der is None:
        return Reason.CREDENTIAL_CERT_MISSING
    if not hmac.compare_digest(thumbprint(peer_der), bound):
        return Reason.CREDENTIAL_CERT_MISMATCH
    return None
