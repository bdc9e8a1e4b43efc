"""Terminal and CSV safety of caller-chosen text (``garrison.safe_text``)."""

from __future__ import annotations

import pytest

from garrison.safe_text import CSV_FORMULA_PREFIXES, csv_cell, terminal_safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x1b[2Jb", "a\\x1b[2Jb"),  # clear screen
        ("\x1b]0;owned\x07", "\\x1b]0;owned\\x07"),  # window title
        (
            "\x1b]8;;https://evil\x1b\\x\x1b]8;;\x1b\\",
            "\\x1b]8;;https://evil\\x1b\\x\\x1b]8;;\\x1b\\",
        ),
        ("a\x9b31mb", "a\\x9b31mb"),  # C1 CSI
        ("\x00\x08\x7f", "\\x00\\x08\\x7f"),
        ("abc\u202edcba", "abc\\u202edcba"),  # right-to-left override
        ("x\ry", "x\\x0dy"),
        ("x\ny\tz", "x\\x0ay\\x09z"),
    ],
)
def test_control_characters_are_shown_not_obeyed(text: str, shown: str) -> None:
    assert terminal_safe(text) == shown
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in terminal_safe(text))


def test_multiline_text_keeps_newlines_and_tabs_only() -> None:
    assert terminal_safe("a\n\tb\x1b[0m\r", multiline=True) == "a\n\tb\\x1b[0m\\x0d"


def test_ordinary_text_is_unchanged() -> None:
    text = "gpt-4o (eu) — naïve café 日本 [red]x[/red]"
    assert terminal_safe(text) == text


@pytest.mark.parametrize("prefix", CSV_FORMULA_PREFIXES)
def test_csv_formula_prefixes_are_neutralised(prefix: str) -> None:
    assert csv_cell(f'{prefix}HYPERLINK("https://evil")') == f'\'{prefix}HYPERLINK("https://evil")'


@pytest.mark.parametrize(("value", "shown"), [(-3, "-3"), (2.5, "2.5"), (None, ""), ("ok", "ok")])
def test_csv_numbers_and_plain_text_pass(value: object, shown: str) -> None:
    assert csv_cell(value) == shown
