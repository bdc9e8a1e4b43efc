"""Replicas starting together on one key directory (a fresh one, or one made before tokens
existed) each create ``token.keys`` if it is missing: one creates it, every one reads the
same whole key. Found by bench/replicas_bench.py: a key file created with O_EXCL and then
written was read empty by another replica's first start ("holds no token-signing key")."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path
from typing import Any

from garrison.identity.access_tokens import TOKEN_KEY_FILE, TokenSigner, rotate_token_key

STARTS = 8  # replicas starting at once
ROUNDS = 20  # fresh key directories


def _start(key_dir: str, ready: Any, out: Any) -> None:
    ready.wait()
    try:
        out.put(TokenSigner.from_dir(Path(key_dir)).kid)
    except Exception as exc:  # reported to the test, which fails on it
        out.put(f"error: {exc}")


def test_replicas_starting_together_share_one_whole_token_key(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for n in range(ROUNDS):
        key_dir = tmp_path / f"keys-{n}"
        key_dir.mkdir(mode=0o700)
        ready, out = context.Barrier(STARTS), context.Queue()
        starts = [
            context.Process(target=_start, args=(str(key_dir), ready, out)) for _ in range(STARTS)
        ]
        for process in starts:
            process.start()
        kids = [out.get(timeout=30) for _ in starts]
        for process in starts:
            process.join(10)
        assert len(set(kids)) == 1 and not kids[0].startswith("error"), kids
        assert (key_dir / TOKEN_KEY_FILE).stat().st_mode & 0o777 == 0o600
        assert [p.name for p in key_dir.iterdir()] == [TOKEN_KEY_FILE]  # no temporary left


# Token-key rotations at once, and rounds of them: each round's keys are all still there.
ROTATORS = 2  # within TOKEN_KEYS_KEPT - 1, so no rotation's key is pushed out by design
ROTATION_ROUNDS = 10


def test_rotations_at_once_keep_each_new_token_key(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir(mode=0o700)
    TokenSigner.from_dir(key_dir)
    for _ in range(ROTATION_ROUNDS):
        start = threading.Barrier(ROTATORS)
        kids: list[str] = []

        def rotate(start: threading.Barrier = start, kids: list[str] = kids) -> None:
            start.wait(10)
            kids.append(rotate_token_key(key_dir))

        threads = [threading.Thread(target=rotate) for _ in range(ROTATORS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(kids) == ROTATORS
        assert set(kids) <= set(TokenSigner.from_dir(key_dir, create=False).keys.by_kid)
