"""The RFC 9162 Merkle math against a naive recomputation, for every size and index
hypothesis draws: roots, audit paths and consistency proofs verify, and any other
leaf, index, size, root or proof element does not. Every path of a tree at once (what
signs a batch of receipts) is, for every size up to 70, each path proven alone."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from teegate.receipts import (
    EMPTY_ROOT,
    consistency_proof,
    inclusion_proof,
    inclusion_root,
    leaf_hash,
    node_hash,
    root,
    root_and_paths,
    verify_consistency,
    verify_inclusion,
)


def naive_root(data: list[bytes]) -> bytes:
    """MTH as RFC 9162 §2.1.1 writes it, with hashlib alone."""
    if not data:
        return hashlib.sha256(b"").digest()
    if len(data) == 1:
        return hashlib.sha256(b"\x00" + data[0]).digest()
    k = 1
    while k * 2 < len(data):
        k *= 2
    return hashlib.sha256(b"\x01" + naive_root(data[:k]) + naive_root(data[k:])).digest()


def leaves(n: int) -> tuple[list[bytes], list[bytes]]:
    data = [f"leaf {i}".encode() for i in range(n)]
    return data, [leaf_hash(d) for d in data]


def flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 1]) + value[1:]


def test_known_values() -> None:
    assert root([]) == EMPTY_ROOT == hashlib.sha256(b"").digest()
    assert leaf_hash(b"") == hashlib.sha256(b"\x00").digest()
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()


@settings(max_examples=60)
@given(st.integers(min_value=0, max_value=70))
def test_root_is_the_naive_root(n: int) -> None:
    data, hashes = leaves(n)
    assert root(hashes) == naive_root(data)


@settings(max_examples=80)
@given(
    st.integers(min_value=1, max_value=70).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n - 1))
    )
)
def test_every_audit_path_verifies_and_nothing_else_does(case: tuple[int, int]) -> None:
    n, index = case
    _, hashes = leaves(n)
    top = root(hashes)
    proof = inclusion_proof(index, hashes)
    assert verify_inclusion(hashes[index], index, n, proof, top)
    assert not verify_inclusion(flip(hashes[index]), index, n, proof, top)
    assert not verify_inclusion(hashes[index], index, n, proof, flip(top))
    assert not verify_inclusion(hashes[index], n, n, proof, top)
    if n > 1:
        assert not verify_inclusion(hashes[index], (index + 1) % n, n, proof, top)
        for i in range(len(proof)):
            tampered = [*proof[:i], flip(proof[i]), *proof[i + 1 :]]
            assert not verify_inclusion(hashes[index], index, n, tampered, top)
        assert not verify_inclusion(hashes[index], index, n, proof[:-1], top)


def test_every_path_at_once_is_each_path_alone() -> None:
    assert root_and_paths([]) == (EMPTY_ROOT, [])
    for n in range(1, 71):
        _, hashes = leaves(n)
        top, paths = root_and_paths(hashes)
        assert top == root(hashes)
        assert len(paths) == n
        for index, path in enumerate(paths):
            assert path == inclusion_proof(index, hashes), (n, index)
            assert verify_inclusion(hashes[index], index, n, path, top)
            assert inclusion_root(hashes[index], index, n, path) == top


def test_a_path_of_the_wrong_length_leads_to_no_root() -> None:
    _, hashes = leaves(5)
    path = inclusion_proof(2, hashes)
    assert inclusion_root(hashes[2], 2, 5, path[:-1]) is None
    assert inclusion_root(hashes[2], 2, 5, [*path, hashes[0]]) is None
    assert inclusion_root(hashes[2], 5, 5, path) is None
    assert inclusion_root(hashes[0], 0, 1, []) == hashes[0]


@settings(max_examples=80)
@given(
    st.integers(min_value=1, max_value=70).flatmap(
        lambda n: st.tuples(st.integers(0, n), st.just(n))
    )
)
def test_every_consistency_proof_verifies_and_a_fork_does_not(case: tuple[int, int]) -> None:
    m, n = case
    _, hashes = leaves(n)
    first, second = root(hashes[:m]), root(hashes)
    proof = consistency_proof(m, hashes)
    assert verify_consistency(m, n, first, second, proof)
    if 0 < m < n:
        assert not verify_consistency(m, n, flip(first), second, proof)
        assert not verify_consistency(m, n, first, flip(second), proof)
        for i in range(len(proof)):
            tampered = [*proof[:i], flip(proof[i]), *proof[i + 1 :]]
            assert not verify_consistency(m, n, first, second, tampered)
        forked = [*hashes[: m - 1], leaf_hash(b"rewritten"), *hashes[m:]]
        assert not verify_consistency(m, n, first, root(forked), consistency_proof(m, forked))


def test_out_of_range_requests_are_refused() -> None:
    _, hashes = leaves(4)
    for bad in (-1, 4):
        try:
            inclusion_proof(bad, hashes)
        except ValueError:
            continue
        raise AssertionError(f"leaf {bad} of 4 was proven")
    assert not verify_consistency(5, 4, root(hashes), root(hashes), [])
