"""The RFC 6962 Merkle tree: published test vectors and property tests against a reference
implementation written here from the RFC's definitions (not from the module under test)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from garrison.audit.merkle import (
    EMPTY_ROOT,
    CompactTree,
    LeafHashes,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_of,
    verify_consistency,
    verify_inclusion,
)

# ── published test vectors ─────────────────────────────────────────────────────────────────
# The 8-leaf test tree used by Certificate Transparency, with its roots, audit paths and
# consistency proofs, from:
#   google/certificate-transparency  python/ct/crypto/in_memory_merkle_tree_test.py
#     (test_vector_data, precomputed_path_test_vectors, precomputed_proof_test_vectors)
#   transparency-dev/merkle          proof/verify_test.go
#     (leaves, roots, inclusionProofs — 1-based leaf numbers there —, consistencyProofs,
#      and the corruptInclusionProof / corruptConsistencyProof probes imitated below)
LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}
EMPTY_TREE_ROOT = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
# (0-based leaf index, tree size, audit path)
INCLUSION_VECTORS = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
# (old size, new size, proof)
CONSISTENCY_VECTORS = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]
SOME_HASH = bytes.fromhex("abacaba000000000000000000000000000000000000000000060061e00123456")
VECTOR_HASHES = [leaf_hash(d) for d in LEAVES]


# ── a reference implementation, straight from RFC 6962 §2.1 ────────────────────────────────
def _h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def ref_mth(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) over leaf inputs, recursively as RFC 6962 §2.1 defines it."""
    n = len(leaves)
    if n == 0:
        return _h(b"")
    if n == 1:
        return _h(b"\x00" + leaves[0])
    k = 1
    while k * 2 < n:
        k *= 2
    return _h(b"\x01" + ref_mth(leaves[:k]) + ref_mth(leaves[k:]))


def ref_range(leaves: Sequence[bytes]) -> Callable[[int, int], bytes]:
    """An uncached ``RangeHasher``: MTH of leaves [start, end) recomputed from scratch."""
    return lambda start, end: ref_mth(leaves[start:end])


def flip(h: bytes, bit: int) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


def leaves_for(salt: int, n: int) -> list[bytes]:
    """``n`` distinct leaf inputs (distinct leaves keep a wrong index from verifying by
    symmetry: two equal leaves really are at both positions)."""
    return [f"{salt}:{i}".encode() for i in range(n)]


def raises_proof_error(fn: Callable[..., object], *args: object) -> bool:
    try:
        fn(*args)
    except ProofError:
        return True
    return False


# ── vectors: hashing and roots ─────────────────────────────────────────────────────────────
def test_empty_tree_root_is_the_hash_of_nothing() -> None:
    assert EMPTY_ROOT.hex() == EMPTY_TREE_ROOT
    assert CompactTree().root().hex() == EMPTY_TREE_ROOT


def test_leaf_and_node_hashes_use_the_rfc_domain_prefixes() -> None:
    # The root of the one-leaf tree of "" is H(0x00), and of two leaves H(0x01 ‖ l0 ‖ l1).
    assert leaf_hash(b"").hex() == ROOTS[1]
    assert _h(b"\x01" + VECTOR_HASHES[0] + VECTOR_HASHES[1]).hex() == ROOTS[2]


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_compact_tree_root_matches_the_published_root(size: int) -> None:
    tree = CompactTree()
    for h in VECTOR_HASHES[:size]:
        tree.append(h)
    assert tree.root().hex() == ROOTS[size]


@pytest.mark.parametrize("size", sorted(ROOTS))
def test_root_of_matches_the_published_root(size: int) -> None:
    assert root_of(VECTOR_HASHES[:size]).hex() == ROOTS[size]


# ── vectors: inclusion ─────────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_inclusion_proof_matches_the_published_path(index: int, size: int, path: list[str]) -> None:
    proof = inclusion_proof(index, size, LeafHashes(VECTOR_HASHES[:size]))
    assert [p.hex() for p in proof] == path


@pytest.mark.parametrize(("index", "size", "path"), INCLUSION_VECTORS)
def test_published_inclusion_path_verifies(index: int, size: int, path: list[str]) -> None:
    proof = [bytes.fromhex(p) for p in path]
    verify_inclusion(VECTOR_HASHES[index], index, size, proof, bytes.fromhex(ROOTS[size]))


