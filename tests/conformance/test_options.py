"""Keywords on each chosen backend: what conveyor does not understand is a TypeError that says what was
meant, never ignored (the keyword lists themselves are checked in tests/test_options.py)."""

from __future__ import annotations

import pytest

import conveyor

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize(("typo", "meant"), [("task_timout", "task_timeout"), ("progres", "progress"),
                                              ("max_task_per_worker", "max_tasks_per_worker")])
def test_a_misspelt_option_names_the_closest_known_one(backend: str, typo: str, meant: str) -> None:
    with pytest.raises(TypeError, match=rf"unexpected keyword argument '{typo}': did you mean {meant}\?"):
        conveyor.Pool(1, backend=backend, **{typo: 1})
