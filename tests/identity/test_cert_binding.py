"""The certificate binding, pure: the thumbprint of a certificate (RFC 8705 ``x5t#S256``)
and the answer for a bound key with, without, or with another certificate."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from garrison.domain import Reason
from garrison.identity.cert_binding import (
    CERT_FILE_MAX_BYTES,
    THUMBPRINT_CHARS,
    binding_refusal,
    is_thumbprint,
    thumbprint,
    thumbprint_of_certificate,
)
from tests.support.certs import der, issue, make_ca


@pytest.fixture
def certs(tmp_path: Path) -> tuple[bytes, bytes, Path]:
    ca = make_ca(tmp_path, "ca")
    one = issue(ca, tmp_path / "a.pem", tmp_path / "a-key.pem", client=True)
    two = issue(ca, tmp_path / "b.pem", tmp_path / "b-key.pem", client=True)
    return der(one), der(two), tmp_path / "a.pem"


def test_the_thumbprint_is_base64url_sha256_of_the_der(certs: tuple[bytes, bytes, Path]) -> None:
    one, _, _ = certs
    expected = base64.urlsafe_b64encode(hashlib.sha256(one).digest()).decode().rstrip("=")
    assert thumbprint(one) == expected
    assert len(expected) == THUMBPRINT_CHARS and is_thumbprint(expected)


def test_a_pem_or_der_file_gives_the_same_thumbprint(certs: tuple[bytes, bytes, Path]) -> None:
    one, _, pem_file = certs
    assert thumbprint_of_certificate(pem_file.read_bytes()) == thumbprint(one)
    assert thumbprint_of_certificate(one) == thumbprint(one)
    with pytest.raises(ValueError, match="no certificate"):
        thumbprint_of_certificate(b"junk")
    with pytest.raises(ValueError, match="larger than"):
        thumbprint_of_certificate(b"x" * (CERT_FILE_MAX_BYTES + 1))


def test_a_bound_key_needs_its_own_certificate(certs: tuple[bytes, bytes, Path]) -> None:
    one, two, _ = certs
    bound = thumbprint(one)
    assert binding_refusal(bound, one) is None
    assert binding_refusal(bound, None) is Reason.CREDENTIAL_CERT_MISSING
    assert binding_refusal(bound, two) is Reason.CREDENTIAL_CERT_MISMATCH
    # An unbound key does not care.
    assert binding_refusal(None, None) is None
    assert binding_refusal(None, two) is None
