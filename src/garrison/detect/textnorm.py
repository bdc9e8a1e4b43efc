r"""Text normalisation for the content rules: a prompt is matched in a canonical form, so
writing a trigger phrase with zero-width characters, fullwidth or mathematical letters,
combining marks or Cyrillic/Greek lookalikes does not step around a rule.

``normalise`` does, in order:

1. NFKD: compatibility decomposition (fullwidth ``ｓａｒｉｎ``, mathematical ``𝐬𝐚𝐫𝐢𝐧``, ligatures
   and odd spaces become their plain forms; accented letters become letter + mark);
2. removes Unicode format characters (category Cf: zero-width space and joiners, soft
   hyphen, bidi controls, tag characters), the other default-ignorable characters that are
   not Cf (variation selectors, the combining grapheme joiner, Hangul fillers) and the
   combining diacritical marks (so ``s̶a̶r̶i̶n̶`` and ``sárin`` read ``sarin``) — every
   nonspacing and enclosing mark (categories Mn, Me) of any script, in fact;
3. folds the Latin lookalikes of ``CONFUSABLES`` (Cyrillic and Greek letters drawn like
   Latin ones, from Unicode's confusables.txt) to the Latin letter, and the enclosed Latin
   capitals NFKD leaves alone (negative circled and squared letters, regional indicators);
4. NFC: recomposes whatever is left (together with 1, the NFKC form of the result).

Control characters are handled in every text, ASCII too: the C0 and C1 controls that are not
whitespace (NUL, backspace, escape, DEL …) are removed like format characters (``sa\x00rin``
reads ``sarin``), and the whitespace RE2's ``\s`` does not match and NFKD keeps (vertical
tab, the information separators, NEL, the Ogham space mark, line and paragraph separators)
becomes a space (``system\u2028prompt`` reads ``system prompt``).

Content patterns are passed through the same function when they load, so a rule written in
Cyrillic or Greek, or with accents, still matches its own script's text.

ASCII text without controls is already in this form and is returned as it is (the common
case costs one ``isascii`` check and one search for controls, ~3 ms per MiB).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

# Latin lookalikes from Cyrillic and Greek (a subset of Unicode's confusables.txt: the
# letters drawn like a Latin letter in common fonts). The Cyrillic pairs fold case-consistently
# (н → h with Н → H), so a case-insensitive rule written in Cyrillic still matches; three Greek
# lowercase letters fold unlike their capitals (η → n but Η → H; ν → v, Ν → N; υ → u, Υ → Y):
# a case-insensitive rule written in Greek should avoid them.
CONFUSABLES: dict[str, str] = {
    # Cyrillic
    "а": "a", "в": "b", "е": "e", "һ": "h", "і": "i", "ј": "j", "к": "k", "ӏ": "l",
    "м": "m", "о": "o", "р": "p", "ԛ": "q", "ѕ": "s", "т": "t",
    "ѵ": "v", "ԝ": "w", "х": "x", "у": "y", "ԁ": "d", "ɡ": "g", "ү": "y",
    "А": "A", "В": "B", "С": "C", "Е": "E", "Н": "H", "І": "I", "Ј": "J", "К": "K",
    "М": "M", "О": "O", "Р": "P", "Ԛ": "Q", "Ѕ": "S", "Т": "T", "Ѵ": "V", "Ԝ": "W",
    "Х": "X", "У": "Y", "Ү": "Y", "Ӏ": "l", "с": "c", "н": "h", "Һ": "H", "Ԁ": "D",
    # Greek
    "α": "a", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "γ": "y", "ω": "w",
    "Α": "A", "Β": "B", "Ε": "E", "Ζ": "Z", "Η": "H", "Ι": "I", "Κ": "K", "Μ": "M",
    "Ν": "N", "Ο": "O", "Ρ": "P", "Τ": "T", "Υ": "Y", "Χ": "X",
    # Latin letters outside ASCII drawn like ASCII ones
    "ı": "i", "ȷ": "j", "ɑ": "a", "ʏ": "y", "ɪ": "i",
}  # fmt: skip

# Default-ignorable characters outside category Cf, and the combining diacritical marks.
_IGNORED_RANGES: tuple[tuple[int, int], ...] = (
    (0x0300, 0x036F),  # combining diacritical marks (incl. the grapheme joiner U+034F)
    (0x115F, 0x1160),  # Hangul choseong/jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x1AB0, 0x1AFF),  # combining diacritical marks extended
    (0x1DC0, 0x1DFF),  # combining diacritical marks supplement
    (0x20D0, 0x20FF),  # combining marks for symbols (enclosing circles, strokes)
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFE20, 0xFE2F),  # combining half marks
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0100, 0xE01EF),  # variation selectors supplement
)


# Removed wherever they are: format characters (Cf), and every nonspacing (Mn) and enclosing
# (Me) mark, not only the Latin diacritics: a Hebrew point, an Arabic mark or a musical
# combining symbol after each letter (``s\u05b0a\u05b0r\u05b0i\u05b0n``) hid a word as
# well as U+0336 did.
_DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})
# Enclosed Latin capitals NFKD leaves alone (🅢🅐🅡🅘🅝, 🆂🅰🆁🅸🅽, 🇸🇦🇷🇮🇳 read "SARIN" to a
# model): negative circled, negative squared, regional indicators; A..Z from each start.
_ENCLOSED_LATIN_STARTS = (0x1F150, 0x1F170, 0x1F1E6)
_LATIN_LETTERS = 26
# The last code point of the Basic Multilingual Plane, and any character above it.
_BMP_LAST = 0xFFFF
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")

# Where format characters are looked for: the planes Unicode assigns characters in (3 and 4
# hold only ideographs, 15 and 16 are private use).
_CF_PLANES = ((0x80, 0x3FFFF), (0xE0000, 0xEFFFF))


def _char_class(codes: list[int]) -> re.Pattern[str]:
    """One character class of runs (a class of ranges stays on ``re``'s fast path)."""
    runs: list[tuple[int, int]] = []
    for code in sorted(codes):
        if runs and code == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], code)
        else:
            runs.append((code, code))
    body = "".join(
        re.escape(chr(first)) + ("-" + re.escape(chr(last)) if last > first else "")
        for first, last in runs
    )
    return re.compile(f"[{body}]+")


