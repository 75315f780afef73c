"""The worker process: receive a batch, run it, send the results, repeat.

A worker ignores SIGINT (the parent decides what Ctrl-C means and stops the workers itself) and dies
with the process that owns the pool: on Linux the kernel sends it SIGKILL when the thread that started
it ends (``PR_SET_PDEATHSIG``; that thread is the pool's supervisor, which outlives every worker), and
on every platform a watchdog thread notices when the owner is gone.
"""

from __future__ import annotations

import collections
import os
import select
import signal
import time

from conveyor._backends._shared import batches, bulk, inherited
from conveyor._backends._shared.calls import CALLERS, resident_bytes, run_general, run_plain
from conveyor._core.coroutines import is_coroutines
from conveyor._backends._shared.inline import run_finalizer
from conveyor._backends._shared.lifetime import die_with_owner, exit_now
from conveyor._backends.process import protocol as p
from conveyor._core import serialize, shm

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing in the fork server
if TYPE_CHECKING:
    from typing import Any

    Reply = tuple[int, float, bool, dict[int, bytes], bool, bytes, int, int, Any]
    """What :meth:`_Worker.reply` sends back for a batch, but what the batch kept mapped:
    ``(seq, busy, isolated, errors, undecodable, values blob, ran, over memory, segment)``."""




class _Inbox:
    """Messages from the supervisor, read ahead when needed to see a CANCEL behind a queued batch."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.backlog: collections.deque[tuple[Any, Any]] = collections.deque()
        self.cancels: set[int] = set()
        self._poller: Any = None
        if hasattr(select, "poll"):
            # One poll object for the worker's life: ``conn.poll(0)`` builds a selector per call.
            # (The connection reads exactly one message per call: no bytes wait in user space.)
            self._poller = select.poll()
            self._poller.register(conn.fileno(), select.POLLIN)

    def _waiting(self) -> bool:
        """Whether a message (or the end of the pipe) is waiting to be read."""
        if self._poller is None:
            return bool(self.conn.poll(0))
        return bool(self._poller.poll(0))

    def _read(self) -> tuple[Any, Any]:
        header = serialize.loads(self.conn.recv_bytes())
        payload = self.conn.recv_bytes() if header[0] == p.RUN else None
        return header, payload

    def next(self) -> tuple[Any, Any]:
        return self.backlog.popleft() if self.backlog else self._read()

    def cancelled(self, seq: int) -> bool:
        """Whether a CANCEL for ``seq`` has arrived (reads whatever is already waiting)."""
        while self._waiting():
            header, payload = self._read()
            if header[0] == p.CANCEL:
                self.cancels.add(header[1])
            else:
                self.backlog.append((header, payload))
        if seq in self.cancels:
            self.cancels.discard(seq)
            return True
        return False


class _Worker:
    def __init__(self, conn: Any, slot: Any, memory_limit: int | None, owner: int = 0,
                 shared_memory: bool = True) -> None:
        self.memory_limit = memory_limit
        self.results = (bulk.worker_results(f"conveyor-{owner}w{os.getpid()}")
                        if owner and shared_memory and shm.available() else None)
        self.conn = conn
        self.slot = memoryview(slot).cast("B").cast("d")
        self.functions: collections.OrderedDict[int, Any] = collections.OrderedDict()

    def function(self, key: int, blob: bytes | None) -> Any:
        if blob is not None:
            try:
                fn = serialize.loads(blob)
            except BaseException as exc:  # noqa: BLE001 - fails the batch, not the worker
                fn = serialize.unpickling_error(exc, "the task function in the worker")
            self.functions[key] = fn
            if len(self.functions) > p.FUNCTION_CACHE_SIZE:
                self.functions.popitem(last=False)
            return fn
        return self.functions[key]

    def run(self, header: tuple[Any, ...], payload: bytes) -> None:
        _, seq, key, blob, kind, timed, isolate, stride, (released, forget) = header
        if released and self.results is not None:
            self.results.released(released)
        if forget:
            bulk.forget(forget)
        reply = self._run(seq, key, blob, kind, timed, isolate, stride, payload)
        # The batch's inputs, results and errors are gone now: a mapping of an input still alive
        # means the task kept it (a global, a cache), and its segment must not be reused.
        self.reply(*reply, bulk.kept_mappings())
        self.slot[p.SLOT_POSITION] = p.PHASE_IDLE

    def _run(self, seq: int, key: int, blob: bytes | None, kind: int, timed: bool, isolate: bool, stride: int,
             payload: bytes) -> Reply:
        slot = self.slot
        fn = self.function(key, blob)
        items, errors = batches.decode_items(payload, isolate)
        if items is None:
            return seq, 0.0, False, {}, True, b"", 0, 0, None
        if isinstance(fn, BaseException):
            errors = dict.fromkeys(range(len(items)), fn)
            values: list[Any] = [None] * len(items)
            busy = 0.0
        else:
            begin = time.perf_counter()
            if is_coroutines(fn):  # many calls at once on this worker's loop; their own time limits
                slot[p.SLOT_POSITION] = p.PHASE_CONCURRENT
                values = fn.run_batch(CALLERS[kind], items, errors)
            elif kind == 0 and not timed and not errors and self.memory_limit is None:
                values = run_plain(fn, items, slot, errors, stride)
            else:
                values = run_general(fn, CALLERS[kind], items, slot, errors, timed, self.memory_limit)
            busy = time.perf_counter() - begin
        count = len(items)
        del items
        ran = len(values)  # fewer than the items when the memory limit stopped the batch early
        values.extend([None] * (count - ran))
        return self._encode(seq, busy, values, errors, isolate, ran)

    def _encode(self, seq: int, busy: float, values: list[Any], errors: dict[int, BaseException], isolate: bool,
                ran: int) -> Reply:
        resident = resident_bytes() if self.memory_limit is not None else 0
        over = resident if resident > (self.memory_limit or 0) and self.memory_limit is not None else 0
        self.slot[p.SLOT_POSITION] = p.PHASE_ENCODE
        isolated, encoded_errors, values_blob, segment = batches.encode_results_bulk(
            values, errors, bool(isolate), self.results)
        return seq, busy, isolated, encoded_errors, False, values_blob, ran, over, segment

    def reply(self, seq: int, busy: float, isolated: bool, errors: dict[int, bytes], undecodable: bool,
              values_blob: bytes, ran: int, over_memory: int, segment: Any = None, kept: Any = ()) -> None:
        self.conn.send_bytes(serialize.dumps((p.DONE, seq, busy, isolated, errors, undecodable, ran,
                                              over_memory, kept, segment)))
        self.conn.send_bytes(values_blob)


def _finalize(finalizer_blob: bytes | None) -> None:
    """Run the pool's finalizer on a graceful exit; a failure is logged (stderr), never raised."""
    if finalizer_blob is None:
        return
    try:
        finalizer, finalargs = serialize.loads(finalizer_blob)
    except BaseException as exc:  # noqa: BLE001 - the worker still ends cleanly
        import logging  # here: the fork server preloads this module, and a worker rarely logs

        logging.getLogger("conveyor").warning("cannot unpickle the worker finalizer in worker %d: %r; not run",
                                              os.getpid(), exc)
        return
    run_finalizer(finalizer, finalargs)


