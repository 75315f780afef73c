"""Keywords: what conveyor does not understand is a TypeError that says what was meant, never ignored."""

from __future__ import annotations

import inspect

import pytest

import conveyor
from conveyor.pool import POOL_KEYWORDS
from tests.tasks import square

pytestmark = pytest.mark.timeout(60)


def test_pool_keywords_are_exactly_the_signature_of_pool() -> None:
    """The list the checks use cannot drift from the constructor it describes."""
    parameters = set(inspect.signature(conveyor.Pool.__init__).parameters) - {"self", "options"}
    assert set(POOL_KEYWORDS) == parameters


@pytest.mark.parametrize(("stdlib", "ours"), [("processes", "workers"), ("max_workers", "workers"),
                                              ("maxtasksperchild", "max_tasks_per_worker"),
                                              ("max_tasks_per_child", "max_tasks_per_worker"),
                                              ("mp_context", "start_method")])
def test_a_standard_library_name_gives_conveyors_name(stdlib: str, ours: str) -> None:
    with pytest.raises(TypeError, match=rf"'{stdlib}': conveyor calls it {ours}="):
        conveyor.Pool(backend="thread", **{stdlib: 2})


def test_an_unrelated_name_lists_what_is_known() -> None:
    with pytest.raises(TypeError, match=r"'colour'.*it takes .*shared_memory.*workers"):
        conveyor.Pool(1, backend="process", colour="blue")


def test_a_backend_option_is_known_only_to_its_backend() -> None:
    with conveyor.Pool(1, backend="process", shared_memory=False) as pool:
        assert pool.map(square, [3]) == [9]
    with pytest.raises(TypeError, match="'shared_memory'"):
        conveyor.Pool(1, backend="thread", shared_memory=False)


@pytest.mark.parametrize("engine", ["dask", "ray"])
def test_cluster_options_are_checked_before_any_cluster_starts(engine: str) -> None:
    pytest.importorskip(engine)
    with pytest.raises(TypeError, match="'adress': did you mean address"):
        conveyor.Pool(1, backend=engine, adress="tcp://127.0.0.1:1")


def test_one_shot_map_context_and_task_group_check_their_keywords() -> None:
    with pytest.raises(TypeError, match="map.*'progres': did you mean progress"):
        conveyor.map(square, [1], backend="thread", progres=True)
    assert conveyor.map(square, [1, 2], backend="thread", workers=2, chunksize=1) == [1, 4]
    with pytest.raises(TypeError, match=r"context\('process'\).*'maxtasksperchild'.*max_tasks_per_worker="):
        conveyor.context("process", maxtasksperchild=3)
    with pytest.raises(TypeError, match=r"TaskGroup\('thread'\).*'name': it takes thread_name_prefix"):
        conveyor.TaskGroup("thread", name="x")


@pytest.mark.parametrize("method", ["map", "imap", "imap_unordered"])
def test_a_positional_chunksize_says_it_is_keyword_only(method: str) -> None:
    with conveyor.Pool(1, backend="thread") as pool:
        with pytest.raises(TypeError, match=rf"{method}\(\) argument 3 must be iterable, not int; chunksize is "
                                            rf"keyword-only in conveyor.Pool: {method}\(fn, items, chunksize=4\)"):
            getattr(pool, method)(square, [1, 2], 4)
        with pytest.raises(TypeError, match=r"argument 2 must be iterable, not NoneType$"):
            getattr(pool, method)(square, None)
        assert list(getattr(pool, method)(pow, [2, 3], [2, 2])) in ([4, 9], [9, 4])
