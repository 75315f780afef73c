"""Data on each chosen backend whose tasks share the caller's memory: a shared read-only object, worker
state from the initializer and a SharedArray (the process backend's transport, under every start
method, and its shared-memory cleanup are in tests/test_data.py).
"""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")

import conveyor
import data_tasks as t

pytestmark = pytest.mark.timeout(120)


@pytest.mark.needs("not needs_pickle", primitives={"SharedArray"})  # tasks share the caller's memory
def test_shared_and_state_on_in_process_backends(backend):
    table = np.arange(4.0 * 10).reshape(4, 10)
    with conveyor.Pool(2, backend=backend, shared=table, initializer=t.set_state, initargs=(3,)) as pool:
        assert pool.map(t.shared_total, range(4)) == pytest.approx(list(table.sum(axis=1)))
        assert set(pool.map(t.state_value, range(4))) == {3}
        counts = pool.SharedArray(2, "int64")
        pool.starmap(t.add_to_shared, [(counts, 0, 10)] * 4)
        assert counts.array.tolist() == [40, 0]
    with conveyor.Pool(2, backend=backend, shared={"rows": table}) as pool:  # an object with .get
        assert pool.submit(t.shared_keys).result() == ["rows"]