@dataclass(frozen=True, slots=True)
class _Tables:
    dropped: re.Pattern[str]  # format characters, other ignorables, marks (in the BMP)
    # Above U+FFFF, one str.translate table: the dropped characters to None, the enclosed
    # Latin letters without a compatibility form to their letter.
    astral: dict[int, str | None]
    lookalikes: re.Pattern[str]  # any key of CONFUSABLES
    fold: dict[int, str]  # str.translate table for CONFUSABLES


@functools.cache
def _tables() -> _Tables:
    """The tables of steps 2 and 3 (built once: see ``prepare``)."""
    dropped = [
        code
        for first, last in _CF_PLANES
        for code in range(first, last + 1)
        if unicodedata.category(chr(code)) in _DROPPED_CATEGORIES
    ]
    for first, last in _IGNORED_RANGES:
        dropped.extend(range(first, last + 1))
    return _Tables(
        # ``re`` matches a class of BMP characters with one table lookup, but a class that
        # also holds characters above U+FFFF as a list of ranges tried one by one (five times
        # slower on accented text, ten on emoji): those go through a translate table.
        dropped=_char_class([code for code in dropped if code <= _BMP_LAST]),
        astral={
            **dict.fromkeys(code for code in dropped if code > _BMP_LAST),
            **{
                first + n: chr(ord("A") + n)
                for first in _ENCLOSED_LATIN_STARTS
                for n in range(_LATIN_LETTERS)
            },
        },
        lookalikes=_char_class([ord(k) for k in CONFUSABLES]),
        fold={ord(k): v for k, v in CONFUSABLES.items()},
    )


# Controls that are not whitespace: removed (as invisible as format characters).
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]+")
# Whitespace outside RE2's ``\s`` ([\t\n\f\r ]) that NFKD leaves as it is: one space.
_ODD_SPACES = re.compile("[\x0b\x1c-\x1f\x85\u1680\u2028\u2029]+")
# Either of the two in ASCII text (one search keeps the ASCII fast path fast).
_ASCII_ODD = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f]")


def _controls(text: str) -> str:
    text = _CONTROLS.sub("", text)
    return _ODD_SPACES.sub(" ", text)


def prepare() -> None:
    """Build the tables now (~0.1 s), so the first non-ASCII prompt does not pay for it."""
    _tables()


def normalise(text: str) -> str:
    """The canonical form content patterns are matched against (see the module docstring).
    Each step runs only when the text holds something for it to do (a regex search, at C
    speed), so ordinary non-ASCII text costs two normalisation passes and two searches."""
    if text.isascii():
        return _controls(text) if _ASCII_ODD.search(text) else text
    tables = _tables()
    decomposed = _controls(unicodedata.normalize("NFKD", text))
    if tables.dropped.search(decomposed):
        decomposed = tables.dropped.sub("", decomposed)
    if _ASTRAL.search(decomposed):
        decomposed = decomposed.translate(tables.astral)
    if tables.lookalikes.search(decomposed):
        decomposed = decomposed.translate(tables.fold)
    return unicodedata.normalize("NFC", decomposed)
