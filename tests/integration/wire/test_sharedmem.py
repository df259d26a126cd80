"""Large frames through /dev/shm between processes on one host."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

from celeriac import App, AsyncResult, Client
from celeriac.testing import Deployment, RawPeer, wait_until
from celeriac.wire import protocol, sharedmem
from celeriac.wire.protocol import Message
from celeriac.wire.sharedmem import Segment
from tasks_for_tests import array_backing, inc

pytestmark = pytest.mark.skipif(sharedmem.namespace() is None, reason="no usable /dev/shm")

TAG = "0badcafe"
BIG = sharedmem.MIN_BYTES


def mapped_file(array: np.ndarray) -> str | None:
    """The file whose mapping holds ``array``'s memory (from /proc/self/maps)."""
    address = array.ctypes.data
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return fields[5] if len(fields) > 5 else None
    return None


# -- through real processes ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_large_result_arrives_mapped_and_its_segment_goes_with_the_future(
    client: Client,
) -> None:
    future = client.submit(np.arange, 1 << 20, dtype=np.float64)  # 8 MiB
    array = future.result(timeout=30)
    path = mapped_file(array)
    assert path is not None and path.startswith("/dev/shm/celeriac-")
    assert array.flags.writeable
    del future
    wait_until(lambda: not os.path.exists(path), timeout=10)  # released: the scheduler deleted it
    assert array.sum() == (1 << 20) * ((1 << 20) - 1) / 2  # our mapping outlives the file


@pytest.mark.timeout(60)
def test_a_large_argument_reaches_the_task_mapped(client: Client) -> None:
    array = np.arange(1 << 20, dtype=np.float64)
    backing, total = client.submit(array_backing, array).result(timeout=30)
    assert backing == "mmap" and total == array.sum()


@pytest.mark.timeout(60)
def test_a_client_on_another_host_gets_bytes(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sharedmem, "namespace", lambda: "another-host")
    with Client(client.address) as remote:
        array = np.arange(1 << 20, dtype=np.float64)
        assert remote.submit(array_backing, array).result(timeout=30)[1] == array.sum()
        result = remote.submit(np.ones, 1 << 20).result(timeout=30)  # made on a local worker
        assert result.sum() == 1 << 20 and mapped_file(result) is None


def _submit_naming(segment: Segment) -> Message:
    fields = {"key": "k", "deps": [], "priority": 0, "retries": 0, "queue": "default"}
    return Message("submit", fields, [[b"f"], [b"a", segment]])


def _info(peer: RawPeer) -> dict[str, Any]:
    peer.send_messages(Message("info", {"rid": 1}))
    [reply] = peer.sync()
    return dict(reply["info"])


def _ask(raw: zmq.Socket, *messages: Message) -> dict[str, Any]:
    raw.send_multipart(protocol.encode(list(messages)))
    [reply] = msgpack.unpackb(raw.recv_multipart()[0])[1]
    return dict(reply)


@pytest.mark.timeout(60)
def test_the_scheduler_refuses_names_from_a_peer_that_does_not_share_memory(
    client: Client, raw: zmq.Socket
) -> None:
    other_host = Message("hello-client", {"version": protocol.VERSION})
    assert _ask(raw, other_host)["op"] == "welcome"
    segment = sharedmem.write(b"x" * BIG, TAG)
    segment.disown()  # as a sender does once it has sent the name
    reply = _ask(raw, _submit_naming(segment))
    assert reply["op"] == "error" and "may not use" in reply["text"]
    wait_until(lambda: not segment.exists(), 10)  # dropped with the batch, once replied to

    local = Message("hello-client", {"version": protocol.VERSION, "shm": sharedmem.namespace()})
    assert _ask(raw, local)["op"] == "welcome"
    reply = _ask(raw, _submit_naming(segment))  # a name whose file is gone
    assert reply["op"] == "error" and "does not exist" in reply["text"]
    assert client.submit(inc, 41).result(timeout=10) == 42


