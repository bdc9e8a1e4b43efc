"""Caller-chosen text made inert for where it is shown: a terminal, Markdown, a CSV cell.

Model names asked for, user agents, reasons, justifications, notes and titles are written
by callers. Shown as they are, they could drive the operator's terminal (escape sequences:
clear the screen, rewrite lines, plant a hyperlink, set the window title), render as links,
images or HTML in a Markdown viewer, or run as a formula when a CSV file is opened in a
spreadsheet. Each function here neutralises one of those, keeping the text readable.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, and the Unicode bidirectional
# controls that reorder what a terminal shows ("Trojan Source").
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\t\n]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_safe(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as a visible escape (``\\x1b``), so an
    escape sequence prints as characters instead of acting. ``multiline``: newlines and tabs
    are kept (text that is one block of its own); otherwise they are shown escaped too (a
    table cell or a one-line field must not fake further rows)."""
    out = _CONTROLS.sub(_visible, text)
    return out if multiline else _LINE_BREAKS.sub(_visible, out)


# Markdown inline syntax a caller could use to make a link, an image, code or emphasis;
# "_" only where it could open or close emphasis (not inside a word such as bad_secret).
_MD_SPECIAL = re.compile(r"[\\`*\[\]~|]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
# Bare links a GFM viewer would turn into anchors: scheme://…, www.…, and e-mail addresses.
_MD_AUTOLINK = re.compile(r"(?<=[0-9A-Za-z])(:)(?=//)|(?i:(?<=\bwww)(\.))|(@)")


def markdown_inline(text: str) -> str:
    """One line of inline Markdown showing ``text`` literally: control characters and line
    breaks become spaces, HTML is escaped, and link, image, code, emphasis and table syntax
    and bare links are backslash-escaped (CommonMark renders an escaped punctuation mark as
    itself)."""
    import html

    printable = "".join(ch if ch.isprintable() else " " for ch in text)
    escaped = _MD_SPECIAL.sub(lambda m: "\\" + m.group(), printable)
    escaped = _MD_AUTOLINK.sub(lambda m: "\\" + m.group(), escaped)
    return html.escape(escaped, quote=False)


# A spreadsheet treats a cell starting with one of these as a formula (CSV injection).
CSV_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: object) -> str:
    """A CSV field that a spreadsheet shows as text: a leading formula character is
    prefixed with ``'`` (the OWASP recommendation). Numbers pass unchanged."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(CSV_FORMULA_PREFIXES) else text