def _corrupt_inclusion(
    index: int, size: int, proof: list[bytes], root: bytes, leaf: bytes
) -> list[tuple[str, tuple[bytes, int, int, list[bytes], bytes]]]:
    """The probes of transparency-dev/merkle's corruptInclusionProof."""
    probes = [
        ("index - 1", (leaf, index - 1, size, proof, root)),
        ("index + 1", (leaf, index + 1, size, proof, root)),
        ("index ^ 2", (leaf, index ^ 2, size, proof, root)),
        ("size * 2", (leaf, index, size * 2, proof, root)),
        ("size / 2", (leaf, index, size // 2, proof, root)),
        ("wrong leaf", (_h(b"WrongLeaf"), index, size, proof, root)),
        ("empty root", (leaf, index, size, proof, bytes.fromhex(EMPTY_TREE_ROOT))),
        ("random root", (leaf, index, size, proof, SOME_HASH)),
        ("trailing garbage", (leaf, index, size, [*proof, b""], root)),
        ("trailing root", (leaf, index, size, [*proof, root], root)),
        ("preceding garbage", (leaf, index, size, [b"", *proof], root)),
        ("preceding root", (leaf, index, size, [root, *proof], root)),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 3)
        probes.append((f"proof[{i}] bit 3", (leaf, index, size, bad, root)))
    if proof:
        probes.append(("removed component", (leaf, index, size, proof[:-1], root)))
    if len(proof) > 1:
        probes.append(
            ("inserted component", (leaf, index, size, [proof[0], SOME_HASH, *proof[1:]], root))
        )
    return probes


@pytest.mark.parametrize(("index", "size", "path"), [v for v in INCLUSION_VECTORS if v[1] > 1])
def test_corrupted_published_inclusion_proofs_are_rejected(
    index: int, size: int, path: list[str]
) -> None:
    proof = [bytes.fromhex(p) for p in path]
    probes = _corrupt_inclusion(
        index, size, proof, bytes.fromhex(ROOTS[size]), VECTOR_HASHES[index]
    )
    accepted = [name for name, args in probes if not raises_proof_error(verify_inclusion, *args)]
    assert accepted == []


# ── vectors: consistency ───────────────────────────────────────────────────────────────────
@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_consistency_proof_matches_the_published_proof(old: int, new: int, path: list[str]) -> None:
    proof = consistency_proof(old, new, LeafHashes(VECTOR_HASHES[:new]))
    assert [p.hex() for p in proof] == path


@pytest.mark.parametrize(("old", "new", "path"), CONSISTENCY_VECTORS)
def test_published_consistency_proof_verifies(old: int, new: int, path: list[str]) -> None:
    verify_consistency(
        old,
        new,
        bytes.fromhex(ROOTS[old]),
        bytes.fromhex(ROOTS[new]),
        [bytes.fromhex(p) for p in path],
    )


def _corrupt_consistency(
    old: int, new: int, root1: bytes, root2: bytes, proof: list[bytes]
) -> list[tuple[str, tuple[int, int, bytes, bytes, list[bytes]]]]:
    """The probes of transparency-dev/merkle's corruptConsistencyProof."""
    probes = [
        ("old - 1", (old - 1, new, root1, root2, proof)),
        ("old + 1", (old + 1, new, root1, root2, proof)),
        ("old ^ 2", (old ^ 2, new, root1, root2, proof)),
        ("new * 2", (old, new * 2, root1, root2, proof)),
        ("new / 2", (old, new // 2, root1, root2, proof)),
        ("wrong root1", (old, new, _h(b"WrongRoot"), root2, proof)),
        ("wrong root2", (old, new, root1, _h(b"WrongRoot"), proof)),
        ("swapped roots", (old, new, root2, root1, proof)),
        ("empty proof", (old, new, root1, root2, [])),
        ("trailing garbage", (old, new, root1, root2, [*proof, b""])),
        ("trailing root1", (old, new, root1, root2, [*proof, root1])),
        ("trailing root2", (old, new, root1, root2, [*proof, root2])),
        ("preceding garbage", (old, new, root1, root2, [b"", *proof])),
        ("preceding root1", (old, new, root1, root2, [root1, *proof])),
        ("preceding root2", (old, new, root1, root2, [root2, *proof])),
        ("preceding proof[0]", (old, new, root1, root2, [proof[0], *proof])),
        ("truncated proof", (old, new, root1, root2, proof[:-1])),
    ]
    for i in range(len(proof)):
        bad = list(proof)
        bad[i] = flip(bad[i], 4)
        probes.append((f"proof[{i}] bit 4", (old, new, root1, root2, bad)))
    return probes


@pytest.mark.parametrize(("old", "new", "path"), [v for v in CONSISTENCY_VECTORS if v[2]])
def test_corrupted_published_consistency_proofs_are_rejected(
    old: int, new: int, path: list[str]
) -> None:
    proof = [bytes.fromhex(p) for p in path]
    probes = _corrupt_consistency(
        old, new, bytes.fromhex(ROOTS[old]), bytes.fromhex(ROOTS[new]), proof
    )
    accepted = [name for name, args in probes if not raises_proof_error(verify_consistency, *args)]
    assert accepted == []


def test_index_outside_the_tree_has_no_inclusion_proof() -> None:
    with pytest.raises(ValueError):
        inclusion_proof(8, 8, LeafHashes(VECTOR_HASHES))


def test_shrinking_tree_has_no_consistency_proof() -> None:
    with pytest.raises(ValueError):
        consistency_proof(5, 4, LeafHashes(VECTOR_HASHES))


# ── properties ─────────────────────────────────────────────────────────────────────────────
PROPERTY = settings(max_examples=60, deadline=None)
salts = st.integers(min_value=0, max_value=2**32)


@PROPERTY
@given(salt=salts, n=st.integers(min_value=0, max_value=300))
def test_compact_tree_root_equals_the_recursive_mth(salt: int, n: int) -> None:
    leaves = leaves_for(salt, n)
    tree = CompactTree()
    for leaf in leaves:
        tree.append(leaf_hash(leaf))
    assert tree.size == n
    assert tree.root() == ref_mth(leaves)


@PROPERTY
@given(salt=salts, n=st.integers(min_value=0, max_value=300), cut=st.integers(0, 300))
def test_compact_tree_extend_equals_appending_one_by_one(salt: int, n: int, cut: int) -> None:
    hashes = [leaf_hash(leaf) for leaf in leaves_for(salt, n)]
    one = CompactTree()
    for h in hashes:
        one.append(h)
    many = CompactTree()
    for h in hashes[: min(cut, n)]:
        many.append(h)
    many.extend(hashes[min(cut, n) :])
    assert (many.size, many.edge, many.root()) == (one.size, one.edge, one.root())


@PROPERTY
@given(salt=salts, n=st.integers(1, 200), data=st.data())
def test_every_inclusion_proof_verifies(salt: int, n: int, data: st.DataObject) -> None:
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    verify_inclusion(leaf_hash(leaves[index]), index, n, proof, ref_mth(leaves))


@PROPERTY
@given(salt=salts, n=st.integers(2, 200), data=st.data())
def test_inclusion_proof_with_a_flipped_bit_fails(salt: int, n: int, data: st.DataObject) -> None:
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    at = data.draw(st.integers(0, len(proof) - 1))
    bit = data.draw(st.integers(0, 7))
    proof[at] = flip(proof[at], bit)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[index]), index, n, proof, ref_mth(leaves))


@PROPERTY
@given(salt=salts, n=st.integers(1, 200), data=st.data())
def test_inclusion_proof_of_a_flipped_leaf_fails(salt: int, n: int, data: st.DataObject) -> None:
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    bit = data.draw(st.integers(0, 7))
    with pytest.raises(ProofError):
        verify_inclusion(flip(leaf_hash(leaves[index]), bit), index, n, proof, ref_mth(leaves))


@PROPERTY
@given(salt=salts, n=st.integers(2, 200), data=st.data())
def test_inclusion_proof_at_a_wrong_index_fails(salt: int, n: int, data: st.DataObject) -> None:
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    wrong = data.draw(st.integers(-1, n).filter(lambda j: j != index))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[index]), wrong, n, proof, ref_mth(leaves))


