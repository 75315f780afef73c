"""Shared dict, list and Namespace of the process context (``_backends/process/managed/``).

They are served by a thread of the process that made them; other processes reach them through a Unix
socket. The autouse leak check (conftest) also proves that the server thread, its sockets and every
client connection are gone once the containers are dropped.
"""

from __future__ import annotations

import base64
import gc
import operator
import os
import pickle
import subprocess
import sys
import threading
from collections.abc import MutableMapping, MutableSequence

import cloudpickle
import pytest

import conveyor
from conftest import START_METHODS, bounded, wait_until

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def ctx():
    return conveyor.context("process")


def _server_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("conveyor-managed-")]


# --- in the process that made them -------------------------------------------------------------------

def test_containers_compare_like_the_thread_backend(ctx):
    d, lst, ns = ctx.dict(a=1), ctx.list([1, 2]), ctx.Namespace(x=1)
    d["b"] = 2
    lst.append(3)
    ns.y = 2
    assert d == {"a": 1, "b": 2} and lst == [1, 2, 3] and (ns.x, ns.y) == (1, 2)
    assert {"a": 1, "b": 2} == d and [1, 2, 3] == lst
    assert d != {"a": 1} and lst != [1, 2]


def test_dict_operations(ctx):
    assert ctx.dict({"a": 1}) == {"a": 1} and ctx.dict([("a", 1)], b=2) == {"a": 1, "b": 2}
    d = ctx.dict(a=1)
    d["b"] = 2
    assert d["a"] == 1 and d.get("b") == 2 and d.get("zz") is None and d.get("zz", 5) == 5
    assert "a" in d and "zz" not in d and len(d) == 2 and bool(d) and not ctx.dict()
    assert sorted(d.keys()) == ["a", "b"] and d.keys() == {"a", "b"}
    assert sorted(d.values()) == [1, 2] and dict(d.items()) == {"a": 1, "b": 2}
    assert sorted(d) == ["a", "b"] and list(reversed(d)) == ["b", "a"]
    d.update({"c": 3}, d=4)
    d.update([("e", 5)])
    d |= {"f": 6}
    assert d.setdefault("a", 100) == 1 and d.setdefault("g", 7) == 7
    assert d.pop("g") == 7 and d.pop("g", None) is None
    with pytest.raises(KeyError):
        d.pop("g")
    with pytest.raises(KeyError, match="missing"):
        d["missing"]
    del d["f"]
    with pytest.raises(KeyError):
        del d["f"]
    assert d.copy() == {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5} and type(d.copy()) is dict
    assert d | {"z": 0} == {**d.copy(), "z": 0}
    assert d.popitem() == ("e", 5)
    other = ctx.dict(d.copy())
    assert d == other and other == d
    d.update(other)  # from another shared dict
    d.clear()
    assert d == {} and len(d) == 0
    assert isinstance(d, MutableMapping) and isinstance(ctx.list(), MutableSequence)
    with pytest.raises(TypeError, match="unhashable"):
        hash(d)
    assert repr(ctx.dict(a=1)) == "DictProxy({'a': 1})"


def test_list_operations(ctx):
    lst = ctx.list(range(3))
    lst.append(3)
    lst.extend([4, 5])
    lst += (6,)
    lst.insert(0, -1)
    assert lst == [-1, 0, 1, 2, 3, 4, 5, 6] and len(lst) == 8
    assert lst[0] == -1 and lst[-1] == 6 and lst[2:4] == [1, 2] and lst[::4] == [-1, 3]
    assert lst.index(3) == 4 and lst.index(5, 2, 7) == 6 and lst.count(1) == 1 and 2 in lst
    with pytest.raises(ValueError):
        lst.index(99)
    with pytest.raises(IndexError):
        lst[99]
    lst[0] = 10
    lst[1:3] = iter([20, 21])
    del lst[-1]
    assert lst.pop() == 5 and lst.pop(0) == 10
    lst.remove(21)
    assert lst == [20, 2, 3, 4] and list(lst) == [20, 2, 3, 4] and list(reversed(lst)) == [4, 3, 2, 20]
    lst.sort()
    assert lst == [2, 3, 4, 20]
    lst.sort(key=lambda x: -x)  # a lambda travels with cloudpickle
    assert lst.copy() == [20, 4, 3, 2] and type(lst.copy()) is list
    lst.reverse()
    assert lst[:2] == [2, 3] and lst + [0] == [2, 3, 4, 20, 0] and [0] + lst == [0, 2, 3, 4, 20]
    assert lst * 2 == [2, 3, 4, 20] * 2 and 2 * lst == lst * 2 and lst < [3] and lst >= [2, 3]
    lst *= 2
    assert len(lst) == 8
    lst.extend(lst)  # itself: a snapshot is taken first
    assert len(lst) == 16
    lst.clear()
    assert lst == [] and not lst
    assert repr(ctx.list([1])) == "ListProxy([1])"


