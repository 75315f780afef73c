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

- nothing to leak or orphan: there is no extra process to start (with some start method), to shut
  down, or to survive a killed owner. The data lives exactly as long as the process that made it.
- the lifetime is decided where the references are: the server counts the owner's proxies (those it
  handed out, those unpickled back into the owner, those stored inside other containers). When the
  last one is garbage-collected its object is dropped, and when the last object is dropped the thread
  closes every socket and ends. Proxies in other processes hold no count on the server (the stdlib's
  remote ``incref``/``decref`` leaks whenever a worker exits with ``os._exit``, as conveyor's do).
- one thread with a selector serves every client: no thread per connection.
- faster for the owner (no socket, no pickling of plain numbers and strings), and no start-up cost.

The rule that follows, the same as for conveyor's locks and queues: keep a reference to a container in
the process that made it for as long as other processes use it.

Proxies pickle (with ``pickle`` or cloudpickle, inside a task or anywhere else) as the server's
address, its random key and the object's id, so they reconnect from any process. Every connection is
authenticated both ways with an HMAC challenge on that key before anything is unpickled.

Errors:

- the owner process has exited: :class:`ConnectionError` naming it (its data went with it);
- the owner is alive but no longer has the container (it dropped its last reference):
  :class:`ReferenceError`.

(Builtin types, so that ``except ConnectionError``/``OSError`` written for ``multiprocessing``
managers keeps working; ``OwnerDiedError`` is about locks and ``BrokenPoolError`` about pools.)

Each method is one atomic step on the server (``setdefault``, ``pop``, ``update`` and ``modify``
included). ``d[k] += 1`` is two steps (read, then write) and is not atomic across processes: use
``d.modify(k, operator.add, 1, default=0)`` or a ``ctx.Lock()`` around it. Values are stored and
returned as copies, as with the stdlib: ``d["x"].append(1)`` changes a copy; reassign
(``d["x"] = v``) or store a shared list (``d["x"] = ctx.list()``) instead.
"""

from __future__ import annotations

import collections
import hmac
import os
import pickle
import selectors
import socket
import struct
import sys
import tempfile
import threading
import time
import types
import weakref
from collections.abc import Iterable, Iterator, MutableMapping, MutableSequence
from typing import Any, Callable

from conveyor._core import serialize
from conveyor._core.errors import UnpicklingError

__all__ = ["DictProxy", "ListProxy", "NamespaceProxy", "make_dict", "make_list", "make_namespace"]

_HEADER = struct.Struct("!Q")
_NONCE = 32
_HANDSHAKE_SECONDS = 10.0
_RECV_CHUNK = 1 << 18
_EXIT_GRACE_SECONDS = 0.25
_FIRST_READ = 8192  # small: a fresh buffer per read, and above ~128 KiB malloc maps and unmaps pages
_CONCAT_LIMIT = 1 << 16
_OK, _ERROR, _RELEASED = 0, 1, 2
_REJECTED = b"rejected"
_USER_CODE_OPS = frozenset({"modify", "sort"})
"""Operations that run the caller's functions: their errors keep the server-side traceback."""

_ATOMIC = frozenset({int, float, complex, bool, str, bytes, type(None)})
"""Immutable values that need no copy on the owner's direct path."""


class _Missing:
    """A sentinel that stays itself through pickling."""

    def __reduce__(self) -> str:
        return "_MISSING"

    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


# --- pickling --------------------------------------------------------------------------------------

def _dumps(obj: Any, what: str = "a value for a shared container") -> bytes:
    """The C pickler for plain data; cloudpickle for what it cannot do (lambdas, local classes)."""
    try:
        return pickle.dumps(obj, protocol=serialize.PROTOCOL)
    except Exception:  # noqa: BLE001 - retried with cloudpickle, which reports the real problem
        pass
    try:
        return serialize.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's __reduce__
        raise serialize.pickling_error(obj, exc, what) from exc


def _copy_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    for arg in args:
        if type(arg) not in _ATOMIC:
            return pickle.loads(_dumps(args))  # type: ignore[no-any-return]
    return args


# --- framing (blocking sockets, client side) ---------------------------------------------------------

def _send_frame(sock: socket.socket, data: bytes) -> None:
    header = _HEADER.pack(len(data))
    if len(data) <= _CONCAT_LIMIT:
        sock.sendall(header + data)
    else:
        sock.sendall(header)
        sock.sendall(data)


def _recv_exact(sock: socket.socket, size: int) -> bytearray:
    buffer = bytearray(size)
    view = memoryview(buffer)
    done = 0
    while done < size:
        got = sock.recv_into(view[done:])
        if not got:
            raise EOFError("the shared container's server closed the connection")
        done += got
    return buffer


def _recv_frame(sock: socket.socket, limit: int | None = None) -> bytes | bytearray:
    """One message; a small one (the usual case) costs a single ``recv``."""
    first = sock.recv(_FIRST_READ)
    if len(first) < _HEADER.size:
        if not first:
            raise EOFError("the shared container's server closed the connection")
        first += _recv_exact(sock, _HEADER.size - len(first))
    (size,) = _HEADER.unpack_from(first)
    if limit is not None and size > limit:
        raise ConnectionError("unexpected handshake message from the shared container's server")
    body = first[_HEADER.size:]
    if len(body) >= size:
        if len(body) > size:  # the server only ever answers: more than one message is a broken stream
            raise ConnectionError("unexpected data from the shared container's server")
        return body
    rest = _recv_exact(sock, size - len(body))
    return body + rest if body else rest


def _digest(key: bytes, side: bytes, nonce: bytes) -> bytes:
    return hmac.digest(key, side + nonce, "sha256")


# --- the server (in the owner process) ---------------------------------------------------------------

def _new_address() -> tuple[str, str | None]:
    """(address, directory to remove at stop or None)."""
    token = os.urandom(8).hex()
    if sys.platform.startswith("linux"):
        return f"\0conveyor-managed-{os.getpid()}-{token}", None
    directory = tempfile.mkdtemp(prefix="conveyor-", dir="/tmp" if os.path.isdir("/tmp") else None)
    return os.path.join(directory, "managed.sock"), directory


_LISTENER, _WAKE = object(), object()  # selector tags of the server's own sockets


class _Peer:
    """One client connection, as the server sees it (non-blocking)."""

    __slots__ = ("sock", "inbox", "outbox", "nonce", "ready", "deadline", "writing")

    def __init__(self, sock: socket.socket, nonce: bytes, deadline: float) -> None:
        self.sock = sock
        self.inbox = bytearray()
        self.outbox: collections.deque[memoryview] = collections.deque()
        self.nonce = nonce
        self.ready = False
        self.deadline = deadline
        self.writing = False  # registered for EVENT_WRITE: a reply did not fit in the socket buffer


class _Server:
    """The objects of this process that others can reach, and the thread that serves them."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.key = os.urandom(32)
        self.lock = threading.RLock()  # every object, the tables, every operation
        self.objects: dict[int, Any] = {}
        self.refs: dict[int, int] = {}  # proxies alive in this process, per object
        self.released: collections.deque[int] = collections.deque()
        self.next_id = 0
        self.stopping = False  # no objects left: refuses new ones; the thread is on its way out
        self.closed = False  # sockets closed (set by the thread, or in a forked child)
        self._wake_lock = threading.RLock()
        self.address, self._directory = _new_address()
        self.peers: set[_Peer] = set()
        self.handshaking: set[_Peer] = set()
        self._scratch = bytearray(_RECV_CHUNK)  # one receive buffer, reused
        self._scratch_view = memoryview(self._scratch)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.listener.bind(self.address)
            self.listener.listen(128)
            self.listener.setblocking(False)
            self._wake_r, self._wake_w = socket.socketpair()
        except BaseException:
            self.listener.close()
            raise
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.listener, selectors.EVENT_READ, _LISTENER)
        self.selector.register(self._wake_r, selectors.EVENT_READ, _WAKE)
        self.thread = threading.Thread(target=self._serve, name=f"conveyor-managed-{self.pid}", daemon=True)

    # called by the owner's threads --------------------------------------------------------------

    def register(self, obj: Any) -> int | None:
        """Add an object with one reference (the proxy about to be made); None if stopping."""
        with self.lock:
            if self.stopping or self.closed:
                return None
            self.next_id += 1
            self.objects[self.next_id] = obj
            self.refs[self.next_id] = 1
            return self.next_id

    def add_ref(self, oid: int) -> bool:
        with self.lock:
            if oid not in self.objects or self.stopping:
                return False
            self.refs[oid] = self.refs.get(oid, 0) + 1
            return True

    def release(self, oid: int) -> None:
        """A proxy's finalizer: runs inside garbage collection, so it only queues and wakes."""
        if os.getpid() != self.pid:
            return  # a forked child dropping its copy of the owner's proxy
        self.released.append(oid)
        self._wake()

    def call_local(self, oid: int, op: str, args: tuple[Any, ...], kind: str) -> Any:
        """The owner's direct path: same lock and same copies as a remote call, no socket."""
        args = _copy_args(args)
        with self.lock:
            obj = self.objects.get(oid)
            if obj is None:
                raise _released_error(kind, self.pid)
            result = _OPS[op](obj, *args)
            if type(result) in _ATOMIC:
                return result
            blob = _dumps(result, "a value in a shared container")
        return pickle.loads(blob)

    # the thread ----------------------------------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def _wake(self) -> None:
        with self._wake_lock:
            if self.closed:
                return
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full (a wake-up is pending anyway) or closing
                pass

    def _serve(self) -> None:
        try:
            while not self.stopping:
                timeout = None
                if self.handshaking:
                    timeout = max(0.0, min(p.deadline for p in self.handshaking) - time.monotonic())
                for key, mask in self.selector.select(timeout):
                    if key.data is _LISTENER:
                        self._accept()
                    elif key.data is _WAKE:
                        self._drain_wake()
                    else:
                        self._service(key.data, mask)
                if self.handshaking:
                    self._expire_handshakes()
                if self.released:
                    self._drain_releases()
        finally:
            self._close()
            _forget(self)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _drain_releases(self) -> None:
        while self.released:
            dropped = []
            with self.lock:
                while self.released:
                    oid = self.released.popleft()
                    left = self.refs.get(oid, 0) - 1
                    if left > 0:
                        self.refs[oid] = left
                    else:
                        self.refs.pop(oid, None)
                        dropped.append(self.objects.pop(oid, None))
                if not self.objects:
                    self.stopping = True
            del dropped  # outside the lock: proxies stored inside them are released in turn

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sock.setblocking(False)
            peer = _Peer(sock, os.urandom(_NONCE), time.monotonic() + _HANDSHAKE_SECONDS)
            self.peers.add(peer)
            self.handshaking.add(peer)
            self.selector.register(sock, selectors.EVENT_READ, peer)
            self._queue(peer, peer.nonce)

    def _expire_handshakes(self) -> None:
        now = time.monotonic()
        for peer in [p for p in self.handshaking if p.deadline <= now]:
            self._drop(peer)

    def _drop(self, peer: _Peer) -> None:
        if peer not in self.peers:
            return
        self.peers.discard(peer)
        self.handshaking.discard(peer)
        try:
            self.selector.unregister(peer.sock)
        except (KeyError, ValueError):
            pass
        _shutdown_close(peer.sock)

    def _service(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if mask & selectors.EVENT_READ and peer in self.peers:
            self._read(peer)

    def _read(self, peer: _Peer) -> None:
        try:
            got = peer.sock.recv_into(self._scratch)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(peer)
            return
        if not got:
            self._drop(peer)
            return
        inbox = peer.inbox
        inbox += self._scratch_view[:got]
        while len(inbox) >= _HEADER.size and peer in self.peers:
            (size,) = _HEADER.unpack_from(inbox)
            if not peer.ready and size > 2 * _NONCE:
                self._drop(peer)
                return
            if len(inbox) < _HEADER.size + size:
                return
            frame = inbox[_HEADER.size:_HEADER.size + size]
            del inbox[:_HEADER.size + size]
            if peer.ready:
                self._queue(peer, self._execute(frame))
            else:
                self._authenticate(peer, frame)

    def _authenticate(self, peer: _Peer, frame: bytearray) -> None:
        answer, client_nonce = frame[:32], frame[32:]
        if len(client_nonce) != _NONCE or not hmac.compare_digest(answer, _digest(self.key, b"C", peer.nonce)):
            self._queue(peer, _REJECTED)  # say so (it reveals nothing), then hang up
            self._drop(peer)
            return
        peer.ready = True
        self.handshaking.discard(peer)
        self._queue(peer, _digest(self.key, b"S", client_nonce))

    def _queue(self, peer: _Peer, payload: bytes) -> None:
        header = _HEADER.pack(len(payload))
        if len(payload) <= _CONCAT_LIMIT:
            peer.outbox.append(memoryview(header + payload))
        else:
            peer.outbox.append(memoryview(header))
            peer.outbox.append(memoryview(payload))
        self._flush(peer)

    def _flush(self, peer: _Peer) -> None:
        outbox = peer.outbox
        try:
            while outbox:
                sent = peer.sock.send(outbox[0])
                if sent < len(outbox[0]):
                    outbox[0] = outbox[0][sent:]
                    break
                outbox.popleft()
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self._drop(peer)
            return
        if bool(outbox) != peer.writing:
            peer.writing = bool(outbox)
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if outbox else 0)
            try:
                self.selector.modify(peer.sock, events, peer)
            except (KeyError, ValueError):
                pass

    def _execute(self, frame: bytearray) -> bytes:
        """One request from another process: unpickle, run under the lock, pickle the answer."""
        try:
            oid, op, args = pickle.loads(frame)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, the server goes on
            error = UnpicklingError(f"the shared container's owner could not unpickle a request: "
                                    f"{type(exc).__name__}: {exc}")
            return _dumps((_ERROR, serialize.dumps_exception(error)))
        try:
            with self.lock:
                obj = self.objects.get(oid)
                if obj is None:
                    return _dumps((_RELEASED, None))
                result = _OPS[op](obj, *args)
                return _dumps((_OK, result), "a value in a shared container")
        except BaseException as exc:  # noqa: BLE001 - any failure of an operation is the caller's
            return _dumps((_ERROR, serialize.dumps_exception(exc)))

    def _close(self) -> None:
        with self.lock:
            self.stopping = True
        with self._wake_lock:
            self.closed = True
        for peer in list(self.peers):
            self._drop(peer)
        self.selector.close()
        self.listener.close()
        self._wake_r.close()
        self._wake_w.close()
        if self._directory is not None:
            for path in (self.address, self._directory):
                try:
                    os.rmdir(path) if path == self._directory else os.unlink(path)
                except OSError:
                    pass

    def forget_in_child(self) -> None:
        """After a fork: the child got copies of the parent's sockets; close them, never use them.

        (No ``shutdown``: that would cut the parent's connections too.)
        """
        self.closed = True
        self.stopping = True
        for peer in self.peers:
            peer.sock.close()
        for closable in (self.selector, self.listener, self._wake_r, self._wake_w):
            try:
                closable.close()
            except OSError:
                pass


def _shutdown_close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # reaches the peer even if a forked child holds a copy
    except OSError:
        pass
    sock.close()


_lock = threading.Lock()
_server: _Server | None = None


def _current_server() -> _Server:
    """This process's server, started on first use (or again after the last one stopped)."""
    global _server
    srv = _server
    if srv is None or srv.pid != os.getpid() or srv.stopping or srv.closed:
        srv = _Server()
        srv.start()
        _server = srv
    return srv


def _forget(srv: _Server) -> None:
    global _server
    with _lock:
        if _server is srv:
            _server = None


def _local_server(address: str) -> _Server | None:
    srv = _server
    if srv is not None and srv.address == address and srv.pid == os.getpid():
        return srv
    return None


# --- the client side (in every other process) --------------------------------------------------------

class _Endpoint:
    """Idle authenticated connections to one server, kept while proxies to it live in this process."""

    __slots__ = ("users", "idle")

    def __init__(self) -> None:
        self.users = 0
        self.idle: list[socket.socket] = []


_endpoints: dict[str, _Endpoint] = {}
_endpoints_lock = threading.RLock()  # re-entrant: a finalizer may run inside a locked section


def _remote_attach(address: str) -> None:
    with _endpoints_lock:
        endpoint = _endpoints.get(address)
        if endpoint is None:
            endpoint = _endpoints[address] = _Endpoint()
        endpoint.users += 1


def _remote_detach(address: str, pid: int) -> None:
    """A remote proxy's finalizer: the last one for a server closes the idle connections to it."""
    if os.getpid() != pid:
        return
    with _endpoints_lock:
        endpoint = _endpoints.get(address)
        if endpoint is None:
            return
        endpoint.users -= 1
        if endpoint.users > 0:
            return
        del _endpoints[address]
        idle, endpoint.idle = endpoint.idle, []
    for sock in idle:
        sock.close()


def _checkout(ref: tuple[Any, ...]) -> socket.socket:
    address = ref[1]
    with _endpoints_lock:
        endpoint = _endpoints.get(address)
        if endpoint is not None and endpoint.idle:
            return endpoint.idle.pop()
    return _connect(ref)


def _checkin(address: str, sock: socket.socket) -> None:
    with _endpoints_lock:
        endpoint = _endpoints.get(address)
        if endpoint is not None:
            endpoint.idle.append(sock)
            return
    sock.close()


def _connect(ref: tuple[Any, ...]) -> socket.socket:
    kind, address, owner, key, _ = ref
    deadline = time.monotonic() + _HANDSHAKE_SECONDS
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                sock.connect(address)
                break
            except (BlockingIOError, InterruptedError):  # the backlog is full: the server is busy
                if time.monotonic() > deadline:
                    raise TimeoutError("the shared container's server did not accept the connection")
                time.sleep(0.005)
        server_nonce = bytes(_recv_frame(sock, _NONCE))
        client_nonce = os.urandom(_NONCE)
        _send_frame(sock, _digest(key, b"C", server_nonce) + client_nonce)
        answer = bytes(_recv_frame(sock, 32))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, (OSError, EOFError)):
            raise _gone_error(kind, owner, exc) from exc
        raise
    if not hmac.compare_digest(answer, _digest(key, b"S", client_nonce)):
        sock.close()
        if answer == _REJECTED:
            raise ConnectionError(f"the owner of this shared {kind} (process {owner}) refused its key")
        raise ConnectionError(f"the server at the address of this shared {kind} failed authentication")
    sock.settimeout(None)
    return sock