def worker_main(conn: Any, slot: Any, owner: int, owner_is_parent: bool, initializer_blob: bytes | None,
                memory_limit: int | None = None, finalizer_blob: bytes | None = None,
                shared_memory: bool = True, forked: bool = False) -> None:
    """Entry point of a worker process (the target of ``multiprocessing.Process``).

    A ``forked`` worker first lets go of the pipes and sockets it inherited from other threads and
    pools (``inherited.py``). The finalizer runs only on the supervisor's EXIT (a graceful end or a
    recycling); a killed worker, or one whose pipe broke because the pool's owner is gone, never runs it.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    die_with_owner(owner, owner_is_parent)  # first: from here on this process ends with its owner
    if forked:  # before any user code: until then, another thread's subprocess may be waiting on us
        inherited.keep_only_own(conn)
    if initializer_blob is not None:
        try:
            initializer, initargs = serialize.loads(initializer_blob)
            initializer(*initargs)
        except BaseException as exc:  # noqa: BLE001 - reported, then this worker exits
            conn.send_bytes(serialize.dumps((p.INIT_FAILED, serialize.dumps_exception(exc))))
            conn.close()
            os._exit(3)
    conn.send_bytes(serialize.dumps((p.READY, os.getpid())))
    worker = _Worker(conn, slot, memory_limit, owner, shared_memory)
    inbox = _Inbox(conn)
    while True:
        try:
            header, payload = inbox.next()
        except (EOFError, OSError):
            break
        tag = header[0]
        if tag == p.EXIT:
            _finalize(finalizer_blob)
            break
        if tag == p.CANCEL:
            continue  # for a batch that already ran
        seq = header[1]
        worker.slot[p.SLOT_SEQ] = seq  # committed to this batch, unless a CANCEL is already waiting
        worker.slot[p.SLOT_POSITION] = p.PHASE_DECODE
        if inbox.cancelled(seq):
            conn.send_bytes(serialize.dumps((p.SKIPPED, seq)))
            worker.slot[p.SLOT_POSITION] = p.PHASE_IDLE
            continue
        worker.run(header, payload)
    conn.close()
    exit_now(0)