def test_namespace_operations(ctx):
    ns = ctx.Namespace(x=1)
    ns.y = [1, 2]
    assert ns.x == 1 and ns.y == [1, 2]
    del ns.x
    with pytest.raises(AttributeError, match="'x'"):
        ns.x
    with pytest.raises(AttributeError):
        del ns.x
    with pytest.raises(AttributeError, match="not shared"):
        ns._private = 1
    assert not hasattr(ns, "_private")
    assert repr(ns) == "Namespace(y=[1, 2])"


def test_modify_is_one_atomic_step(ctx):
    d = ctx.dict()
    assert d.modify("n", operator.add, 1, default=0) == 1
    assert d.modify("n", lambda n: n * 10) == 10
    with pytest.raises(KeyError):
        d.modify("missing", operator.add, 1)
    lst = ctx.list([1, 2])
    assert lst.modify(0, operator.sub, 5) == -4 and lst == [-4, 2]
    with pytest.raises(IndexError):
        lst.modify(5, abs)
    with pytest.raises(ZeroDivisionError):
        d.modify("n", lambda n: n / 0)
    assert d["n"] == 10  # unchanged after a failed function

    def add_many():
        for _ in range(500):
            d.modify("n", operator.add, 1)

    threads = [threading.Thread(target=add_many) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert d["n"] == 2010


def test_values_are_stored_as_copies(ctx):
    inner = [1]
    d = ctx.dict(x=inner)
    inner.append(2)
    assert d["x"] == [1]  # copied when stored
    d["x"].append(3)  # changes the copy that d["x"] returned, as with multiprocessing.Manager
    assert d["x"] == [1]
    value = d["x"]
    value.append(3)
    d["x"] = value  # the way to change it: write it back
    assert d["x"] == [1, 3]
    lst = ctx.list([[0]])
    lst[0].append(1)
    assert lst[0] == [0]


def test_a_shared_container_inside_another_is_shared(ctx):
    d = ctx.dict()
    d["inner"] = ctx.list()  # the dict keeps the list alive
    d["inner"].append(1)
    assert d["inner"] == [1]


def test_an_unpicklable_value_is_a_clear_error(ctx):
    d = ctx.dict()
    with pytest.raises(conveyor.PicklingError, match="lock"):
        d["lock"] = threading.Lock()
    assert "lock" not in d


def test_direct_construction_is_refused():
    from conveyor._backends._shared.managed import DictProxy

    with pytest.raises(TypeError, match="conveyor.context"):
        DictProxy()


# --- one server thread per process, gone with the last container --------------------------------------

def test_one_server_thread_serves_every_container_and_stops_after_the_last(ctx):
    assert _server_threads() == []
    d, lst, ns = ctx.dict(), ctx.list(), ctx.Namespace()
    assert len(_server_threads()) == 1
    copy = pickle.loads(pickle.dumps(d))  # another proxy of the same dict, in the same process
    del d, lst, ns
    gc.collect()
    copy["still"] = "there"
    assert copy == {"still": "there"} and len(_server_threads()) == 1
    del copy
    assert wait_until(lambda: not _server_threads(), 5)
    again = ctx.dict(a=1)  # a new server starts when needed
    assert again == {"a": 1} and len(_server_threads()) == 1


def test_a_released_container_raises_reference_error(ctx):
    d = ctx.dict(a=1)
    blob = pickle.dumps(d)
    del d
    gc.collect()
    assert wait_until(lambda: not _server_threads(), 5)
    dangling = pickle.loads(blob)
    with pytest.raises(ReferenceError, match=rf"process {os.getpid()}.*dropped its last reference"):
        dangling["a"]
    assert "ReferenceError" in repr(dangling)  # a repr never raises


# --- from workers -------------------------------------------------------------------------------------

def _write_all(args):
    d, lst, ns, i = args
    d[i] = i * i
    lst.append(i)
    setattr(ns, f"v{i}", i)
    return d["parent"], os.getpid()


def _lookup(args):
    d, key = args
    return d[key]


@pytest.mark.parametrize("start_method", START_METHODS)
def test_workers_write_to_shared_containers(ctx, start_method):
    d, lst, ns = ctx.dict(parent="hello"), ctx.list(), ctx.Namespace()
    with conveyor.Pool(2, backend="process", start_method=start_method) as pool:
        results = pool.map(_write_all, [(d, lst, ns, i) for i in range(10)], chunksize=1)
        assert {value for value, _ in results} == {"hello"}
        assert os.getpid() not in {pid for _, pid in results}
        with pytest.raises(KeyError, match="nope"):  # the worker's KeyError comes back as itself
            pool.submit(_lookup, (d, "nope")).result(timeout=bounded(20))
    assert dict(d.items()) == {"parent": "hello", **{i: i * i for i in range(10)}}
    assert sorted(lst) == list(range(10))
    assert [getattr(ns, f"v{i}") for i in range(10)] == list(range(10))


_INHERITED = None


def _write_inherited(i):
    _INHERITED[i] = os.getpid()  # not passed: inherited by fork


@pytest.mark.skipif("fork" not in START_METHODS, reason="needs fork")
def test_forked_workers_use_containers_they_inherited(ctx):
    global _INHERITED
    _INHERITED = ctx.dict()
    try:
        with conveyor.Pool(2, backend="process", start_method="fork") as pool:
            pool.map(_write_inherited, range(6), chunksize=1)
        assert sorted(_INHERITED.keys()) == list(range(6)) and os.getpid() not in _INHERITED.values()
    finally:
        _INHERITED = None


def _add_under_lock(args):
    d, lock, times = args
    for _ in range(times):
        with lock:
            d["n"] += 1  # a read and a write: only the lock makes it exact


def _add_with_modify(args):
    d, times = args
    for _ in range(times):
        d.modify("m", operator.add, 1, default=0)


def test_increments_are_exact_with_a_lock_or_with_modify(ctx):
    d, lock = ctx.dict(n=0), ctx.Lock()
    with conveyor.Pool(4, backend="process") as pool:
        pool.map(_add_under_lock, [(d, lock, 150)] * 8, chunksize=1)
        pool.map(_add_with_modify, [(d, 150)] * 8, chunksize=1)
    assert d["n"] == 1200 and d["m"] == 1200


def _mutate_nested(d):
    d["copied"].append("lost")  # changes the worker's copy only
    value = d["copied"]
    value.append("kept")
    d["written_back"] = value
    d["shared"].append("seen")  # a shared list inside the dict: the change is seen


def test_nested_values_change_only_when_written_back_or_shared(ctx):
    d = ctx.dict(copied=[], shared=ctx.list())
    with conveyor.Pool(1, backend="process") as pool:
        pool.submit(_mutate_nested, d).result(timeout=bounded(20))
    assert d["copied"] == [] and d["written_back"] == ["kept"] and d["shared"] == ["seen"]


def _make_and_keep(_):
    d = conveyor.context("process").dict(a=1)
    _make_and_keep.kept = d  # the worker keeps its dict alive until it exits
    return d, os.getpid()


def _read(d):
    return d.copy()


def test_the_owner_serves_proxies_handed_back_to_it_and_its_exit_is_a_clear_error(ctx):
    with conveyor.Pool(1, backend="process") as pool:
        d, owner = pool.submit(_make_and_keep, 0).result(timeout=bounded(20))
        assert owner != os.getpid()
        d["b"] = 2  # this process is now the client
        assert d == {"a": 1, "b": 2}
        assert pool.submit(_read, d).result(timeout=bounded(20)) == {"a": 1, "b": 2}  # back in its owner
    pattern = rf"process {owner}, which made it and held its data, has exited"
    with pytest.raises(conveyor.OwnerGoneError, match=pattern) as raised:
        d["a"]
    assert isinstance(raised.value, ConnectionError)  # what code written for multiprocessing catches
    with pytest.raises(conveyor.OwnerGoneError, match=pattern):
        d["a"] = 3
    assert "OwnerGoneError" in repr(d)
    with conveyor.Pool(1, backend="process") as pool:  # a worker still using it gets the same error
        with pytest.raises(conveyor.OwnerGoneError, match=pattern):
            pool.submit(_read, d).result(timeout=bounded(20))


_CLIENT = r"""
import base64, pickle, sys
d = pickle.loads(base64.b64decode(sys.stdin.read()))
d["from_child"] = d["a"] + 1
print(sorted(d.keys()))
"""


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_a_pickled_proxy_works_in_any_process(ctx, dumps):
    d = ctx.dict(a=1)
    blob = base64.b64encode(dumps(d)).decode()
    done = subprocess.run([sys.executable, "-c", _CLIENT], input=blob, capture_output=True, text=True,
                          timeout=bounded(30))  # not a multiprocessing child: the key is in the pickle
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "['a', 'from_child']" and d["from_child"] == 2


def test_a_wrong_key_is_refused(ctx):
    from conveyor._backends._shared.managed import DictProxy

    d = ctx.dict(a=1)
    kind, address, owner, _key, oid = d._ref
    forged = pickle.dumps(DictProxy._attach_new((kind, address, owner, b"x" * 32, oid)))
    done = subprocess.run([sys.executable, "-c", _CLIENT], input=base64.b64encode(forged).decode(),
                          capture_output=True, text=True, timeout=bounded(30))
    assert done.returncode != 0
    assert f"ConnectionError: the owner of this shared dict (process {owner}) refused its key" in done.stderr
    assert d == {"a": 1}


def _keep(d):
    _keep.kept = d
    return d["a"]


def _use_kept(_):
    return _keep.kept["a"]


def test_dropping_the_last_container_stops_the_server_even_with_clients_connected(ctx):
    with conveyor.Pool(1, backend="process") as pool:
        d = ctx.dict(a=1)
        assert pool.submit(_keep, d).result(timeout=bounded(20)) == 1  # the worker stays connected
        del d
        gc.collect()
        assert wait_until(lambda: not _server_threads(), 5)
        with pytest.raises(ReferenceError, match=rf"process {os.getpid()}.*dropped its last reference"):
            pool.submit(_use_kept, 0).result(timeout=bounded(20))


def _round_trip_big(args):
    d, size = args
    d["up"] = b"u" * size
    return len(d["down"]) + len(d["up"])


def test_values_larger_than_the_socket_buffers(ctx):
    size = 8 << 20
    d = ctx.dict(down=b"d" * size)
    with conveyor.Pool(1, backend="process") as pool:
        assert pool.submit(_round_trip_big, (d, size)).result(timeout=bounded(30)) == 2 * size
    assert d["up"] == b"u" * size


def test_a_client_process_can_use_a_container_from_many_threads(ctx):
    with conveyor.Pool(1, backend="process") as pool:
        d, _ = pool.submit(_make_and_keep, 0).result(timeout=bounded(20))  # owned by the worker

        def add_many(shared):
            for _ in range(100):
                shared.modify("n", operator.add, 1, default=0)

        threads = [threading.Thread(target=add_many, args=(d,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(bounded(30))
        assert d["n"] == 800
        del d
        gc.collect()  # our idle connections to the worker close with the last proxy (the leak check)


def test_strangers_cannot_stall_or_break_the_server(ctx, monkeypatch):
    import socket
    import struct

    from conveyor._backends._shared import managed

    monkeypatch.setattr(managed.wire, "HANDSHAKE_SECONDS", 0.2)
    d = ctx.dict(a=1)
    address = d._ref[1]
    silent, wrong, huge = (socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3))
    try:
        for sock in (silent, wrong, huge):
            sock.settimeout(bounded(10))
            sock.connect(address)
        wrong.sendall(struct.pack("!Q", 64) + b"\0" * 64)
        huge.sendall(struct.pack("!Q", 1 << 40))
        assert d["a"] == 1  # served meanwhile

        def read_all(sock):
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    return data
                data += chunk

        assert read_all(silent)[8:] != b""  # its challenge, then it is hung up on after the deadline
        assert read_all(wrong).endswith(b"rejected")
        read_all(huge)
    finally:
        for sock in (silent, wrong, huge):
            sock.close()
    d["b"] = 2
    assert d == {"a": 1, "b": 2}
