"""Shared ``dict``, ``list`` and ``Namespace`` for worker processes: ``multiprocessing.Manager()``
semantics, served by a thread of the process that made them instead of by a manager process.

Design: one server *thread* per process, not a manager process
--------------------------------------------------------------
The first container a process makes starts one daemon thread in that process (the *owner*). It listens
on a Unix socket (an abstract address on Linux: nothing on disk to remove) and serves every container
of that process. Other processes (pool workers under fork, forkserver and spawn, their children, any
process given a pickled proxy) connect to it; the owner itself works on its objects directly, under the
same lock and with the same copy-in/copy-out semantics, without a round trip.

Why a thread rather than a ``SyncManager`` process:

- nothing to leak or orphan: there is no extra process to start, to shut down, or to survive a killed
  owner. The data lives exactly as long as the process that made it.
- the lifetime is decided where the references are: the server counts the owner's proxies (those it
  handed out, those unpickled back into the owner, those stored inside other containers). When the
  last one is garbage-collected its object is dropped, and when the last object is dropped the thread
  closes every socket and ends. Proxies in other processes hold no count (the stdlib's remote
  ``incref``/``decref`` leaks whenever a worker exits with ``os._exit``, as conveyor's do).
- faster for the owner (no socket, no pickling of plain numbers and strings), and no start-up cost.

The rule that follows, the same as for conveyor's locks and queues: keep a reference to a container in
the process that made it for as long as other processes use it. Otherwise:

- the owner process has exited: :class:`~conveyor.OwnerGoneError` naming it (its data went with it),
  also a ``ConnectionError`` so that handlers written for ``multiprocessing`` managers keep working;
- the owner is alive but no longer has the container (it dropped its last reference):
  :class:`ReferenceError`.

Proxies pickle (with ``pickle`` or cloudpickle, inside a task or anywhere else) as the server's
address, its random key and the object's id, so they reconnect from any process. Every connection is
authenticated both ways with an HMAC challenge on that key before anything is unpickled.

Each method is one atomic step on the server (``setdefault``, ``pop``, ``update`` and ``modify``
included). ``d[k] += 1`` is two steps (read, then write) and is not atomic across processes: use
``d.modify(k, operator.add, 1, default=0)`` or a ``ctx.Lock()`` around it. Values are stored and
returned as copies, as with the stdlib: ``d["x"].append(1)`` changes a copy; reassign
(``d["x"] = v``) or store a shared list (``d["x"] = ctx.list()``) instead.

The modules: ``wire`` (framing, handshake, addresses), ``ops`` (what each method does to the real
object), ``server`` (the owner's thread and object table), ``client`` (connections from other
processes), ``errors`` (owner gone or object released), ``proxies`` (the classes users hold).
"""

from __future__ import annotations

import pickle
import types
from collections.abc import Iterable
from typing import Any

from conveyor._backends._shared.managed import wire
from conveyor._backends._shared.managed.proxies import DictProxy, ListProxy, NamespaceProxy
from conveyor._backends._shared.managed.server import current_server

__all__ = ["DictProxy", "ListProxy", "NamespaceProxy", "make_dict", "make_list", "make_namespace"]


def _make(cls: type, value: Any) -> Any:
    value = pickle.loads(wire.dumps(value))  # stored as a copy, like every later write
    while True:
        srv = current_server()
        # current_server() has let go of its lock: the thread may be running a user's function that
        # makes a container too, while it holds srv.lock
        oid = srv.register(value)
        if oid is not None:
            ref = (cls._kind, srv.address, srv.pid, srv.key, oid)  # type: ignore[attr-defined]
            return cls._attach_new(ref, srv)  # type: ignore[attr-defined]


def make_dict(*args: Any, **kwargs: Any) -> DictProxy:
    """``ctx.dict(...)``: same arguments as ``dict()``."""
    return _make(DictProxy, dict(*args, **kwargs))  # type: ignore[no-any-return]


def make_list(iterable: Iterable[Any] = ()) -> ListProxy:
    """``ctx.list(...)``: same argument as ``list()``."""
    return _make(ListProxy, list(iterable))  # type: ignore[no-any-return]


def make_namespace(**attributes: Any) -> NamespaceProxy:
    """``ctx.Namespace(x=1)``."""
    return _make(NamespaceProxy, types.SimpleNamespace(**attributes))  # type: ignore[no-any-return]
