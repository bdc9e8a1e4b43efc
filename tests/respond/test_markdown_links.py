"""Caller-chosen strings in the Markdown report cannot render as links, images, HTML or
formatting: a model named ``[click](https://evil)`` shows as that text.
Report cells carry no control characters (no \\r to split a row, no ESC for a terminal to
obey) and escape HTML.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest

from garrison.respond.render import to_html, to_markdown
from garrison.safe_text import markdown_inline


@pytest.mark.parametrize(
    ("hostile", "shown"),
    [
        ("[click](https://evil.example)", r"\[click\](https\://evil.example)"),
        ("![pixel](https://evil.example/t.png)", r"!\[pixel\](https\://evil.example/t.png)"),
        ("[ref][1]", r"\[ref\]\[1\]"),
        ("<https://evil.example>", r"&lt;https\://evil.example&gt;"),
        ("https://evil.example/x", r"https\://evil.example/x"),
        ("www.evil.example", r"www\.evil.example"),
        ("mallory@evil.example", r"mallory\@evil.example"),
        ("`code` **bold** _em_ ~~gone~~", r"\`code\` \*\*bold\*\* \_em\_ \~\~gone\~\~"),
        ("a\\[b]", r"a\\\[b\]"),
    ],
)
def test_link_image_and_formatting_syntax_is_escaped(hostile: str, shown: str) -> None:
    assert markdown_inline(hostile) == shown
    md = to_markdown(_report(hostile))
    assert f"| model {shown} | 1 | 0 |" in md
    assert "](" not in md.replace("\\](", "")


@pytest.mark.parametrize(
    "plain", ["credential.bad_secret", "gpt-4o/mini v1.2 (eu)", "12:30", "10.0.0.1:443"]
)
def test_ordinary_text_is_left_as_it_is(plain: str) -> None:
    assert markdown_inline(plain) == plain


def _report(text: str) -> dict[str, Any]:
    """A report whose every caller-supplied field holds ``text``."""
    return {
        "incident": {
            "id": "inc_x",
            "title": f"title {text}",
            "status": "open",
            "opened_by": "me",
            "opened_at": 0.0,
            "since": 0.0,
            "subjects": {"vendors": ["v"], "principals": [], "credentials": []},
        },
        "principals": [f"p {text}"],
        "first_seen": None,
        "last_seen": None,
        "models": [
            {
                "model": f"model {text}",
                "calls": 1,
                "refused": 0,
                "tokens_in": 0,
                "tokens_out": 0,
                "first": 0.0,
                "last": 0.0,
            }
        ],
        "refusals": [{"model": f"model {text}", "reason": "model.unknown", "count": 1}],
        "sources": [],
        "others_from_same_sources": [],
        "credentials": [],
        "locks": [
            {
                "id": "lck_1",
                "kind": "vendor",
                "target": "v",
                "reason": f"reason {text}",
                "created_at": 0.0,
                "lifted_at": None,
            }
        ],
        "notes": [{"at": 0.0, "author": "me", "kind": "note", "text": f"note {text}"}],
        "events": 0,
        "timeline": [
            {
                "index": 0,
                "at": 0.0,
                "name": "request.denied",
                "principal_id": "prn_1",
                "credential_id": None,
                "model": f"model {text}",
                "client_address": "127.0.0.1",
                "status": 404,
                "reasons": ["model.unknown"],
            }
        ],
        "generated_at": 0.0,
    }


# ── report cells ───────────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(
    "control",
    ["\r", "\x1b", "\x00", "\x07", "\x08", "\x0b", "\x0c", "\x7f"],
    ids=["CR", "ESC", "NUL", "BEL", "BS", "VT", "FF", "DEL"],
)
def test_markdown_holds_no_ascii_control_character(control: str) -> None:
    md = to_markdown(_report(f"a{control}[2Jb\nc"))
    assert control not in md
    assert [c for c in md if c != "\n" and unicodedata.category(c) == "Cc" and ord(c) < 0x80] == []
    # Every table row is still one line, starting and ending with its pipe.
    for line in md.split("\n"):
        if line.startswith("|"):
            assert line.endswith("|"), line


def test_markdown_holds_no_c1_control_character() -> None:
    # U+009B is CSI in its one-character form: a terminal may obey it like ESC [.
    md = to_markdown(_report("a\x9b2Jb\x85c"))
    assert [hex(ord(ch)) for ch in md if unicodedata.category(ch) == "Cc" and ch != "\n"] == []


def test_a_carriage_return_cannot_split_a_table_row() -> None:
    md = to_markdown(_report("x\r| injected | row |\ry"))
    assert "\r" not in md
    rows = [line for line in md.split("\n") if line.startswith("| ") and "note" in line]
    assert rows == ["| 1970-01-01 00:00:00Z | me | note | note x \\| injected \\| row \\| y |"]


def test_markdown_escapes_html() -> None:
    md = to_markdown(_report("<script>alert(1)</script> & <img src=x onerror=alert(2)>"))
    assert "<script>" not in md and "<img" not in md
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(2)&gt;" in md
    assert md.startswith("# Incident inc_x: title &lt;script&gt;")


def test_plain_text_is_unchanged_in_markdown() -> None:
    md = to_markdown(_report("gpt-4o/mini v1.2 (eu)"))
    assert "| model gpt-4o/mini v1.2 (eu) | 1 | 0 |" in md


def test_html_rendering_is_unaffected_and_escaped() -> None:
    page = to_html(_report("<b>bold</b>"))
    assert "<b>bold</b>" not in page
    assert "&lt;b&gt;bold&lt;/b&gt;" in page
