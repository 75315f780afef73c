"""Batches on each chosen backend: any iterable is sliced into batches and comes back whole and in order
(the automatic chunk size itself, ``_core/chunking.py``, is checked in tests/test_chunking.py)."""

from __future__ import annotations

import pytest

import conveyor
import tasks

pytestmark = pytest.mark.timeout(30)


# Batches go to workers beside the caller; not to a cluster: thousands of tiny batches (chunksize=7)
# cost a cluster's per-task overhead each, half a minute for slicing that is the front end's own.
@pytest.mark.needs("in_background", "not cross_host")
def test_a_list_tuple_or_range_is_sliced_into_batches_with_the_results_of_any_iterable(backend):
    with conveyor.Pool(2, backend=backend) as pool:
        expected = [x * x for x in range(5_003)]
        for make in (list, tuple, lambda r: r, iter):
            assert pool.map(tasks.square, make(range(5_003))) == expected
            assert list(pool.imap(tasks.square, make(range(5_003)), chunksize=7)) == expected
        assert pool.starmap(tasks.add, [(1, 2), (3, 4)] * 3) == [3, 7] * 3
        assert pool.map(tasks.square, range(0, 40, 3)) == [x * x for x in range(0, 40, 3)]
        assert pool.map(tasks.square, []) == [] and pool.map(tasks.square, ()) == []
