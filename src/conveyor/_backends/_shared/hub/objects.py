"""What every client of a hub object shares: its space, its key, and how it pickles."""

from __future__ import annotations

from typing import Any

from conveyor._backends._shared.hub.space import Space


class HubObject:
    """A client of one object in a hub; pickles as its space and key (plus :meth:`_state`).

    ``kind`` names its state class in the hub (``state.KINDS``).
    """

    kind = "object"
    _space: Space
    _key: str

    def _create(self, space: Space, *args: Any) -> None:
        key = space.make(self.kind, *args)
        object.__setattr__(self, "_space", space)  # (a shared Namespace refuses plain assignment)
        object.__setattr__(self, "_key", key)

    def _call(self, op: str, *args: Any, timeout: float | None = 0.0,
              undo: tuple[str, tuple[Any, ...]] | None = None) -> Any:
        return self._space.call(self._key, op, args, timeout, undo)

    def _state(self) -> tuple[Any, ...]:
        return ()

    def _restore(self, *state: Any) -> None:
        """Set up an unpickled object from what :meth:`_state` gave."""

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self._space, self._key, self._state()))

    def __repr__(self) -> str:
        return f"<conveyor {self._space.engine} {type(self).__name__} {self._key.rpartition('/')[2]}>"


def _rebuild(cls: type[HubObject], space: Space, key: str, state: tuple[Any, ...]) -> Any:
    obj = object.__new__(cls)
    object.__setattr__(obj, "_space", space)
    object.__setattr__(obj, "_key", key)
    obj._restore(*state)
    return obj


class Acquirable:
    """``with obj:`` for whatever has ``acquire()`` and ``release()``."""

    def __enter__(self) -> bool:
        return self.acquire()  # type: ignore[attr-defined, no-any-return]

    def __exit__(self, *exc: Any) -> None:
        self.release()  # type: ignore[attr-defined]
