"""Text a caller sends in a header that ends up in an audit event, checked before it is used.

aiohttp decodes header bytes as UTF-8 with ``surrogateescape``: a byte that is not UTF-8
becomes a lone surrogate, which no JSON encoder accepts. Such text is refused here, with a
400 in the API's shape, before the model is looked up: the refusal is the same for every
model name, so it tells the caller nothing about which models exist.

Pure: headers in, text out (or ``BadRequest``).
"""

from __future__ import annotations

from collections.abc import Sequence

from multidict import MultiMapping

from garrison.errors import BadRequest

# A caller may say why they need a model; models that require it refuse calls without it.
JUSTIFICATION_HEADER = "x-garrison-justification"
# A sentence and a ticket reference; kept in the audit event.
JUSTIFICATION_MAX_CHARS = 500


def _invalid(name: str, why: str) -> BadRequest:
    return BadRequest(f"header {name}: {why}", public_message=f"Header '{name}' {why}.")


def header_text(values: Sequence[str], name: str, *, max_chars: int) -> str:
    """The one value of header ``name`` (``""`` when absent), stripped: printable UTF-8 of
    at most ``max_chars`` characters. ``BadRequest`` otherwise (a repeated header too: which
    one would the record keep?)."""
    if not values:
        return ""
    if len(values) > 1:
        raise _invalid(name, "is given more than once")
    value = values[0].strip()
    if len(value) > max_chars:
        raise _invalid(name, f"is longer than {max_chars} characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _invalid(name, "is not valid UTF-8") from None
    if not value.isprintable():
        raise _invalid(name, "contains control or non-printable characters")
    return value


def caller_justification(headers: MultiMapping[str]) -> str:
    """The caller's justification (``""`` if none), checked."""
    values = headers.getall(JUSTIFICATION_HEADER, [])
    return header_text(values, JUSTIFICATION_HEADER, max_chars=JUSTIFICATION_MAX_CHARS)
