"""What travels between a shared object's owner and its clients, in one place so the two sides agree.

Every message is a frame: an 8-byte big-endian length, then a pickle. A connection starts with a
handshake that proves both sides know the server's random key before anything is unpickled::

    server -> client   nonce_s                        (NONCE bytes)
    client -> server   hmac(key, "C" + nonce_s) + nonce_c
    server -> client   hmac(key, "S" + nonce_c)       (or REJECTED, then it hangs up)

then requests ``(object id, operation, args)`` and replies ``(status, value)``: OK and the result,
ERROR and a pickled exception, or RELEASED (the owner no longer has that object).
"""

from __future__ import annotations

import hmac
import os
import pickle
import socket
import struct
import sys
import tempfile
from typing import Any

from conveyor._core import serialize

HEADER = struct.Struct("!Q")
NONCE = 32
DIGEST = 32  # sha256
HANDSHAKE_SECONDS = 10.0
"""How long either side waits for the handshake (read at use: tests shorten it)."""

OK, ERROR, RELEASED = 0, 1, 2
REJECTED = b"rejected"

_FIRST_READ = 8192  # small: a fresh buffer per read, and above ~128 KiB malloc maps and unmaps pages
_CONCAT_LIMIT = 1 << 16


def dumps(obj: Any, what: str = "a value for a shared container") -> bytes:
    """The C pickler for plain data; cloudpickle for what it cannot do (lambdas, local classes)."""
    try:
        return pickle.dumps(obj, protocol=serialize.PROTOCOL)
    except Exception:  # noqa: BLE001 - retried with cloudpickle, which reports the real problem
        pass
    try:
        return serialize.dumps(obj)
    except Exception as exc:  # noqa: BLE001 - any failure of a user's __reduce__
        raise serialize.pickling_error(obj, exc, what) from exc


def frame(payload: bytes) -> tuple[bytes, ...]:
    """The pieces to send for one message: one write when small, no copy of a large payload."""
    header = HEADER.pack(len(payload))
    if len(payload) <= _CONCAT_LIMIT:
        return (header + payload,)
    return header, payload


def send_frame(sock: socket.socket, payload: bytes) -> None:
    for piece in frame(payload):
        sock.sendall(piece)


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


def recv_frame(sock: socket.socket, limit: int | None = None) -> bytes | bytearray:
    """One message on a blocking socket; a small one (the usual case) costs a single ``recv``."""
    first = sock.recv(_FIRST_READ)
    if len(first) < HEADER.size:
        if not first:
            raise EOFError("the shared container's server closed the connection")
        first += _recv_exact(sock, HEADER.size - len(first))
    (size,) = HEADER.unpack_from(first)
    if limit is not None and size > limit:
        raise ConnectionError("unexpected handshake message from the shared container's server")
    body = first[HEADER.size:]
    if len(body) >= size:
        if len(body) > size:  # the server only ever answers: more than one message is a broken stream
            raise ConnectionError("unexpected data from the shared container's server")
        return body
    rest = _recv_exact(sock, size - len(body))
    return body + rest if body else rest


def digest(key: bytes, side: bytes, nonce: bytes | bytearray) -> bytes:
    return hmac.digest(key, side + nonce, "sha256")


def new_address() -> tuple[str, str | None]:
    """(address, directory to remove at stop or None): abstract on Linux, nothing on disk."""
    token = os.urandom(8).hex()
    if sys.platform.startswith("linux"):
        return f"\0conveyor-managed-{os.getpid()}-{token}", None
    directory = tempfile.mkdtemp(prefix="conveyor-", dir="/tmp" if os.path.isdir("/tmp") else None)
    return os.path.join(directory, "managed.sock"), directory
