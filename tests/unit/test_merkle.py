"""RFC 6962 / RFC 9162 Merkle hashing: known answers, properties and limits."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import overload

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zhifu.ledger import merkle
from zhifu.ledger.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    LEAVES_MAX,
    audit_path,
    check_tree_size,
    leaf_hash,
    merkle_root,
    node_hash,
    verify_inclusion,
)

# The Certificate Transparency reference test leaves (merkle_tree_test.cc).
CT_LEAVES = [
    b"",
    b"\x00",
    b"\x10",
    b"\x20\x21",
    b"\x30\x31",
    b"\x40\x41\x42\x43",
    b"\x50\x51\x52\x53\x54\x55\x56\x57",
    b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
]
CT_LEAF_HASHES = [leaf_hash(data) for data in CT_LEAVES]

# MTH of the first n CT leaves, n = 1..8.
CT_ROOTS = {
    1: "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    2: "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    3: "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    4: "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    5: "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    6: "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    7: "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    8: "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
}

# (leaf index, tree size, audit path) from the CT reference inclusion-proof tests.
CT_PATHS = [
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


# --- a straightforward recursive reference, written from RFC 6962 §2.1 ---


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def reference_root(leaves: list[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(reference_root(leaves[:k]), reference_root(leaves[k:]))


def reference_path(m: int, leaves: list[bytes]) -> list[bytes]:
    n = len(leaves)
    if n == 1:
        return []
    k = _split(n)
    if m < k:
        return [*reference_path(m, leaves[:k]), reference_root(leaves[k:])]
    return [*reference_path(m - k, leaves[k:]), reference_root(leaves[:k])]


def make_leaves(n: int, salt: int = 0) -> list[bytes]:
    return [leaf_hash(f"transfer-{salt}-{i}".encode()) for i in range(n)]


# --- known answers ---


def test_hash_primitives() -> None:
    assert HASH_SIZE == 32
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = b"\x11" * 32, b"\x22" * 32
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()


def test_empty_tree_root() -> None:
    assert merkle_root([]) == EMPTY_ROOT


@pytest.mark.parametrize("size", sorted(CT_ROOTS))
def test_ct_reference_roots(size: int) -> None:
    assert merkle_root(CT_LEAF_HASHES[:size]).hex() == CT_ROOTS[size]
    assert reference_root(CT_LEAF_HASHES[:size]).hex() == CT_ROOTS[size]


@pytest.mark.parametrize(("index", "size", "expected"), CT_PATHS)
def test_ct_reference_audit_paths(index: int, size: int, expected: list[str]) -> None:
    leaves = CT_LEAF_HASHES[:size]
    path = audit_path(leaves, index)
    assert [p.hex() for p in path] == expected
    root = bytes.fromhex(CT_ROOTS[size])
    assert verify_inclusion(leaves[index], index, size, path, root)


# --- the bottom-up tree is the RFC tree ---


@pytest.mark.parametrize("size", range(0, 70))
def test_iterative_root_equals_recursive_reference_small(size: int) -> None:
    leaves = make_leaves(size)
    assert merkle_root(leaves) == reference_root(leaves)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=16), min_size=1, max_size=300))
def test_iterative_root_and_paths_equal_recursive_reference(data: list[bytes]) -> None:
    leaves = [leaf_hash(d) for d in data]
    assert merkle_root(leaves) == reference_root(leaves)
    for index in {0, len(leaves) // 2, len(leaves) - 1}:
        assert audit_path(leaves, index) == reference_path(index, leaves)


def test_root_for_a_large_tree_matches_reference() -> None:
    leaves = make_leaves(100_000)
    assert merkle_root(leaves) == reference_root(leaves)


# --- inclusion proofs: every index verifies, any tampering fails ---


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=2**16))
def test_every_audit_path_verifies(size: int, salt: int) -> None:
    leaves = make_leaves(size, salt)
    root = merkle_root(leaves)
    for index in range(size):
        path = audit_path(leaves, index)
        assert verify_inclusion(leaves[index], index, size, path, root)


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_tampered_proof_fails(data: st.DataObject) -> None:
    size = data.draw(st.integers(min_value=1, max_value=300), label="size")
    index = data.draw(st.integers(min_value=0, max_value=size - 1), label="index")
    leaves = make_leaves(size)
    root = merkle_root(leaves)
    leaf = leaves[index]
    path = audit_path(leaves, index)
    assert verify_inclusion(leaf, index, size, path, root)

    other_leaf = leaf_hash(b"forged transfer")
    assert not verify_inclusion(other_leaf, index, size, path, root)
    assert not verify_inclusion(leaf, index, size, path, leaf_hash(b"other root"))

    if path:
        position = data.draw(st.integers(min_value=0, max_value=len(path) - 1), label="pos")
        bit = data.draw(st.integers(min_value=0, max_value=HASH_SIZE * 8 - 1), label="bit")
        flipped = bytearray(path[position])
        flipped[bit // 8] ^= 1 << (bit % 8)
        tampered = [*path[:position], bytes(flipped), *path[position + 1 :]]
        assert not verify_inclusion(leaf, index, size, tampered, root)
        assert not verify_inclusion(leaf, index, size, path[:-1], root)
    assert not verify_inclusion(leaf, index, size, [*path, leaf], root)

    wrong_index = data.draw(st.integers(min_value=0, max_value=size), label="wrong_index")
    if wrong_index != index:
        assert not verify_inclusion(leaf, wrong_index, size, path, root)

    wrong_size = data.draw(st.integers(min_value=1, max_value=400), label="wrong_size")
    if _path_length(index, wrong_size) != len(path):
        assert not verify_inclusion(leaf, index, wrong_size, path, root)


def _path_length(index: int, size: int) -> int:
    """The audit path length RFC 9162 §2.1.3.2 expects for ``index`` in a tree of ``size``."""
    if index >= size:
        return -1
    inner = (index ^ (size - 1)).bit_length()
    return inner + bin(index >> inner).count("1")


def test_path_length_helper_matches_audit_path() -> None:
    for size in range(1, 70):
        leaves = make_leaves(size)
        for index in range(size):
            assert _path_length(index, size) == len(audit_path(leaves, index))


def test_wrong_tree_size_fails() -> None:
    leaves = make_leaves(6)
    root = merkle_root(leaves)
    path = audit_path(leaves, 5)
    assert verify_inclusion(leaves[5], 5, 6, path, root)
    for wrong_size in (5, 7, 8, 9):
        assert not verify_inclusion(leaves[5], 5, wrong_size, path, root)


def test_proof_alone_does_not_bind_the_tree_size() -> None:
    # Leaf 0's proof has the same shape in trees of 3 and 4 leaves, so the size a
    # proof is checked against must come from the signed block head with the root.
    leaves = make_leaves(3)
    root = merkle_root(leaves)
    path = audit_path(leaves, 0)
    assert verify_inclusion(leaves[0], 0, 3, path, root)
    assert verify_inclusion(leaves[0], 0, 4, path, root)


@pytest.mark.parametrize(
    ("index", "size"),
    [(-1, 4), (4, 4), (5, 4), (0, 0), (0, -1), (0, LEAVES_MAX + 1)],
)
def test_verify_inclusion_rejects_impossible_index_or_size(index: int, size: int) -> None:
    leaves = make_leaves(4)
    root = merkle_root(leaves)
    path = audit_path(leaves, 0)
    assert not verify_inclusion(leaves[0], index, size, path, root)


def test_verify_inclusion_never_raises_on_malformed_values() -> None:
    leaves = make_leaves(4)
    root = merkle_root(leaves)
    path = audit_path(leaves, 1)
    leaf = leaves[1]
    assert verify_inclusion(leaf, 1, 4, path, root)
    assert not verify_inclusion(leaf[:31], 1, 4, path, root)
    assert not verify_inclusion(leaf, 1, 4, path, root + b"\x00")
    assert not verify_inclusion(leaf, 1, 4, [path[0][:31], path[1]], root)
    assert not verify_inclusion(leaf, 1, 4, [], root)
    assert not verify_inclusion(leaf, 1, 4, [*path, *path], root)
    assert not verify_inclusion(leaf, "1", 4, path, root)  # type: ignore[arg-type]
    assert not verify_inclusion(leaf, 1, None, path, root)  # type: ignore[arg-type]
    assert not verify_inclusion(leaf, 1, 4, [str(p) for p in path], root)  # type: ignore[misc]
    assert not verify_inclusion("leaf", 1, 4, path, root)  # type: ignore[arg-type]


def test_single_leaf_tree() -> None:
    leaf = leaf_hash(b"only transfer")
    assert merkle_root([leaf]) == leaf
    assert audit_path([leaf], 0) == []
    assert verify_inclusion(leaf, 0, 1, [], leaf)
    assert not verify_inclusion(leaf, 0, 1, [leaf], leaf)


# --- bad input and limits ---


@pytest.mark.parametrize("index", [-1, 3, 4, 100])
def test_audit_path_index_out_of_range(index: int) -> None:
    with pytest.raises(ValueError, match=rf"leaf index {index} is out of range.*0\.\.2"):
        audit_path(make_leaves(3), index)


def test_audit_path_of_empty_tree() -> None:
    with pytest.raises(ValueError, match=r"out of range.*empty"):
        audit_path([], 0)


def test_leaf_hashes_must_be_hash_sized() -> None:
    with pytest.raises(ValueError, match=r"leaf hash 1 must be 32 bytes.*got 3 bytes"):
        merkle_root([leaf_hash(b"a"), b"raw"])
    with pytest.raises(ValueError, match=r"leaf hash 0 must be 32 bytes.*got str"):
        audit_path(["x" * 32], 0)  # type: ignore[list-item]


class _ProbeError(Exception):
    """Raised when a function reads a leaf, i.e. got past its size check."""


class _LazyLeaves(Sequence[bytes]):
    """A sequence that claims ``size`` leaves without building any."""

    def __init__(self, size: int) -> None:
        self._size = size

    def __len__(self) -> int:
        return self._size

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[bytes]: ...
    def __getitem__(self, index: int | slice) -> bytes | Sequence[bytes]:
        raise _ProbeError


def test_check_tree_size_at_and_past_the_limit() -> None:
    check_tree_size(0)
    check_tree_size(LEAVES_MAX)
    with pytest.raises(ValueError, match=rf"0\.\.{LEAVES_MAX} leaves, got {LEAVES_MAX + 1}"):
        check_tree_size(LEAVES_MAX + 1)
    with pytest.raises(ValueError, match="got -1"):
        check_tree_size(-1)


def test_merkle_root_accepts_the_limit_and_rejects_one_past() -> None:
    assert merkle.LEAVES_MAX == 1_000_000
    with pytest.raises(_ProbeError):  # past validation: it starts reading leaves
        merkle_root(_LazyLeaves(LEAVES_MAX))
    with pytest.raises(ValueError, match="leaves, got 1000001"):
        merkle_root(_LazyLeaves(LEAVES_MAX + 1))


def test_audit_path_accepts_the_limit_and_rejects_one_past() -> None:
    with pytest.raises(_ProbeError):
        audit_path(_LazyLeaves(LEAVES_MAX), LEAVES_MAX - 1)
    with pytest.raises(ValueError, match="leaves, got 1000001"):
        audit_path(_LazyLeaves(LEAVES_MAX + 1), 0)


def test_verify_inclusion_at_the_limit() -> None:
    # A proof for the last leaf of a LEAVES_MAX tree of identical leaves, built level by level.
    leaf = leaf_hash(b"same")
    level_hash = leaf
    subtree_hashes = [leaf]
    for _ in range(20):
        level_hash = node_hash(level_hash, level_hash)
        subtree_hashes.append(level_hash)
    # 1_000_000 = 2^19 + 2^18 + 2^17 + 2^16 + 2^14 + 2^9 + 2^6; the last leaf's path is the
    # perfect subtree roots to its left, smallest first.
    powers = [19, 18, 17, 16, 14, 9, 6]
    path = [subtree_hashes[p] for p in reversed(powers[:-1])]
    # Within the last perfect subtree of 2^6 leaves the last leaf has 6 same-level siblings.
    path = [subtree_hashes[level] for level in range(6)] + path
    root = subtree_hashes[powers[-1]]
    for p in reversed(powers[:-1]):
        root = node_hash(subtree_hashes[p], root)
    index = LEAVES_MAX - 1
    assert verify_inclusion(leaf, index, LEAVES_MAX, path, root)
    assert not verify_inclusion(leaf, index, LEAVES_MAX + 1, path, root)
