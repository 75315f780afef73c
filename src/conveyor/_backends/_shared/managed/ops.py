"""The operations a proxy can ask for, by name, and what each does to the real object.

They run in the owner, under the server's lock, whether the request came over a socket or from the
owner's own proxies: one table is what makes every method one atomic step, the same from anywhere.
"""

from __future__ import annotations

from typing import Any, Callable


class _Missing:
    """A sentinel that stays itself through pickling."""

    def __reduce__(self) -> str:
        return "MISSING"

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()
"""``modify``'s default when none is given: the missing key is an error."""

USER_CODE_OPS = frozenset({"modify", "sort"})
"""Operations that run the caller's functions: their errors keep the server-side traceback."""


def _modify_item(obj: Any, key: Any, fn: Callable[..., Any], args: tuple[Any, ...], default: Any) -> Any:
    try:
        old = obj[key]
    except (KeyError, IndexError):
        if default is MISSING or not isinstance(obj, dict):
            raise
        old = default
    new = fn(old, *args)
    obj[key] = new
    return new


def _update(obj: dict[Any, Any], other: Any, extra: dict[str, Any]) -> None:
    obj.update(other)
    obj.update(extra)


def _getattr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise AttributeError(f"shared Namespace has no attribute {name!r}") from None


def _delattr(obj: Any, name: str) -> None:
    try:
        delattr(obj, name)
    except AttributeError:
        raise AttributeError(f"shared Namespace has no attribute {name!r}") from None


def _imul(obj: list[Any], times: int) -> None:
    obj *= times


OPS: dict[str, Callable[..., Any]] = {
    # both
    "getitem": lambda obj, key: obj[key],
    "setitem": lambda obj, key, value: obj.__setitem__(key, value),
    "delitem": lambda obj, key: obj.__delitem__(key),
    "contains": lambda obj, item: item in obj,
    "len": len,
    "copy": lambda obj: obj,  # pickled on the way out: a copy
    "clear": lambda obj: obj.clear(),
    "pop": lambda obj, *args: obj.pop(*args),
    "modify": _modify_item,
    # dict
    "keys": list,
    "get": lambda obj, key, default: obj.get(key, default),
    "popitem": lambda obj: obj.popitem(),
    "setdefault": lambda obj, key, default: obj.setdefault(key, default),
    "update": _update,
    # list
    "append": lambda obj, value: obj.append(value),
    "extend": lambda obj, values: obj.extend(values),
    "insert": lambda obj, index, value: obj.insert(index, value),
    "remove": lambda obj, value: obj.remove(value),
    "index": lambda obj, value, *bounds: obj.index(value, *bounds),
    "count": lambda obj, value: obj.count(value),
    "reverse": lambda obj: obj.reverse(),
    "sort": lambda obj, key, reverse: obj.sort(key=key, reverse=reverse),
    "imul": _imul,
    # Namespace
    "getattr": _getattr,
    "setattr": setattr,
    "delattr": _delattr,
    "vars": vars,
}
