"""The hub: one object per factory's space that holds the state of its cluster primitives.

An engine runs one :class:`Hub` as an asynchronous actor (a Dask actor, a Ray async actor): every
method is a coroutine on the actor's event loop, so operations run one at a time and are atomic
without a lock, and a waiting call holds no thread::

    client ── call(key, op, args, wait, process, drops) ──► Hub: state = objects[key]; state.op(*args)
           ◄── (OK, result) | (LATER, None) | (ERROR, exc) | (GONE, None) ──┘   Later? wait for a change

An operation that cannot go on yet raises ``state.Later``; the hub then waits for a change of that
object, at most ``wait`` seconds, and tries again, so a blocked client is woken as soon as it can go
on; past ``wait`` it answers LATER and the client calls again, until its own timeout. One call
waits at most a slice, so a client that is interrupted or dies leaves nothing waiting for long.

The hub never raises: every result, an operation's exception included, comes back as a value, so
an error reaching the client from the engine means the hub itself is unreachable.

**The dead-holder rule.** Every call names the caller's process; a process that holds a lock keeps
calling (``touch``) while it does (``clients.LeaseKeeper``). A lock whose holder's process has not
been heard from for the lock's lease is freed, on every engine alike.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from conveyor._backends._shared.hub.state import KINDS, Later, LockState, process_of
from conveyor._backends._shared.managed.ops import USER_CODE_OPS
from conveyor._core import serialize

OK, LATER, ERROR, GONE = "ok", "later", "error", "gone"
"""What a hub call reports: a result, "would block" (the wait ran out), an exception, no such object."""

EXPIRY_CHECK_SECONDS = 0.5
"""How often (at most) the hub looks for locks whose holder's lease ran out."""

FORGET_AFTER_PROCESSES, FORGET_AFTER_SECONDS = 256, 600.0
"""Past this many callers, those silent this long that hold no lock are forgotten."""


class Hub:
    """Objects by key, their waiters, and the liveness of the processes that hold locks."""

    def __init__(self) -> None:
        self._objects: dict[str, Any] = {}
        self._changes: dict[str, asyncio.Event] = {}
        self._heard: dict[str, float] = {}  # process token -> when it last called
        self._next_expiry_check = 0.0

    async def make(self, key: str, kind: str, args: tuple[Any, ...]) -> tuple[str, Any]:
        try:
            if kind == "condition":  # around a lock of this hub, by key
                lock = self._objects.get(args[0])
                if not isinstance(lock, LockState):
                    return GONE, None
                args = (lock, args[0])
            self._objects[key] = KINDS[kind](*args)
        except Exception as exc:  # noqa: BLE001 - the client raises it (a bad typecode, say)
            return ERROR, exc
        return OK, None

    async def drop(self, prefix: str) -> tuple[str, Any]:
        """Forget every object whose key starts with ``prefix`` (a closed factory's)."""
        self._drop(prefix)
        return OK, None

    async def touch(self, process: str) -> tuple[str, Any]:
        """A process that holds locks is alive; how many locks it holds here (0: stop touching)."""
        self._heard[process] = time.monotonic()
        self._expire()
        held = sum(1 for state in self._objects.values()
                   if isinstance(state, LockState) and state.depth and process_of(state.owner or "") == process)
        return OK, held

    async def call(self, key: str, op: str, args: tuple[Any, ...], wait: float, process: str,
                   drops: list[str]) -> tuple[str, Any]:
        """Run ``op`` on the object; if it must wait, wait up to ``wait`` seconds for a change.
        First forget the objects under ``drops`` (prefixes of factories that have gone)."""
        self._heard[process] = time.monotonic()
        for prefix in drops:
            self._drop(prefix)
        self._expire()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            state = self._objects.get(key)
            if state is None or op.startswith("_") or not hasattr(state, op):
                return GONE, None
            try:
                result = getattr(state, op)(*args)
            except Later:
                if not await self._next_change(key, deadline - loop.time()):
                    return LATER, None
                continue
            except Exception as exc:  # noqa: BLE001 - the operation's own error is its result
                user_code = op == "apply" and args[0] in USER_CODE_OPS
                return ERROR, (serialize.dumps_exception(exc) if user_code else exc)
            self._changed(key)
            for linked in getattr(state, "linked", ()):
                self._changed(linked)
            return OK, result

    def _drop(self, prefix: str) -> None:
        for key in [key for key in self._objects if key.startswith(prefix)]:
            del self._objects[key]
            self._changed(key)

    def _expire(self) -> None:
        """Free the locks whose holder's process has been silent for longer than the lock's lease."""
        now = time.monotonic()
        if now < self._next_expiry_check:
            return
        self._next_expiry_check = now + EXPIRY_CHECK_SECONDS
        holders = set()
        for key, state in self._objects.items():
            if isinstance(state, LockState) and state.depth and state.owner is not None:
                holder = process_of(state.owner)
                if now - self._heard.setdefault(holder, now) > state.lease:
                    state.free()
                    self._changed(key)
                else:
                    holders.add(holder)
        if len(self._heard) > FORGET_AFTER_PROCESSES:  # every task process of a long run calls once
            self._heard = {process: heard for process, heard in self._heard.items()
                           if process in holders or now - heard < FORGET_AFTER_SECONDS}

    async def _next_change(self, key: str, seconds: float) -> bool:
        """Wait until the object changes (True) or ``seconds`` pass (False)."""
        if seconds <= 0:
            return False
        change = self._changes.setdefault(key, asyncio.Event())
        try:
            await asyncio.wait_for(change.wait(), seconds)
        except asyncio.TimeoutError:
            return False
        return True

    def _changed(self, key: str) -> None:
        change = self._changes.pop(key, None)
        if change is not None:
            change.set()


__all__ = ["ERROR", "GONE", "LATER", "OK", "Hub"]