@PROPERTY
@given(salt=salts, n=st.integers(1, 200), data=st.data())
def test_inclusion_proof_for_a_wrong_tree_size_fails(
    salt: int, n: int, data: st.DataObject
) -> None:
    # The size is bound by the signed checkpoint, not by the path: a path that takes the
    # same turns in a tree of another size is the same path (RFC 9162 §2.1.3.2). Doubling
    # or halving the size always changes the path's length, as in transparency-dev's probes.
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    wrong = n * 2 if index >= n // 2 else data.draw(st.sampled_from([n * 2, n // 2]))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[index]), index, wrong, proof, ref_mth(leaves))


@PROPERTY
@given(salt=salts, n=st.integers(1, 200), data=st.data(), other=st.binary(min_size=32, max_size=32))
def test_inclusion_proof_against_a_wrong_root_fails(
    salt: int, n: int, data: st.DataObject, other: bytes
) -> None:
    leaves = leaves_for(salt, n)
    index = data.draw(st.integers(0, n - 1))
    proof = inclusion_proof(index, n, LeafHashes([leaf_hash(x) for x in leaves]))
    root = ref_mth(leaves)
    wrong = other if other != root else flip(root, 0)
    with pytest.raises(ProofError):
        verify_inclusion(leaf_hash(leaves[index]), index, n, proof, wrong)