def _owner_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            state = stat.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True  # no /proc: os.kill is all we can check
    return state not in (b"Z", b"X")


def _released_error(kind: str, owner: int) -> ReferenceError:
    return ReferenceError(
        f"this shared {kind} no longer exists: process {owner}, which made it, dropped its last "
        f"reference to it. Keep a reference to the {kind} in that process for as long as others use it")


def _owner_exited(owner: int) -> bool:
    """Whether the owner is gone. A dying process closes its sockets a moment before it stops being
    listed as running, so a connection that just failed gets that moment before we call it alive."""
    if owner == os.getpid():
        return False
    deadline = time.monotonic() + _EXIT_GRACE_SECONDS
    while _owner_alive(owner):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def _gone_error(kind: str, owner: int, cause: BaseException | None = None) -> Exception:
    if _owner_exited(owner):
        return ConnectionError(
            f"this shared {kind} is gone: process {owner}, which made it and held its data, has exited. "
            f"Keep the process that makes a shared {kind} running for as long as others use it")
    if isinstance(cause, (TimeoutError, socket.timeout)):
        return ConnectionError(f"the server of this shared {kind} in process {owner} did not answer in "
                               f"{_HANDSHAKE_SECONDS:g} s")
    return _released_error(kind, owner)


def _remote_call(ref: tuple[Any, ...], op: str, args: tuple[Any, ...]) -> Any:
    kind, address, owner, _, oid = ref
    payload = _dumps((oid, op, args))
    sock = _checkout(ref)
    clean = False
    try:
        _send_frame(sock, payload)
        reply = _recv_frame(sock)
        clean = True
    except (OSError, EOFError) as exc:
        raise _gone_error(kind, owner, exc) from exc
    finally:
        if clean:
            _checkin(address, sock)
        else:
            sock.close()  # an interrupted exchange leaves the stream out of step
    status, value = pickle.loads(reply)
    if status == _OK:
        return value
    if status == _RELEASED:
        raise _released_error(kind, owner)
    error = serialize.loads_exception(value)
    if op not in _USER_CODE_OPS:
        error.__cause__ = None  # a KeyError needs no traceback from the server thread
    raise error


