"""Caller-chosen strings in the Markdown report cannot render as links, images, HTML or
formatting: a model named ``[click](https://evil)`` shows as that text."""

from __future__ import annotations

import pytest

from garrison.respond.render import to_markdown
from garrison.safe_text import markdown_inline
from tests.respond.test_review_fixes import _report


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
