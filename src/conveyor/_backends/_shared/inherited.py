"""What a process started with ``fork`` keeps of the descriptors it inherited from its parent.

``fork`` copies every open descriptor of the parent into the child, whichever thread opened it and
for whatever purpose. Some of them are another thread's business for a moment: between making its
pipes and closing its copies, a thread inside ``subprocess.Popen`` holds the write end of the
exec-status pipe (and of a captured stdout), and another pool's supervisor holds the write end of its
new worker's sentinel pipe. Their readers wait for end of file, which comes only once *every* copy is
closed, so a worker forked in that window makes ``subprocess.run`` hang, or another pool's
``shutdown(wait=True)`` wait, for as long as the worker lives. Python opens every descriptor
non-inheritable (PEP 446) against exactly this, but that flag acts at ``exec``, which a fork worker
never calls; forkserver and spawn children start from a fresh program and have no such copies.

So a forked worker or task process replaces, before any user code runs, every inherited **pipe,
socket and terminal** (the descriptors whose last close someone may be waiting for: end of file, a
hang-up, a port freed) except:

- stdin, stdout and stderr;
- those marked inheritable (``os.set_inheritable(fd, True)``, ``socket.set_inheritable(True)``): the
  way a program says a child should get a descriptor;
- those the child itself needs, which its starter names: its own pipe end and the write end of its
  sentinel pipe (``identity`` of the parent's ``process.sentinel``, since ``multiprocessing`` keeps the
  child's end in a local variable only), plus ``multiprocessing``'s own (``runtime_fds``);
- those the user handed it: a ``multiprocessing`` ``Connection`` in the initializer's arguments or a
  task's call pickles as its descriptor's number (plain pickling knows no better), which under fork
  means the inherited descriptor (``PassedFiles`` notes them while pickling).

Regular files, directories, devices other than terminals and every other kind stay open: a log file
the parent opened before the pool still works in a worker, as with ``multiprocessing``'s fork, and
nobody waits for the last copy of a file to close.

Replaced, not closed: a stale object of the parent in the child (a copy of another thread's socket or
``Connection``) may close its number later, and had the number been reused meanwhile, it would close
a descriptor the child is using. The replacement is one end of a socket pair whose other end is
closed, so whatever still uses the old number reads end of file and gets ``BrokenPipeError`` on a
write: the truth about a descriptor whose other side is gone for this process.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import socket
import stat
import struct
import sys
from collections.abc import Iterable
from multiprocessing.connection import Connection
from typing import Any

import cloudpickle

from conveyor._core import serialize

_IDENTITY = struct.Struct("=QQ")
_STANDARD = (0, 1, 2)


def identity(fd: int) -> tuple[int, int]:
    """The open file behind ``fd``: device and inode, the same for both ends of a pipe."""
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class _NotingPickler(cloudpickle.Pickler):
    """conveyor's pickler, noting the open file of every ``multiprocessing`` connection it pickles."""

    def __init__(self, file: Any, files: set[tuple[int, int]]) -> None:
        super().__init__(file, protocol=serialize.PROTOCOL)
        self.files = files

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, Connection) and not obj.closed:
            try:
                self.files.add(identity(obj.fileno()))
            except OSError:
                pass
        return super().reducer_override(obj)


class PassedFiles:
    """Pickles what a fork child receives (an initializer and its arguments, a task's call) exactly as
    ``serialize.dumps`` does, noting the open files of the ``multiprocessing`` connections inside,
    anywhere the pickler reaches: those travel as descriptor numbers, so the child keeps them.

    Noted during the one real pickling, never by a second pass: some objects count their copies as
    they pickle (a conveyor pipe end), and a second pass would count one too many.
    """

    def __init__(self) -> None:
        self.files: set[tuple[int, int]] = set()

    def dumps(self, obj: Any) -> bytes:
        buffer = io.BytesIO()
        _NotingPickler(buffer, self.files).dump(obj)
        return buffer.getvalue()


def tell_child(conn: Any, process: Any, passed: Iterable[tuple[int, int]] = ()) -> None:
    """Parent side, right after a fork start: send the child the open files to keep besides its own
    pipe end, its sentinel first (``passed``: ``PassedFiles.files``)."""
    try:
        conn.send_bytes(b"".join(_IDENTITY.pack(*file) for file in (identity(process.sentinel), *passed)))
    except OSError:
        pass  # already dead: its sentinel reports that


def keep_only_own(conn: Any) -> list[int]:
    """Child side, first thing after a fork start: wait for ``tell_child``, then replace every
    inherited pipe, socket and terminal that is neither ``conn``, a file named by the parent, nor the
    runtime's.

    Returns the descriptors replaced. An end of file instead of the message (the parent died, or
    closed the pipe) leaves the descriptors as they are: this process is about to exit.
    """
    try:
        files = set(_IDENTITY.iter_unpack(conn.recv_bytes()))
    except (EOFError, OSError):
        return []
    return replace_foreign({conn.fileno(), *runtime_fds()}, files)


def runtime_fds() -> set[int]:
    """Descriptors of ``multiprocessing`` that its machinery may use in a child: the resource tracker's
    pipe (shared segments are registered through it), the fork server's keep-alive pipe (which its
    own children hold too), and the read end watching the parent (``parent_process().sentinel``)."""
    found: set[int] = set()
    tracker = _private_fd("multiprocessing.resource_tracker", "_resource_tracker", "_fd")
    forkserver = _private_fd("multiprocessing.forkserver", "_forkserver", "_forkserver_alive_fd")
    found.update(fd for fd in (tracker, forkserver) if fd is not None)
    parent = multiprocessing.parent_process()
    if parent is not None:
        try:
            found.add(parent.sentinel)
        except (AttributeError, ValueError):
            pass
    return found


def _private_fd(module: str, instance: str, attribute: str) -> int | None:
    fd = getattr(getattr(sys.modules.get(module), instance, None), attribute, None)
    return fd if isinstance(fd, int) and fd >= 0 else None


def replace_foreign(keep: Iterable[int], keep_files: Iterable[tuple[int, int]] = ()) -> list[int]:
    """Replace every open pipe, socket and terminal of this process with a dead end, except stdin,
    stdout, stderr, the descriptors in ``keep``, the open files in ``keep_files`` ((device, inode)
    pairs) and those marked inheritable. Returns the descriptors replaced."""
    keep = set(keep).union(_STANDARD)
    keep_files = set(keep_files)
    foreign = [fd for fd in _open_fds() if fd not in keep and _is_foreign_stream(fd, keep_files)]
    if not foreign:
        return []
    mine, other = socket.socketpair()
    dead_end = mine.detach()
    other.close()
    try:
        for fd in foreign:
            os.dup2(dead_end, fd, inheritable=False)
    finally:
        os.close(dead_end)
    return foreign


def _is_foreign_stream(fd: int, keep_files: set[tuple[int, int]]) -> bool:
    try:
        st = os.fstat(fd)
        mode = st.st_mode
        stream = stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or (stat.S_ISCHR(mode) and os.isatty(fd))
        return stream and (st.st_dev, st.st_ino) not in keep_files and not os.get_inheritable(fd)
    except OSError:
        return False  # closed meanwhile (the listing's own descriptor)


def _open_fds() -> list[int]:
    """This process's open descriptors: listed where the system lists them, probed elsewhere."""
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            return sorted(int(name) for name in os.listdir(directory) if name.isdigit())
        except OSError:
            continue
    try:
        limit = min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    except (OSError, ValueError):
        limit = 1024
    found = []
    for fd in range(limit):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found
