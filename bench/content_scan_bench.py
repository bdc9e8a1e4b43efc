"""Content scan: what matching a prompt against the content rules costs, with Python's ``re``
and with RE2 (``google-re2``), per KiB scanned, on ordinary and hostile text.

    python bench/content_scan_bench.py [--kib 256] [--rounds 3] [--json OUT]

Three measurements, each the median of ``--rounds`` runs, reported in ns per KiB of text:

* engines: every pattern of a rule set searched once over one text, for both engines. Rule
  sets: the built-in patterns, and a typical custom set (literal alternations, bounded gaps,
  classes). Texts (each ``--kib`` KiB): English-like prose with few trigger words ("prose"),
  prose dense with the built-ins' first words ("dense": every word starts a partial match,
  the worst case for the bounded gaps), and one word repeated ("repeat").
* catastrophic: a custom pattern with nested quantifiers, ``(a+)+$``, on ``"a" * n + "!"``.
  ``re`` is timed for small n only (its time doubles per character; n is raised until one
  search passes 0.5 s); RE2 on 64 KiB.
* pipeline: ``garrison.gateway.content.scan`` end to end with the built-in rules as the
  gateway runs them (walk, normalisation, windows, RE2) on ASCII prose, on ordinary
  non-ASCII prose (accents, Cyrillic, CJK, a zero-width character: normalisation's slow
  path) and on hostile text (the built-ins' first words written with Cyrillic lookalikes:
  normalisation's slow path and RE2's worst case together).

* GIL: how fast another Python thread runs during one long search call (``re``: the
  catastrophic input at n = 22; RE2: the first built-in pattern on dense text), 100% = as
  fast as while the searching thread sleeps.

Bounded: well under a minute on the 2-core bench machine; stops by itself.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import re2

from garrison.detect.patterns import CONTENT_PATTERN_MAX_MEM, compile_pattern
from garrison.detect.rules import load_rules
from garrison.gateway.content import scan

CUSTOM = [
    r"(?i)\bproject[- ]?(zeta|omega|nightjar)\b",
    r"(?is)\binternal\b.{0,40}\b(codename|roadmap|launch date)\b",
    r"[A-Z]{3}-\d{4,6}",
    r"(?i)\b(api[_-]?key|secret[_-]?token|password)\s*[:=]",
    r"(?i)\b(bypass|disable)\b.{0,30}\b(safety|filter|guardrail)s?\b",
]
WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by",
    "at", "from", "this", "be", "are", "or", "an", "it", "not", "have", "model", "data",
    "report", "analysis", "results", "system", "method", "network", "value", "training",
]  # fmt: skip
# The built-in rules' first words: each starts a partial match (the worst case for RE2).
DENSE = [
    "reveal", "print", "show", "repeat", "synthesize", "produce", "enhance", "ignore",
    "zero", "day",
]  # fmt: skip


def _texts(kib: int, seed: int = 7) -> dict[str, str]:
    rng = random.Random(seed)
    n = kib * 1024
    prose = " ".join(rng.choice(WORDS) for _ in range(n // 3))[:n]
    dense = " ".join(rng.choice(DENSE + WORDS[:6]) for _ in range(n // 3))[:n]
    repeat = ("reveal " * (n // 7 + 1))[:n]
    return {"prose": prose, "dense": dense, "repeat": repeat}


def _median_s(fn: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engines(kib: int, rounds: int) -> list[dict[str, Any]]:
    builtin = [
        p for r in load_rules(None).rules if r.detector == "content" for p in r.params.patterns
    ]
    options = re2.Options()
    options.max_mem = CONTENT_PATTERN_MAX_MEM
    rows = []
    for set_name, patterns in (("built-in", builtin), ("custom", CUSTOM)):
        compiled = {
            "re": [re.compile(p) for p in patterns],
            "re2": [re2.compile(p, options=options) for p in patterns],
        }
        for text_name, text in _texts(kib).items():
            for engine, pats in compiled.items():
                seconds = _median_s(
                    lambda pats=pats, text=text: [p.search(text) for p in pats], rounds
                )
                rows.append(
                    {
                        "rules": set_name,
                        "text": text_name,
                        "engine": engine,
                        "ns_per_kib": round(seconds * 1e9 / kib),
                    }
                )
    return rows


def catastrophic() -> dict[str, Any]:
    pattern = r"(a+)+$"
    slow = re.compile(pattern)
    re_points = []
    n = 16
    while n <= 30:
        seconds = _median_s(lambda n=n: slow.search("a" * n + "!"), 1)
        re_points.append({"n": n, "seconds": round(seconds, 4)})
        if seconds > 0.5:
            break
        n += 2
    fast = compile_pattern(pattern)
    text = "a" * (64 * 1024 - 1) + "!"
    seconds = _median_s(lambda: fast.search(text), 3)
    return {
        "pattern": pattern,
        "re": re_points,
        "re2_64kib_seconds": round(seconds, 5),
        "re2_ns_per_kib": round(seconds * 1e9 / 64),
    }


def pipeline(kib: int, rounds: int) -> list[dict[str, Any]]:
    rules = tuple(load_rules(None).content_patterns())
    rng = random.Random(3)
    n = kib * 1024
    ascii_text = " ".join(rng.choice(WORDS) for _ in range(n // 3))[:n]
    # Ordinary non-ASCII prose: accents, another script, CJK, a zero-width joiner.
    other = ["café", "naïve", "résumé", "Grüße", "данные", "модель", "数据", "dat\u200ba"]
    mixed = " ".join(rng.choice(other + WORDS[:10]) for _ in range(n // 3))[:n]
    # Hostile: the built-ins' first words, written with Cyrillic lookalikes (both slow paths).
    hostile = " ".join(rng.choice(DENSE).replace("e", "е").replace("o", "о") for _ in range(n // 5))
    rows = []
    for name, text in (("ascii", ascii_text), ("non-ascii", mixed), ("hostile", hostile[:n])):
        body = {"model": "m", "messages": [{"role": "user", "content": text}]}
        seconds = _median_s(lambda body=body: scan(rules, body), rounds)
        rows.append({"text": name, "ns_per_kib": round(seconds * 1e9 / kib)})
    return rows


def gil(kib: int) -> dict[str, int]:
    """How much another Python thread runs while a thread searches (100%: as if idle). The
    gateway scans large bodies in a worker thread; that only frees the event loop if the
    engine releases the GIL while it matches."""
    builtin = [
        p for r in load_rules(None).rules if r.detector == "content" for p in r.params.patterns
    ]
    text = _texts(kib)["dense"]
    ticks = 0
    stop = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    thread = threading.Thread(target=spin)
    thread.start()
    try:
        before, started = ticks, time.perf_counter()
        time.sleep(0.3)
        free = (ticks - before) / (time.perf_counter() - started)
        shares = {}
        # One long call each: re on a catastrophic input, RE2 on dense text.
        slow, hostile = re.compile(r"(a+)+$"), "a" * 22 + "!"
        fast = compile_pattern(builtin[0])
        for engine, call in (
            ("re", lambda: slow.search(hostile)),
            ("re2", lambda: fast.search(text * 4)),
        ):
            before, started = ticks, time.perf_counter()
            call()
            rate = (ticks - before) / (time.perf_counter() - started)
            shares[engine] = round(100 * rate / free)
    finally:
        stop.set()
        thread.join()
    return shares


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    result = {
        "machine": f"{platform.machine()} {platform.python_implementation()} "
        f"{platform.python_version()}",
        "kib": args.kib,
        "engines": engines(args.kib, args.rounds),
        "catastrophic": catastrophic(),
        "pipeline": pipeline(args.kib, args.rounds),
        "other_thread_percent": gil(args.kib),
    }
    print(f"{'rules':9} {'text':7} {'re ns/KiB':>11} {'re2 ns/KiB':>11} {'speed-up':>9}")
    rows = result["engines"]
    for i in range(0, len(rows), 2):
        a, b = rows[i], rows[i + 1]
        ratio = a["ns_per_kib"] / max(b["ns_per_kib"], 1)
        cells = f"{a['ns_per_kib']:>11,} {b['ns_per_kib']:>11,} {ratio:>8.1f}x"
        print(f"{a['rules']:9} {a['text']:7} {cells}")
    cat = result["catastrophic"]
    print(f"\n{cat['pattern']} on 'a'*n+'!':")
    for point in cat["re"]:
        print(f"  re   n={point['n']:<3} {point['seconds']:.4f} s")
    print(f"  re2  64 KiB  {cat['re2_64kib_seconds']:.5f} s ({cat['re2_ns_per_kib']:,} ns/KiB)")
    print("\nscan() end to end, built-in rules:")
    for row in result["pipeline"]:
        print(f"  {row['text']:9} {row['ns_per_kib']:>9,} ns/KiB")
    shares = result["other_thread_percent"]
    print(
        f"\nanother thread runs at {shares['re']}% (re) / {shares['re2']}% (RE2) while one searches"
    )
    print(f"\nload average: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    main()