@pytest.mark.timeout(60)
def test_names_from_a_peer_of_an_earlier_run_make_it_register_again(raw: zmq.Socket) -> None:
    """A client that spoke to the scheduler before it restarted: no error, a re-registration."""
    segment = sharedmem.write(b"x" * BIG, TAG)
    segment.disown()
    assert _ask(raw, _submit_naming(segment))["op"] == "reregister"
    wait_until(lambda: not segment.exists(), 10)


@pytest.mark.timeout(120)
def test_the_journal_keeps_the_bytes_not_the_name(tmp_path: Path) -> None:
    deployment = Deployment(tmp_path / "journal.sqlite3")
    deployment.start_scheduler()
    try:
        array = np.arange(1 << 20, dtype=np.float64)
        with App(deployment.address, timeout=20) as app:
            sent = app.task(array_backing).delay(array)  # no worker yet: it waits
        row = sqlite3.connect(deployment.journal).execute("SELECT record FROM task").fetchone()
        assert len(row[0]) > array.nbytes
        deployment.kill_scheduler()
        deployment.start_scheduler()  # deletes the segment the killed run left
        deployment.start_worker(nprocs=1)
        with App(deployment.address, timeout=20) as app:
            assert AsyncResult(sent.id, app=app).get(timeout=60)[1] == array.sum()
    finally:
        deployment.stop()


# -- H4: a peer names a segment, then shrinks it ----------------------------------------


@pytest.mark.timeout(120)
def test_a_segment_shrunk_after_it_was_named_fails_that_task_not_the_scheduler(
    deployment: Deployment,
) -> None:
    """Issue 13, H4: the named file is truncated once the scheduler holds it.

    The scheduler journals the (detached) task's arguments, then must send them
    as bytes to a worker that does not share its ``/dev/shm``: it mapped the
    file and died of SIGBUS (of an uncaught ValueError without a journal).
    """
    context = zmq.Context()
    attacker = RawPeer(context, deployment.address, b"attacker")
    thief = RawPeer(context, deployment.address, b"remote-worker")
    legit = RawPeer(context, deployment.address, b"legit")
    tag = sharedmem.scheduler_tag(deployment.address)
    scheduler = deployment.scheduler
    assert scheduler is not None
    try:
        local = {"version": protocol.VERSION, "shm": sharedmem.namespace()}
        attacker.send_messages(Message("hello-client", local))
        [welcome] = attacker.sync(timeout=30)  # the scheduler may still be starting
        assert welcome["op"] == "welcome" and welcome["shm_tag"] == tag
        segment = sharedmem.write(b"x" * BIG, tag)
        segment.disown()  # the scheduler's once named
        submit = _submit_naming(segment)
        submit.fields.update(detached=True, ack=True)
        attacker.send_messages(submit)
        assert [m["op"] for m in attacker.sync()] == ["accepted"]  # journaled, bytes and all
        os.truncate(segment.path, 0)

        remote = {"version": protocol.VERSION, "slots": 1, "queues": ["default"], "pid": 1}
        thief.send_messages(Message("hello-worker", {**remote, "name": "thief"}))
        legit.send_messages(Message("hello-client", {"version": protocol.VERSION}))
        assert [m["op"] for m in legit.sync()] == ["welcome"]
        try:  # until the task is the thief's: its arguments had to go inline
            wait_until(lambda: _info(legit)["by_state"].get("processing") == 1, 30)
        finally:
            assert scheduler.poll() is None, f"the scheduler died: exit {scheduler.returncode}"

        deployment.start_worker(nprocs=1)
        with Client(deployment.address, timeout=20) as client:
            assert client.submit(inc, 41).result(timeout=30) == 42
        assert scheduler.poll() is None
    finally:
        for peer in (attacker, thief, legit):
            peer.close()
        context.term()
        deployment.stop()
        sharedmem.remove_leftovers(tag)
