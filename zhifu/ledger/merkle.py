"""Merkle tree hashing for the tamper-evident ledger journal (RFC 6962 / RFC 9162).

Why: every committed batch of transfers gets a Merkle root, and the roots are
published in signed block heads. A counterparty holding one transfer can then
check, with a short inclusion proof (an audit path of about log2(n) hashes),
that its transfer is in a batch whose root the bank signed. Rewriting any
journal row afterwards changes the root and breaks every signature over it.

Rules and invariants:

- The hashing is exactly RFC 6962 §2.1 with SHA-256, so any RFC 6962 / RFC 9162
  verifier (Certificate Transparency tooling included) can check our proofs.
  Leaves and interior nodes are domain-separated (0x00 / 0x01 prefix) so a
  node can never be passed off as a leaf (second-preimage defence).
- The functions here take leaf *hashes* (``leaf_hash(data)``), not raw data.
- The tree is built bottom-up: pair neighbours level by level and promote an
  odd last node unchanged. For every size this yields the same tree as the
  RFC's recursive split at the largest power of two smaller than n, in O(n)
  time without copying the leaf list once per level.
- A tree holds at most ``LEAVES_MAX`` leaves; more is a ``ValueError``.
- ``verify_inclusion`` is a predicate: any malformed proof is simply False.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
LEAVES_MAX = 1_000_000

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d): the hash of one leaf's data."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


def check_tree_size(tree_size: int) -> None:
    """Raise ValueError unless ``0 <= tree_size <= LEAVES_MAX``."""
    if not 0 <= tree_size <= LEAVES_MAX:
        raise ValueError(
            f"a Merkle tree holds 0..{LEAVES_MAX} leaves, got {tree_size}; "
            "split the batch into several trees"
        )


def merkle_root(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 6962 §2.1 over the given leaf hashes.

    Raises ValueError if there are more than ``LEAVES_MAX`` leaves or a leaf
    hash is not ``HASH_SIZE`` bytes. The empty tree's root is ``EMPTY_ROOT``.
    """
    level = _checked_leaves(leaf_hashes)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        level = _parent_level(level)
    return level[0]


def audit_path(leaf_hashes: Sequence[bytes], index: int) -> list[bytes]:
    """PATH(index, D[n]) of RFC 6962 §2.1.1: sibling hashes from the leaf up.

    Raises ValueError if ``index`` is not a leaf of the tree, if there are more
    than ``LEAVES_MAX`` leaves, or if a leaf hash is not ``HASH_SIZE`` bytes.
    """
    tree_size = len(leaf_hashes)
    check_tree_size(tree_size)
    if not 0 <= index < tree_size:
        allowed = f"0..{tree_size - 1}" if tree_size else "none, the tree is empty"
        raise ValueError(
            f"leaf index {index} is out of range for a tree of {tree_size} leaves "
            f"(allowed: {allowed})"
        )
    level = _checked_leaves(leaf_hashes)
    path: list[bytes] = []
    while len(level) > 1:
        sibling = index ^ 1
        # An odd last node has no sibling at this level: it is promoted as is,
        # which is exactly where RFC 6962's unbalanced right subtree begins.
        if sibling < len(level):
            path.append(level[sibling])
        level = _parent_level(level)
        index //= 2
    return path


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, path: Sequence[bytes], root: bytes
) -> bool:
    """Whether ``path`` proves leaf hash ``leaf`` is leaf ``index`` under ``root``.

    The algorithm is RFC 9162 §2.1.3.2 step by step. Never raises: a wrong
    index, a tree size outside 1..LEAVES_MAX, a path of the wrong length or
    any value of the wrong size or type all give False.

    The path's shape alone does not pin the tree size (leaf 0 has the same proof
    shape in trees of 3 and 4 leaves), so ``tree_size`` must come from the same
    signed block head as ``root``, never from the party presenting the proof.
    """
    if not _is_hash(leaf) or not _is_hash(root):
        return False
    if not isinstance(index, int) or not isinstance(tree_size, int):
        return False
    if not 0 <= index < tree_size <= LEAVES_MAX:
        return False
    try:
        proof = list(path)
    except TypeError:
        return False
    if not all(_is_hash(p) for p in proof):
        return False
    computed = _root_from_inclusion_path(leaf, index, tree_size, proof)
    return computed is not None and computed == root


def _root_from_inclusion_path(
    leaf: bytes, index: int, tree_size: int, proof: list[bytes]
) -> bytes | None:
    """Steps 2-5 of RFC 9162 §2.1.3.2; None where the RFC says "fail"."""
    fn, sn = index, tree_size - 1
    r = leaf
    for p in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        return None
    return r


def _checked_leaves(leaf_hashes: Sequence[bytes]) -> list[bytes]:
    check_tree_size(len(leaf_hashes))
    leaves = list(leaf_hashes)
    for position, value in enumerate(leaves):
        if not _is_hash(value):
            got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
            raise ValueError(
                f"leaf hash {position} must be {HASH_SIZE} bytes (use leaf_hash(data)), got {got}"
            )
    return leaves


def _parent_level(level: list[bytes]) -> list[bytes]:
    """Hash neighbours pairwise; an odd last node moves up unchanged."""
    sha256 = hashlib.sha256
    prefix = _NODE_PREFIX
    parents = [
        sha256(prefix + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
    ]
    if len(level) % 2:
        parents.append(level[-1])
    return parents


def _is_hash(value: object) -> bool:
    return isinstance(value, bytes) and len(value) == HASH_SIZE
