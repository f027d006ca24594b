"""Merkle tree hashing, inclusion and consistency proofs as RFC 9162 (Certificate
Transparency 2.0, the same hashing as RFC 6962) defines them.

A leaf hashes as SHA-256(0x00 || data) and an interior node as SHA-256(0x01 || left ||
right), so no leaf can pass for a node. The tree over n leaves splits at k, the largest
power of two below n. Proofs are built by the recursions of RFC 9162 §2.1.3.1 and
§2.1.4.1 and checked by the iterative algorithms of §2.1.3.2 and §2.1.4.2, which a
client runs without the tree. Proof building walks the leaf hashes it is given
(O(n) per proof; `root_and_paths` gives every leaf's path at once in O(n log n), for a
tree built only to be proven whole, as a batch of receipts is); verification is
O(log n).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with `leaf_hash`)."""
    n = len(leaves)
    if n == 0:
        return EMPTY_ROOT
    if n == 1:
        return leaves[0]
    k = _split(n)
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(index, D[n]): the audit path of leaf `index` in the tree over `leaves`."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf {index} is not in a tree of size {n}")
    if n == 1:
        return []
    k = _split(n)
    if index < k:
        return [*inclusion_proof(index, leaves[:k]), root(leaves[k:])]
    return [*inclusion_proof(index - k, leaves[k:]), root(leaves[:k])]


def root_and_paths(leaves: Sequence[bytes]) -> tuple[bytes, list[list[bytes]]]:
    """MTH(D[n]) and PATH(i, D[n]) for every i, in one pass over the tree: each subtree's
    root is hashed once and joins the path of every leaf on the other side of it, where
    n calls of `inclusion_proof` would hash each subtree again for every leaf."""
    if not leaves:
        return EMPTY_ROOT, []
    paths: list[list[bytes]] = [[] for _ in leaves]
    return _subtree(leaves, 0, len(leaves), paths), paths


def _subtree(leaves: Sequence[bytes], start: int, end: int, paths: list[list[bytes]]) -> bytes:
    """The root over leaves[start:end], after extending the paths of those leaves from
    the bottom up (RFC 9162's order) to this subtree."""
    if end - start == 1:
        return leaves[start]
    middle = start + _split(end - start)
    left = _subtree(leaves, start, middle, paths)
    right = _subtree(leaves, middle, end, paths)
    for i in range(start, middle):
        paths[i].append(right)
    for i in range(middle, end):
        paths[i].append(left)
    return node_hash(left, right)


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(first, D[n]): that the tree of the first `first` leaves is a prefix."""
    n = len(leaves)
    if not 0 <= first <= n:
        raise ValueError(f"a tree of size {first} cannot precede one of size {n}")
    if first in (0, n):
        return []
    return _subproof(first, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], whole: bool) -> list[bytes]:
    n = len(leaves)
    if m == n:
        return [] if whole else [root(leaves)]
    k = _split(n)
    if m <= k:
        return [*_subproof(m, leaves[:k], whole), root(leaves[k:])]
    return [*_subproof(m - k, leaves[k:], False), root(leaves[:k])]


def verify_inclusion(
    leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes], root_hash: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: does `proof` place the leaf hash `leaf` at `index` under `root_hash`?"""
    computed = inclusion_root(leaf, index, tree_size, proof)
    return computed is not None and hmac.compare_digest(computed, root_hash)


def inclusion_root(leaf: bytes, index: int, tree_size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root `proof` leads to from the leaf hash `leaf` at `index` in a tree of
    `tree_size` (RFC 9162 §2.1.3.2 short of its last comparison), or None when the
    proof has not the length that index and size call for. For a root that is not
    given but signed over: a different leaf, index, size or path leads elsewhere."""
    if not 0 <= index < tree_size:
        return None
    fn, sn, r = index, tree_size - 1, leaf
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
    return r if sn == 0 else None


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: is the tree (`second`, `second_root`) an append-only extension
    of (`first`, `first_root`)?"""
    if not 0 <= first <= second:
        return False
    if first == 0:
        return not proof
    if first == second:
        return not proof and hmac.compare_digest(first_root, second_root)
    if not proof:
        return False
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: its root is a node of the path
        path.insert(0, first_root)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and hmac.compare_digest(fr, first_root) and hmac.compare_digest(sr, second_root)
