"""The owner's side: this process's shared objects, their reference counts, and the thread serving them.

One thread per process, started by the first object and ended with the last, serves every client
with one selector (no thread per connection) on non-blocking sockets, so a slow or hostile client
can stall nobody. The owner's own proxies skip the socket (``call_local``) but take the same lock and
make the same copies, so they see exactly what other processes see.
"""

from __future__ import annotations

import collections
import hmac
import os
import pickle
import selectors
import socket
import threading
import time
from typing import Any

from conveyor._backends._shared.managed import wire
from conveyor._backends._shared.managed.errors import released_error
from conveyor._backends._shared.managed.ops import OPS
from conveyor._core import serialize
from conveyor._core.errors import UnpicklingError

_RECV_CHUNK = 1 << 18
_LISTENER, _WAKE = object(), object()  # selector tags of the server's own sockets

_ATOMIC = frozenset({int, float, complex, bool, str, bytes, type(None)})
"""Immutable values that need no copy on the owner's direct path."""


def _copy_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    for arg in args:
        if type(arg) not in _ATOMIC:
            return pickle.loads(wire.dumps(args))  # type: ignore[no-any-return]
    return args


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


class Server:
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
        self.address, self._directory = wire.new_address()
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
                raise released_error(kind, self.pid)
            result = OPS[op](obj, *args)
            if type(result) in _ATOMIC:
                return result
            blob = wire.dumps(result, "a value in a shared container")
        return pickle.loads(blob)

    def _wake(self) -> None:
        with self._wake_lock:
            if self.closed:
                return
            try:
                self._wake_w.send(b"\0")
            except OSError:  # full (a wake-up is pending anyway) or closing
                pass

    # the thread ----------------------------------------------------------------------------------

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
            except OSError:  # BlockingIOError: no more waiting
                return
            sock.setblocking(False)
            peer = _Peer(sock, os.urandom(wire.NONCE), time.monotonic() + wire.HANDSHAKE_SECONDS)
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
        try:
            peer.sock.shutdown(socket.SHUT_RDWR)  # reaches the peer even if a forked child holds a copy
        except OSError:
            pass
        peer.sock.close()

    def _service(self, peer: _Peer, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            self._flush(peer)
        if mask & selectors.EVENT_READ and peer in self.peers:
            self._read(peer)

    def _read(self, peer: _Peer) -> None:
        try:
            got = peer.sock.recv_into(self._scratch)
        except BlockingIOError:
            return
        except OSError:
            self._drop(peer)
            return
        if not got:
            self._drop(peer)
            return
        inbox = peer.inbox
        inbox += self._scratch_view[:got]
        header = wire.HEADER.size
        while len(inbox) >= header and peer in self.peers:
            (size,) = wire.HEADER.unpack_from(inbox)
            if not peer.ready and size > wire.DIGEST + wire.NONCE:
                self._drop(peer)
                return
            if len(inbox) < header + size:
                return
            message = inbox[header:header + size]
            del inbox[:header + size]
            if peer.ready:
                self._queue(peer, self._execute(message))
            else:
                self._authenticate(peer, message)

    def _authenticate(self, peer: _Peer, message: bytearray) -> None:
        answer, client_nonce = message[:wire.DIGEST], message[wire.DIGEST:]
        expected = wire.digest(self.key, b"C", peer.nonce)
        if len(client_nonce) != wire.NONCE or not hmac.compare_digest(answer, expected):
            self._queue(peer, wire.REJECTED)  # say so (it reveals nothing), then hang up
            self._drop(peer)
            return
        peer.ready = True
        self.handshaking.discard(peer)
        self._queue(peer, wire.digest(self.key, b"S", client_nonce))

    def _queue(self, peer: _Peer, payload: bytes) -> None:
        peer.outbox.extend(map(memoryview, wire.frame(payload)))
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
        except BlockingIOError:
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

    def _execute(self, message: bytearray) -> bytes:
        """One request from another process: unpickle, run under the lock, pickle the answer."""
        try:
            oid, op, args = pickle.loads(message)
        except BaseException as exc:  # noqa: BLE001 - reported to the caller, the server goes on
            error = UnpicklingError(f"the shared container's owner could not unpickle a request: "
                                    f"{type(exc).__name__}: {exc}")
            return wire.dumps((wire.ERROR, serialize.dumps_exception(error)))
        try:
            with self.lock:
                obj = self.objects.get(oid)
                if obj is None:
                    return wire.dumps((wire.RELEASED, None))
                result = OPS[op](obj, *args)
                return wire.dumps((wire.OK, result), "a value in a shared container")
        except BaseException as exc:  # noqa: BLE001 - any failure of an operation is the caller's
            return wire.dumps((wire.ERROR, serialize.dumps_exception(exc)))

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


# --- this process's server -----------------------------------------------------------------------------

_lock = threading.Lock()
_server: Server | None = None


def current_server() -> Server:
    """This process's server, started on first use (or again after the last one stopped)."""
    global _server
    with _lock:
        srv = _server
        if srv is None or srv.pid != os.getpid() or srv.stopping or srv.closed:
            srv = Server()
            srv.thread.start()
            _server = srv
        return srv


def local_server(address: str) -> Server | None:
    """This process's server if it is the one at ``address`` (the object is ours), else None."""
    srv = _server
    if srv is not None and srv.address == address and srv.pid == os.getpid():
        return srv
    return None


def _forget(srv: Server) -> None:
    global _server
    with _lock:
        if _server is srv:
            _server = None


def _after_fork_in_child() -> None:
    """The child of a fork is a client of its parent's objects, never their server."""
    global _lock, _server
    _lock = threading.Lock()
    srv, _server = _server, None
    if srv is not None:
        srv.forget_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
