"""The messages between the supervisor and a worker, and the layout of a worker's progress slot.

Every message is one or two ``send_bytes`` frames on the worker's own pipe::

    parent -> worker   RUN   (header)(payload)   header = (RUN, seq, fn_key, fn_blob|None, kind,
                                                           timed, isolate, stride,
                                                           (released, forget))
                       CANCEL (header)           header = (CANCEL, seq): skip that batch if not started
                       EXIT  (header)
    worker -> parent   READY (header)            header = (READY, pid)
                       SKIPPED (header)          header = (SKIPPED, seq): a cancelled batch never ran
                       INIT_FAILED (header)      header = (INIT_FAILED, exception blob)
                       DONE  (header)(values)    header = (DONE, seq, busy, isolated, errors,
                                                           undecodable, ran, over_memory,
                                                           kept, segment)
                       (``ran`` < the batch's length: the memory limit stopped it early; the rest
                       never ran. ``over_memory``: resident bytes, when over the limit.)

Large buffers travel in shared memory (``bulk.py``): ``segment`` = (name, spans) of the worker's
result segment or None; ``kept`` = input segments the task still references after the batch (never
reused); ``released`` = result segments the caller no longer maps (the worker reuses them);
``forget`` = input segments the caller removed (the worker drops its cached mappings of them).

The progress slot is three doubles in shared memory, written by the worker and read by the
supervisor, so that when a worker dies or overruns the supervisor knows which input it was running
without the worker having to say anything: ``[seq, position, started]``. ``position`` is the item
index, or one of the PHASE_* values. The worker writes ``started`` before ``position``, so a reader
that sees a new position never pairs it with an old start time.

Cancelling a batch that is already in a worker's pipe (a prefetch): the worker writes the batch's
``seq`` into its slot *before* it looks for a CANCEL, so once the supervisor has sent CANCEL, a slot
that does not show that ``seq`` guarantees the batch will be skipped.
"""

from __future__ import annotations

RUN = 1
EXIT = 2
READY = 3
INIT_FAILED = 4
DONE = 5
CANCEL = 6
SKIPPED = 7

# The slot's layout belongs to the shared call loop, which writes it (``_shared/calls.py``).
from conveyor._backends._shared.calls import (  # noqa: E402, F401 - re-exported as the protocol's names
    PHASE_CONCURRENT,
    PHASE_DECODE,
    PHASE_ENCODE,
    PHASE_IDLE,
    SLOT_POSITION,
    SLOT_SEQ,
    SLOT_SIZE,
    SLOT_STARTED,
)

FUNCTION_CACHE_SIZE = 32
"""Functions a worker keeps unpickled; the supervisor mirrors the same first-in-first-out cache so it
sends a function's bytes to a worker only when the worker does not hold it."""