def _after_fork_in_child() -> None:
    """The child of a fork is a client of its parent's containers, never their server."""
    global _lock, _server, _endpoints, _endpoints_lock
    _lock = threading.Lock()
    srv, _server = _server, None
    if srv is not None:
        srv.forget_in_child()
    stale, _endpoints = _endpoints, {}
    _endpoints_lock = threading.RLock()
    for endpoint in stale.values():
        for sock in endpoint.idle:
            sock.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# --- the operations (run on the real object, under the server's lock) -------------------------------

def _modify_item(obj: Any, key: Any, fn: Callable[..., Any], args: tuple[Any, ...], default: Any) -> Any:
    try:
        old = obj[key]
    except (KeyError, IndexError):
        if default is _MISSING or not isinstance(obj, dict):
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


_OPS: dict[str, Callable[..., Any]] = {
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


# --- proxies -----------------------------------------------------------------------------------------

def _rebuild(cls: type, ref: tuple[Any, ...]) -> Any:
    return cls._attach_new(ref)


class _Proxy:
    """What every process holds: (kind, address, owner pid, key, object id), and how to reach it."""

    __slots__ = ("_ref", "_pid", "_server", "__weakref__")
    _kind = "container"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(f"make a shared {self._kind} with conveyor.context('process').{self._kind}(...)")

    @classmethod
    def _attach_new(cls, ref: tuple[Any, ...], server: _Server | None = None) -> Any:
        self = object.__new__(cls)
        object.__setattr__(self, "_ref", ref)
        self._attach(server)
        return self

    def _attach(self, counted: _Server | None = None) -> None:
        """Bind to this process: the local server when it owns the object, else a remote endpoint."""
        ref = self._ref
        pid = os.getpid()
        object.__setattr__(self, "_pid", pid)
        srv = counted or _local_server(ref[1])
        if srv is not None and (counted is not None or srv.add_ref(ref[4])):
            object.__setattr__(self, "_server", srv)
            weakref.finalize(self, srv.release, ref[4])
        elif ref[2] == pid:
            object.__setattr__(self, "_server", False)  # ours, but already released
        else:
            object.__setattr__(self, "_server", None)
            _remote_attach(ref[1])
            weakref.finalize(self, _remote_detach, ref[1], pid)

    def _call(self, op: str, *args: Any) -> Any:
        if self._pid != os.getpid():
            self._attach()  # a forked child using its parent's proxy
        srv = self._server
        if srv:
            return srv.call_local(self._ref[4], op, args, self._kind)
        if srv is False:
            raise _released_error(self._kind, self._ref[2])
        return _remote_call(self._ref, op, args)

    def __reduce__(self) -> Any:
        return (_rebuild, (type(self), self._ref))

    def _describe(self) -> str:
        return f"process {self._ref[2]}"

    def _repr_of(self, fetch: Callable[[], str]) -> str:
        try:
            return fetch()
        except Exception as exc:  # noqa: BLE001 - a repr must not raise (it is used in error messages)
            return f"<{type(self).__name__} of {self._describe()}: {type(exc).__name__}>"


def _plain_pairs(other: Any) -> Any:
    if isinstance(other, DictProxy):
        return other.copy()
    if hasattr(other, "keys"):
        return {key: other[key] for key in other.keys()}  # noqa: SIM118 - the mapping protocol
    return list(other)


def _plain_list(values: Iterable[Any]) -> list[Any]:
    return values.copy() if isinstance(values, ListProxy) else list(values)


class DictProxy(_Proxy):
    """A ``dict`` that lives in the process that made it and works from any process.

    Each method is one atomic step. ``keys()``, ``values()`` and ``items()`` are views of a snapshot,
    and iteration goes over a snapshot of the keys. Values are copies: mutating one in place
    (``d[k].append(x)``) changes the copy only; write it back, or store a shared container in it.
    """

    __slots__ = ()
    _kind = "dict"
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        return self._call("getitem", key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._call("setitem", key, value)

    def __delitem__(self, key: Any) -> None:
        self._call("delitem", key)

    def __contains__(self, key: Any) -> bool:
        return bool(self._call("contains", key))

    def __len__(self) -> int:
        return int(self._call("len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self._call("keys"))

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self._call("keys"))

    def __eq__(self, other: Any) -> bool:
        return bool(self.copy() == other)

    def __or__(self, other: Any) -> Any:
        return self.copy() | other

    def __ror__(self, other: Any) -> Any:
        return other | self.copy()

    def __ior__(self, other: Any) -> DictProxy:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return self._repr_of(lambda: f"DictProxy({self.copy()!r})")

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` with the current contents."""
        return self._call("copy")  # type: ignore[no-any-return]

    def keys(self) -> Any:
        return dict.fromkeys(self._call("keys")).keys()

    def values(self) -> Any:
        return self.copy().values()

    def items(self) -> Any:
        return self.copy().items()

    def get(self, key: Any, default: Any = None) -> Any:
        return self._call("get", key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        if len(default) > 1:
            raise TypeError(f"pop expected at most 2 arguments, got {1 + len(default)}")
        return self._call("pop", key, *default)

    def popitem(self) -> tuple[Any, Any]:
        return self._call("popitem")  # type: ignore[no-any-return]

    def setdefault(self, key: Any, default: Any = None) -> Any:
        return self._call("setdefault", key, default)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        self._call("update", _plain_pairs(other), kwargs)

    def clear(self) -> None:
        self._call("clear")

    def modify(self, key: Any, fn: Callable[..., Any], *args: Any, default: Any = _MISSING) -> Any:
        """Atomically ``d[key] = fn(d[key], *args)``; returns the new value.

        ``default`` is used when the key is missing (else KeyError). ``fn`` runs in the process that
        made the dict, while every other access waits: keep it short. Example:
        ``d.modify("hits", operator.add, 1, default=0)``.
        """
        return self._call("modify", key, fn, args, default)


class ListProxy(_Proxy):
    """A ``list`` that lives in the process that made it and works from any process.

    Each method is one atomic step; slicing and iteration return (go over) copies. Elements are
    copies: ``lst[0].append(x)`` changes a copy only.
    """

    __slots__ = ()
    _kind = "list"
    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, index: Any) -> Any:
        return self._call("getitem", index)

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            value = _plain_list(value)
        self._call("setitem", index, value)

    def __delitem__(self, index: Any) -> None:
        self._call("delitem", index)

    def __contains__(self, value: Any) -> bool:
        return bool(self._call("contains", value))

    def __len__(self) -> int:
        return int(self._call("len"))

    def __iter__(self) -> Iterator[Any]:
        return iter(self.copy())

    def __reversed__(self) -> Iterator[Any]:
        return reversed(self.copy())

    def __eq__(self, other: Any) -> bool:
        return bool(self.copy() == other)

    def __lt__(self, other: Any) -> bool:
        return bool(self.copy() < other)

    def __le__(self, other: Any) -> bool:
        return bool(self.copy() <= other)

    def __gt__(self, other: Any) -> bool:
        return bool(self.copy() > other)

    def __ge__(self, other: Any) -> bool:
        return bool(self.copy() >= other)

    def __add__(self, other: Any) -> list[Any]:
        return self.copy() + (other.copy() if isinstance(other, ListProxy) else other)

    def __radd__(self, other: Any) -> list[Any]:
        return other + self.copy()  # type: ignore[no-any-return]

    def __iadd__(self, other: Iterable[Any]) -> ListProxy:
        self.extend(other)
        return self

    def __mul__(self, times: int) -> list[Any]:
        return self.copy() * times

    __rmul__ = __mul__

    def __imul__(self, times: int) -> ListProxy:
        self._call("imul", times)
        return self

    def __repr__(self) -> str:
        return self._repr_of(lambda: f"ListProxy({self.copy()!r})")

    def copy(self) -> list[Any]:
        """A plain ``list`` with the current contents."""
        return self._call("copy")  # type: ignore[no-any-return]

    def append(self, value: Any) -> None:
        self._call("append", value)

    def extend(self, values: Iterable[Any]) -> None:
        self._call("extend", _plain_list(values))

    def insert(self, index: int, value: Any) -> None:
        self._call("insert", index, value)

    def pop(self, index: int = -1) -> Any:
        return self._call("pop", index)

    def remove(self, value: Any) -> None:
        self._call("remove", value)

    def index(self, value: Any, *bounds: int) -> int:
        return int(self._call("index", value, *bounds))

    def count(self, value: Any) -> int:
        return int(self._call("count", value))

    def reverse(self) -> None:
        self._call("reverse")

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        self._call("sort", key, reverse)

    def clear(self) -> None:
        self._call("clear")

    def modify(self, index: int, fn: Callable[..., Any], *args: Any) -> Any:
        """Atomically ``lst[index] = fn(lst[index], *args)``; returns the new value."""
        return self._call("modify", index, fn, args, _MISSING)


class NamespaceProxy(_Proxy):
    """Attributes that live in the process that made them: ``ns.x = 1`` anywhere, ``ns.x`` anywhere.

    Names starting with ``_`` belong to the proxy and are not shared. ``ns.x += 1`` is a read then a
    write: not atomic across processes.
    """

    __slots__ = ()
    _kind = "Namespace"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._call("getattr", name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_"):
            raise AttributeError(f"{name!r}: names starting with '_' are not shared by a Namespace")
        self._call("setattr", name, value)

    def __delattr__(self, name: str) -> None:
        if name.startswith("_"):
            raise AttributeError(f"{name!r}: names starting with '_' are not shared by a Namespace")
        self._call("delattr", name)

    def __repr__(self) -> str:
        def fetch() -> str:
            fields = ", ".join(f"{name}={value!r}" for name, value in self._call("vars").items())
            return f"Namespace({fields})"

        return self._repr_of(fetch)


MutableMapping.register(DictProxy)
MutableSequence.register(ListProxy)


# --- the factories ------------------------------------------------------------------------------------

def _make(cls: type, value: Any) -> Any:
    value = pickle.loads(_dumps(value))  # stored as a copy, like every later write
    while True:
        with _lock:
            srv = _current_server()
        oid = srv.register(value)  # not under _lock: the server thread may be running a user's function
        if oid is not None:
            return cls._attach_new((cls._kind, srv.address, srv.pid, srv.key, oid), srv)  # type: ignore[attr-defined]


def make_dict(*args: Any, **kwargs: Any) -> DictProxy:
    """``ctx.dict(...)``: same arguments as ``dict()``."""
    return _make(DictProxy, dict(*args, **kwargs))  # type: ignore[no-any-return]


def make_list(iterable: Iterable[Any] = ()) -> ListProxy:
    """``ctx.list(...)``: same argument as ``list()``."""
    return _make(ListProxy, list(iterable))  # type: ignore[no-any-return]


def make_namespace(**attributes: Any) -> NamespaceProxy:
    """``ctx.Namespace(x=1)``."""
    return _make(NamespaceProxy, types.SimpleNamespace(**attributes))  # type: ignore[no-any-return]
