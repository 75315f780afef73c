"""The automatic chunk size (``_core/chunking.py``): probes, the floor, the guided share and the cap."""

from __future__ import annotations

import pytest

from conveyor._core.chunking import RESOLUTION_SECONDS, TARGET_SECONDS, TINY_CALL_SECONDS, ChunkSizer

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
