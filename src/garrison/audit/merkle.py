"""The RFC 6962 Merkle tree (SHA-256), pure and with no I/O.

    leaf hash  H(0x00 ‖ leaf)          node hash  H(0x01 ‖ left ‖ right)
    MTH of n leaves splits at k, the largest power of two below n.

* ``CompactTree`` keeps only the right edge (one hash per set bit of the size), so an append
  costs O(1) amortised hashes and the root O(log n) — the writer's hot path.
* ``inclusion_proof`` / ``consistency_proof`` build RFC 6962 §2.1.1 / §2.1.2 proofs from any
  ``RangeHasher`` (MTH of a leaf range); ``verify_inclusion`` / ``verify_consistency`` check
  them as RFC 9162 §2.1.3.2 / §2.1.4.2 describe, and raise ``ProofError`` on any mismatch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

_sha256 = hashlib.sha256
EMPTY_ROOT = _sha256(b"").digest()


class ProofError(Exception):
    """A proof does not verify."""


def leaf_hash(leaf: bytes) -> bytes:
    return _sha256(b"\x00" + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n ≥ 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already ``leaf_hash``-ed)."""
    tree = CompactTree()
    for h in hashes:
        tree.append(h)
    return tree.root()


class CompactTree:
    """The right edge of the tree: perfect subtree roots, largest first."""

    __slots__ = ("_edge", "size")

    def __init__(self, size: int = 0, edge: Sequence[bytes] = ()) -> None:
        if len(edge) != bin(size).count("1"):
            raise ValueError("edge does not match the tree size")
        self.size = size
        self._edge = list(edge)

    @property
    def edge(self) -> tuple[bytes, ...]:
        return tuple(self._edge)

    def append(self, leaf_hash_value: bytes) -> None:
        h = leaf_hash_value
        size = self.size
        # Each trailing 1 bit of the old size is a perfect subtree that merges with the new one.
        while size & 1:
            h = node_hash(self._edge.pop(), h)
            size >>= 1
        self._edge.append(h)
        self.size += 1

    def extend(self, leaf_hashes: Sequence[bytes]) -> None:
        """Append many leaf hashes: aligned perfect blocks are hashed level by level, which
        is several times faster than leaf-by-leaf appends (verification's hot loop)."""
        i, n = 0, len(leaf_hashes)
        while i < n:
            room = (n - i).bit_length() - 1  # largest block that fits
            align = (self.size & -self.size).bit_length() - 1 if self.size else room
            height = min(room, align)
            if height == 0:
                self.append(leaf_hashes[i])
                i += 1
                continue
            level = list(leaf_hashes[i : i + (1 << height)])
            while len(level) > 1:
                level = [
                    _sha256(b"\x01" + a + b).digest()
                    for a, b in zip(level[::2], level[1::2], strict=True)
                ]
            self.append_subtree(level[0], height)
            i += 1 << height

    def append_subtree(self, h: bytes, height: int) -> None:
        """Append a perfect subtree of ``2**height`` leaves (the size must be a multiple)."""
        if self.size % (1 << height):
            raise ValueError("a subtree must start at a multiple of its size")
        size = self.size >> height
        while size & 1:
            h = node_hash(self._edge.pop(), h)
            size >>= 1
        self._edge.append(h)
        self.size += 1 << height

    def root(self) -> bytes:
        if not self._edge:
            return EMPTY_ROOT
        h = self._edge[-1]
        for left in reversed(self._edge[:-1]):
            h = node_hash(left, h)
        return h

    def copy(self) -> CompactTree:
        return CompactTree(self.size, self._edge)


RangeHasher = Callable[[int, int], bytes]
"""MTH of leaves [start, end)."""


class LeafHashes:
    """A ``RangeHasher`` over leaf hashes held in memory, caching aligned perfect subtrees
    so repeated proofs over a large log cost O(log n) each after the first."""

    def __init__(self, hashes: Sequence[bytes]) -> None:
        self._hashes = hashes
        self._cache: dict[tuple[int, int], bytes] = {}

    def __len__(self) -> int:
        return len(self._hashes)

    def __call__(self, start: int, end: int) -> bytes:
        n = end - start
        if n <= 0:
            return EMPTY_ROOT
        if n == 1:
            return self._hashes[start]
        key = (start, end)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        k = _split(n)
        h = node_hash(self(start, start + k), self(start + k, end))
        if n & (n - 1) == 0 and n >= 64:  # keep perfect subtrees worth remembering
            self._cache[key] = h
        return h


def inclusion_proof(index: int, size: int, mth: RangeHasher) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"index {index} outside a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(mth(start + k, end))
            end = start + k
        else:
            proof.append(mth(start, start + k))
            start += k
    proof.reverse()
    return proof


def consistency_proof(old_size: int, new_size: int, mth: RangeHasher) -> list[bytes]:
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from {old_size} to {new_size}")
    proof: list[bytes] = []

    def sub(m: int, start: int, end: int, complete: bool) -> None:
        n = end - start
        if m == n:
            if not complete:
                proof.append(mth(start, end))
            return
        k = _split(n)
        if m <= k:
            sub(m, start, start + k, complete)
            proof.append(mth(start + k, end))
        else:
            sub(m - k, start + k, end, False)
            proof.append(mth(start, start + k))

    sub(old_size, 0, new_size, True)
    return proof


def verify_inclusion(
    leaf_hash_value: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    if not 0 <= index < size:
        raise ProofError("index outside the tree")
    fn, sn = index, size - 1
    r = leaf_hash_value
    for p in proof:
        if sn == 0:
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof too short")
    if r != root:
        raise ProofError("root mismatch")


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    if old_size > new_size or old_size <= 0:
        raise ProofError("bad sizes")
    if old_size == new_size:
        if proof:
            raise ProofError("proof must be empty for equal sizes")
        if old_root != new_root:
            raise ProofError("roots differ for equal sizes")
        return
    path = list(proof)
    if old_size & (old_size - 1) == 0:  # a power of two: the old root is the first node
        path.insert(0, old_root)
    if not path:
        raise ProofError("empty proof")
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("proof too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("proof too short")
    if fr != old_root:
        raise ProofError("old root mismatch")
    if sr != new_root:
        raise ProofError("new root mismatch")
