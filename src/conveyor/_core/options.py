"""Keyword checking: a name conveyor does not know is a ``TypeError`` that says what was meant.

``Pool``, ``conveyor.map``, ``conveyor.context`` and ``TaskGroup`` take backend-specific options as
``**options``. Without a check, a typo (``task_timout=0.5``) or a standard-library name
(``processes=4``) would be accepted and do nothing: the worst failure, a silent one. Every peer
raises ``TypeError`` for an unknown keyword; so does conveyor, naming the closest known option, or
conveyor's name for a standard-library one.
"""

from __future__ import annotations

from typing import Iterable

__all__ = ["STDLIB_NAMES", "check_keywords"]

STDLIB_NAMES = {
    "processes": "workers",
    "max_workers": "workers",
    "maxtasksperchild": "max_tasks_per_worker",
    "max_tasks_per_child": "max_tasks_per_worker",
    "mp_context": "start_method",
    "context": "start_method",
}
"""``multiprocessing.Pool`` / ``concurrent.futures`` keyword → conveyor's keyword for the same thing."""

_DROP_INS = "conveyor.multiprocessing.Pool and conveyor.futures take the standard library's names"


def check_keywords(given: Iterable[str], known: Iterable[str], where: str) -> None:
    """Raise ``TypeError`` for the first name of ``given`` that is not in ``known``.

    Args:
        given: the keywords the caller passed.
        known: every keyword accepted there (common options and the backend's own).
        where: what was called, for the message (``"Pool(backend='process')"``).
    """
    known = set(known)
    for name in given:
        if name in known:
            continue
        ours = STDLIB_NAMES.get(name)
        if ours is not None and ours in known:
            hint = f"conveyor calls it {ours}= ({_DROP_INS})"
        else:
            import difflib  # only for a mistake: every Pool() checks its keywords, few are wrong

            close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
            if close:
                hint = f"did you mean {close[0]}?"
            else:
                hint = f"it takes {', '.join(sorted(known))}" if known else "it takes no other options"
        raise TypeError(f"{where} got an unexpected keyword argument {name!r}: {hint}")
