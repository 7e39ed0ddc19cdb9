"""The run's set of seen identifiers: exact first-row-wins answers in little memory."""

from __future__ import annotations

import numpy as np
import pytest

from shared.engine.dedupe import SeenKeys


@pytest.mark.parametrize("distinct", [50, 5_000, 300_000], ids=["crowded", "medium", "grows-many-times"])
def test_answers_match_a_python_set_chunk_after_chunk(distinct: int):
    rng = np.random.default_rng(distinct)
    keys = rng.integers(-(2**63), 2**63 - 1, size=distinct, dtype=np.int64)
    stream = rng.choice(keys, size=distinct * 2)  # every key about twice, in random order
    stream[:3] = 0  # 0 is the empty-slot marker inside: it must still work as a key
    seen, reference = SeenKeys(), set()
    for start in range(0, len(stream), 4096):
        chunk = stream[start : start + 4096]
        first = seen.add_chunk(chunk)
        expected = []
        for key in chunk.tolist():
            expected.append(key not in reference)
            reference.add(key)
        assert first.tolist() == expected
    assert seen.count == len(reference)


def test_room_made_after_some_keys_keeps_them_and_the_answers_stay_exact():
    rng = np.random.default_rng(7)
    keys = rng.integers(-(2**63), 2**63 - 1, size=40_000, dtype=np.int64)
    seen = SeenKeys()
    assert seen.add_chunk(keys[:10_000]).all()
    small = seen.nbytes
    seen.reserve(1_000_000)
    assert seen.nbytes >= 1_000_000 * 8 / 0.7 > small
    assert not seen.add_chunk(keys[:10_000]).any(), "keys added before the room was made are still seen"
    assert seen.add_chunk(keys[10_000:]).all()
    assert seen.count == 40_000
    grown = seen.nbytes
    seen.reserve(10)  # never shrinks
    assert seen.nbytes == grown


def test_within_a_chunk_the_first_occurrence_wins():
    first = SeenKeys().add_chunk(np.array([7, 8, 7, 9, 8, 7], dtype=np.int64))
    assert first.tolist() == [True, True, False, True, False, False]


def test_memory_stays_near_sixteen_bytes_a_key():
    seen = SeenKeys()
    rng = np.random.default_rng(1)
    for _ in range(100):
        seen.add_chunk(rng.integers(-(2**63), 2**63 - 1, size=10_000, dtype=np.int64))
    assert seen.count == 1_000_000
    assert seen.nbytes / seen.count <= 8 / 0.35  # the table is at most ~65% empty after growing
