"""The suite's leak check itself: it counts what this run made, and nothing another program made."""

from __future__ import annotations

import multiprocessing
import os

import pytest

import conftest

pytestmark = pytest.mark.timeout(60)


def test_semaphores_made_here_and_in_workers_carry_this_runs_name():
    lock = multiprocessing.get_context("forkserver").Lock()
    name = lock._semlock.name
    assert name.startswith(f"/mp-t{os.getpid()}-"), name
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        child_name = pool.apply(_make_lock_name)
    assert child_name.startswith(f"/mp-t{os.getpid()}-"), child_name


def _make_lock_name() -> str:
    return multiprocessing.get_context("spawn").Lock()._semlock.name


def test_only_another_programs_semaphores_are_left_out_of_the_count():
    mine = f"sem.mp-t{os.getpid()}-abcd1234"
    theirs = {"sem.mp-abcd1234", f"sem.mp-t{os.getpid() + 1}-abcd1234"}
    assert conftest._made_by_another_run({mine, *theirs, "conveyor-1p2"}) == theirs