def _sizes(draw: st.DrawFn) -> tuple[int, int]:
    new = draw(st.integers(1, 150))
    return draw(st.integers(1, new)), new


sizes = st.composite(_sizes)


@PROPERTY
@given(salt=salts, mn=sizes())
def test_every_consistency_proof_verifies(salt: int, mn: tuple[int, int]) -> None:
    old, new = mn
    leaves = leaves_for(salt, new)
    proof = consistency_proof(old, new, LeafHashes([leaf_hash(x) for x in leaves]))
    verify_consistency(old, new, ref_mth(leaves[:old]), ref_mth(leaves), proof)


@PROPERTY
@given(salt=salts, mn=sizes(), data=st.data())
def test_consistency_proof_with_a_flipped_bit_fails(
    salt: int, mn: tuple[int, int], data: st.DataObject
) -> None:
    old, new = mn
    leaves = leaves_for(salt, new)
    proof = consistency_proof(old, new, LeafHashes([leaf_hash(x) for x in leaves]))
    if not proof:  # equal sizes: nothing to flip, so tamper with the claimed new root
        with pytest.raises(ProofError):
            verify_consistency(old, new, ref_mth(leaves[:old]), flip(ref_mth(leaves), 0), proof)
        return
    at = data.draw(st.integers(0, len(proof) - 1))
    proof[at] = flip(proof[at], data.draw(st.integers(0, 7)))
    with pytest.raises(ProofError):
        verify_consistency(old, new, ref_mth(leaves[:old]), ref_mth(leaves), proof)


@PROPERTY
@given(salt=salts, mn=sizes(), which=st.sampled_from(["old", "new", "swap"]))
def test_consistency_proof_against_wrong_roots_fails(
    salt: int, mn: tuple[int, int], which: str
) -> None:
    old, new = mn
    leaves = leaves_for(salt, new)
    proof = consistency_proof(old, new, LeafHashes([leaf_hash(x) for x in leaves]))
    root1, root2 = ref_mth(leaves[:old]), ref_mth(leaves)
    if which == "old":
        root1 = flip(root1, 5)
    elif which == "new":
        root2 = flip(root2, 5)
    elif old != new:
        root1, root2 = root2, root1
    else:
        root2 = flip(root2, 1)
    with pytest.raises(ProofError):
        verify_consistency(old, new, root1, root2, proof)


@PROPERTY
@given(salt=salts, mn=sizes(), change=st.sampled_from(["drop", "append", "prepend"]))
def test_consistency_proof_of_the_wrong_length_fails(
    salt: int, mn: tuple[int, int], change: str
) -> None:
    old, new = mn
    leaves = leaves_for(salt, new)
    proof = consistency_proof(old, new, LeafHashes([leaf_hash(x) for x in leaves]))
    if change == "drop" and proof:
        proof = proof[:-1]
    elif change == "prepend":
        proof = [SOME_HASH, *proof]
    else:
        proof = [*proof, SOME_HASH]
    with pytest.raises(ProofError):
        verify_consistency(old, new, ref_mth(leaves[:old]), ref_mth(leaves), proof)


@settings(max_examples=25, deadline=None)
@given(
    salt=salts,
    n=st.integers(1, 400),
    probes=st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=8),
)
def test_cached_leaf_hashes_give_the_same_proofs_as_no_cache(
    salt: int, n: int, probes: list[tuple[float, float]]
) -> None:
    leaves = leaves_for(salt, n)
    cached = LeafHashes([leaf_hash(x) for x in leaves])  # shared across every proof below
    plain = ref_range(leaves)
    for a, b in probes:
        size = max(1, round(a * n))
        index = min(size - 1, round(b * size))
        old = max(1, round(b * size))
        assert inclusion_proof(index, size, cached) == inclusion_proof(index, size, plain)
        assert consistency_proof(old, size, cached) == consistency_proof(old, size, plain)
        assert cached(0, size) == ref_mth(leaves[:size])
