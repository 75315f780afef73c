"""``ctx.Pipe()`` on every backend: send/recv/poll, bytes, end of file when the other end is closed or
its holder dies, a broken pipe when the reader is gone, and ends handed to tasks of a running pool."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest

import conveyor
from conftest import START_METHODS, bounded

pytestmark = pytest.mark.timeout(60)

BACKENDS = ("serial", "thread", "process")


@pytest.fixture(params=BACKENDS)
def ctx(request):
    return conveyor.context(request.param)


def test_a_message_too_large_for_the_buffer_comes_back_in_buffer_too_short(ctx):
    a, b = ctx.Pipe()
    with a, b:
        a.send_bytes(b"0123456789")
        with pytest.raises(multiprocessing.BufferTooShort) as raised:
            b.recv_bytes_into(bytearray(4))
        assert raised.value.args[0] == b"0123456789"


def test_duplex_and_one_way_pipes_carry_objects_and_bytes(ctx):
    a, b = ctx.Pipe()
    with a, b:
        a.send({"x": [1, 2]})
        assert b.poll(bounded(5))
        assert b.recv() == {"x": [1, 2]}
        b.send_bytes(b"0123456789", 2, 5)
        assert a.recv_bytes() == b"23456"
        a.send_bytes(bytearray(b"abc"))
        into = bytearray(8)
        assert b.recv_bytes_into(into, 4) == 3 and into[4:7] == b"abc"
        assert not a.poll(0.05)
    reader, writer = ctx.Pipe(duplex=False)
    with reader, writer:
        writer.send(5)
        assert reader.recv() == 5
        with pytest.raises(OSError):
            reader.send(1)
        with pytest.raises(OSError):
            writer.recv()
    assert reader.closed and writer.closed
    with pytest.raises(OSError):
        reader.recv()


def test_closing_the_writer_gives_the_reader_what_is_left_then_eof(ctx):
    reader, writer = ctx.Pipe(duplex=False)
    for value in range(3):
        writer.send(value)
    writer.close()
    assert [reader.recv() for _ in range(3)] == [0, 1, 2]
    assert reader.poll(0)  # end of file is "ready": recv will not block
    with pytest.raises(EOFError):
        reader.recv()
    reader.close()


def test_a_long_message_that_is_too_long_for_maxlength(ctx):
    a, b = ctx.Pipe()
    with a, b:
        a.send_bytes(b"x" * 100)
        with pytest.raises(OSError):
            b.recv_bytes(10)


def _send_then_close(args):
    writer, count = args
    for value in range(count):
        writer.send(value)
    writer.close()
    return count


def _send_then_die(writer):
    writer.send("last words")
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.parametrize("method", START_METHODS)
def test_an_end_handed_to_a_worker_and_closed_in_the_parent(method):
    ctx = conveyor.context("process")
    reader, writer = ctx.Pipe(duplex=False)
    with conveyor.Pool(1, backend="process", start_method=method) as pool:
        future = pool.submit(_send_then_close, (writer, 5))
        writer.close()  # the idiom with a real pipe: the worker's copy keeps it open
        received = []
        with pytest.raises(EOFError):
            while True:
                received.append(reader.recv())
        assert future.result(timeout=bounded(30)) == 5
    assert received == list(range(5))
    reader.close()


def test_a_writer_killed_after_sending_gives_eof_after_its_data():
    ctx = conveyor.context("process")
    reader, writer = ctx.Pipe(duplex=False)
    with conveyor.Pool(1, backend="process") as pool:
        future = pool.submit(_send_then_die, writer)
        writer.close()
        assert reader.recv() == "last words"
        with pytest.raises(EOFError):
            reader.recv()
        with pytest.raises(conveyor.WorkerCrashedError):
            future.result(timeout=bounded(30))
    reader.close()


def test_a_writer_whose_reader_is_gone_gets_broken_pipe(ctx):
    reader, writer = ctx.Pipe(duplex=False)
    reader.close()
    with pytest.raises(BrokenPipeError):
        for _ in range(200):  # a real pipe fails at once; a queue-backed one once it is full
            writer.send(b"x" * 100_000)
    writer.close()
