"""The automatic chunk size (``_core/chunking.py``): probes, the floor, the guided share and the cap."""

from __future__ import annotations

import functools

import pytest

import conveyor
import tasks
from conveyor._core.chunking import (
    KNOWN_TINY_SECONDS,
    RESOLUTION_SECONDS,
    TARGET_SECONDS,
    TINY_CALL_SECONDS,
    ChunkSizer,
    known_tiny,
    remember,
    too_short_to_time,
)

pytestmark = pytest.mark.timeout(30)


def test_probes_first_then_the_cap_for_calls_too_fast_to_time():
    sizer = ChunkSizer(workers=2, total=100_000, batches_per_worker=1)
    assert sizer.probing and sizer.next_size(100_000) == 1
    # Two one-input probes of a few microseconds each: too short to time, so "tiny" -> the cap,
    # not a floor of TARGET_SECONDS / 5 µs = 4 000 inputs and a guided share of a quarter.
    sizer.observe(1, 5e-6)
    sizer.observe(1, 4e-6)
    assert not sizer.probing
    assert sizer.next_size(99_998) == 50_000
    assert sizer.next_size(49_998) == 50_000  # (the caller takes no more than are left)


def test_a_probe_long_enough_to_time_sets_the_floor():
    sizer = ChunkSizer(workers=2, total=100_000, batches_per_worker=4)
    sizer.observe(1, 2 * RESOLUTION_SECONDS)  # 200 µs per input: 100 inputs make TARGET_SECONDS
    floor = round(TARGET_SECONDS / (2 * RESOLUTION_SECONDS))
    assert sizer.next_size(None) == floor
    # the guided share of what is left wins while it is larger, within the cap of total / (4 × 2)
    assert sizer.next_size(99_999) == 12_500
    assert sizer.next_size(2_000) == max(floor, 2_000 // 4)


def test_measurements_add_up_past_the_resolution():
    sizer = ChunkSizer(workers=1, total=None)
    sizer.observe(1, TINY_CALL_SECONDS / 4)
    assert sizer.next_size(None) == 16_384              # nothing timeable yet: unsized inputs' cap
    sizer.observe(999, 0.1)                              # now ~100 µs per input
    assert sizer.next_size(None) == round(TARGET_SECONDS / (0.1000 / 1000))


def test_a_short_probe_of_a_slow_enough_call_is_taken_as_it_is():
    # 50 µs: below the resolution in total, but no tiny call: 400 inputs make TARGET_SECONDS, not
    # the cap of 16 384 (0.8 s per batch)
    sizer = ChunkSizer(workers=1, total=None)
    sizer.observe(1, 5e-5)
    assert 5e-5 < RESOLUTION_SECONDS and sizer.next_size(None) == round(TARGET_SECONDS / 5e-5)


def test_a_fixed_chunksize_is_used_as_is():
    sizer = ChunkSizer(workers=4, total=10, fixed=3)
    sizer.observe(3, 10.0)
    assert not sizer.probing and sizer.next_size(10) == 3
    with pytest.raises(ValueError):
        ChunkSizer(workers=1, fixed=0)


def test_a_function_measured_tiny_is_remembered_until_a_call_measures_it_slower():
    def work(x):
        return x

    assert known_tiny(work) is None
    remember(work, None)  # too little measured to say anything
    assert known_tiny(work) is None
    remember(work, KNOWN_TINY_SECONDS / 4)
    assert known_tiny(work) == KNOWN_TINY_SECONDS / 4
    remember(work, KNOWN_TINY_SECONDS * 10)
    assert known_tiny(work) is None


class _Unreferenceable:
    __slots__ = ()  # no __weakref__

    def __call__(self, x):
        return x


def test_a_callable_that_cannot_be_weakly_referenced_is_not_remembered():
    fn = _Unreferenceable()
    remember(fn, KNOWN_TINY_SECONDS / 4)
    assert known_tiny(fn) is None


def test_the_sizer_reports_a_time_per_input_only_once_there_is_enough_to_time():
    sizer = ChunkSizer(workers=2, total=100_000)
    sizer.observe(1, 5e-6)
    assert sizer.per_item is None and too_short_to_time(5e-6, 5e-6)
    sizer.observe(1000, 2 * RESOLUTION_SECONDS)
    assert sizer.per_item == pytest.approx((5e-6 + 2 * RESOLUTION_SECONDS) / 1001)


def test_the_next_call_of_a_function_known_to_be_tiny_sends_no_probes():
    """The probes (one input per worker, then a wait for their results) are what a function measured
    tiny in its last call would tell again; its next call starts with batches at the cap."""
    with conveyor.Pool(2, backend="process") as pool:
        sizes: list[int] = []
        submit = pool._backend.submit

        def spy(batch):
            sizes.append(len(batch))
            submit(batch)

        pool._backend.submit = spy
        square = functools.partial(tasks.square)  # a function no other test has measured
        assert pool.map(square, range(20_000)) == [x * x for x in range(20_000)]
        assert sizes[:2] == [1, 1]  # never seen before: probed
        if known_tiny(square) is None:
            pytest.skip("this machine ran square() slower than KNOWN_TINY_SECONDS per call")
        sizes.clear()
        assert pool.map(square, range(20_000)) == [x * x for x in range(20_000)]
        assert sizes[0] == 20_000 // (4 * 2) and len(sizes) == 8
        sizes.clear()
        assert pool.map(square, range(10), chunksize=3) == [x * x for x in range(10)]
        assert sizes == [3, 3, 3, 1]  # a fixed chunk size is used as it is
