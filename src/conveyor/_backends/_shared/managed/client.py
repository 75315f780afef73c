"""The other processes' side: authenticated connections to an owner, and one call over them.

Connections are pooled per server and shared by every proxy to it in this process (a call takes an
idle one or opens one, so threads never wait for each other), and closed when the last such proxy is
garbage-collected. A proxy here holds no count on the owner: the owner's lifetime is decided by its own
references, so a client dying with ``os._exit`` leaks nothing.
"""

from __future__ import annotations

import hmac
import os
import pickle
import socket
import threading
import time
from typing import Any

from conveyor._backends._shared.managed import wire
from conveyor._backends._shared.managed.errors import gone_error, released_error
from conveyor._backends._shared.managed.ops import USER_CODE_OPS
from conveyor._core import serialize


class _Endpoint:
    """Idle authenticated connections to one server, kept while proxies to it live in this process."""

    __slots__ = ("users", "idle")

    def __init__(self) -> None:
        self.users = 0
        self.idle: list[socket.socket] = []


_endpoints: dict[str, _Endpoint] = {}
_endpoints_lock = threading.RLock()  # re-entrant: a finalizer may run inside a locked section


def attach(address: str) -> None:
    """A remote proxy to ``address`` now lives in this process."""
    with _endpoints_lock:
        endpoint = _endpoints.get(address)
        if endpoint is None:
            endpoint = _endpoints[address] = _Endpoint()
        endpoint.users += 1


def detach(address: str, pid: int) -> None:
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


def call(ref: tuple[Any, ...], op: str, args: tuple[Any, ...]) -> Any:
    """Run ``op`` on the object of ``ref`` (kind, address, owner pid, key, object id) in its owner."""
    kind, address, owner, _, oid = ref
    payload = wire.dumps((oid, op, args))
    sock = _checkout(ref)
    clean = False
    try:
        wire.send_frame(sock, payload)
        reply = wire.recv_frame(sock)
        clean = True
    except (OSError, EOFError) as exc:
        raise gone_error(kind, owner, exc) from exc
    finally:
        if clean:
            _checkin(address, sock)
        else:
            sock.close()  # an interrupted exchange leaves the stream out of step
    status, value = pickle.loads(reply)
    if status == wire.OK:
        return value
    if status == wire.RELEASED:
        raise released_error(kind, owner)
    error = serialize.loads_exception(value)
    if op not in USER_CODE_OPS:
        error.__cause__ = None  # a KeyError needs no traceback from the server thread
    raise error


def _checkout(ref: tuple[Any, ...]) -> socket.socket:
    with _endpoints_lock:
        endpoint = _endpoints.get(ref[1])
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
    deadline = time.monotonic() + wire.HANDSHAKE_SECONDS
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                sock.connect(address)
                break
            except BlockingIOError:  # the backlog is full: the server is busy
                if time.monotonic() > deadline:
                    raise TimeoutError("the shared container's server did not accept the connection")
                time.sleep(0.005)
        server_nonce = bytes(wire.recv_frame(sock, wire.NONCE))
        client_nonce = os.urandom(wire.NONCE)
        wire.send_frame(sock, wire.digest(key, b"C", server_nonce) + client_nonce)
        answer = bytes(wire.recv_frame(sock, wire.DIGEST))
    except BaseException as exc:
        sock.close()
        if isinstance(exc, (OSError, EOFError)):
            raise gone_error(kind, owner, exc) from exc
        raise
    if not hmac.compare_digest(answer, wire.digest(key, b"S", client_nonce)):
        sock.close()
        if answer == wire.REJECTED:
            raise ConnectionError(f"the owner of this shared {kind} (process {owner}) refused its key")
        raise ConnectionError(f"the server at the address of this shared {kind} failed authentication")
    sock.settimeout(None)
    return sock


def _after_fork_in_child() -> None:
    """The child of a fork starts with no connections: its copies of the parent's are out of step."""
    global _endpoints, _endpoints_lock
    stale, _endpoints = _endpoints, {}
    _endpoints_lock = threading.RLock()
    for endpoint in stale.values():
        for sock in endpoint.idle:
            sock.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
