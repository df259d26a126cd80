"""Large frames through /dev/shm between processes on one host."""

from __future__ import annotations

import errno
import gc
import mmap
import os
from typing import Any

import msgpack
import numpy as np
import pytest

from celeriac.wire import protocol, sharedmem
from celeriac.wire.protocol import Message, ProtocolError
from celeriac.wire.sharedmem import Segment, Spiller
from tasks_for_tests import array_backing

pytestmark = pytest.mark.skipif(sharedmem.namespace() is None, reason="no usable /dev/shm")

TAG = "0badcafe"
BIG = sharedmem.MIN_BYTES


def done_task(payload: list[Any]) -> Message:
    return Message("task-done", {"key": "k"}, [payload])


# -- the segments themselves ----------------------------------------------------------------


def test_a_written_segment_goes_with_its_owner_and_stays_when_disowned() -> None:
    data = np.arange(BIG // 8, dtype=np.int64)
    owned = sharedmem.write(memoryview(data), TAG)
    assert owned.exists() and owned.shm_name.startswith(f"celeriac-{TAG}-")
    path = owned.path
    del owned
    gc.collect()
    assert not os.path.exists(path)

    kept = sharedmem.write(memoryview(data), TAG)
    kept.disown()
    path = kept.path
    del kept
    gc.collect()
    try:
        assert os.path.exists(path)
    finally:
        os.unlink(path)


def test_deletions_in_a_deferred_block_happen_as_it_ends() -> None:
    segment = sharedmem.write(b"x" * BIG, TAG)
    path = segment.path
    with sharedmem.deletions_deferred():
        del segment
        gc.collect()
        assert os.path.exists(path)  # the scheduler is still sending its replies
    assert not os.path.exists(path)


def test_a_received_segment_maps_copy_on_write() -> None:
    source = sharedmem.write(memoryview(np.ones(BIG // 8)), TAG)
    received = Segment(source.shm_name, source.nbytes)
    array = np.frombuffer(received.buffer, dtype=np.float64)
    array[0] = 42.0  # writable, and private to this mapping
    again = np.frombuffer(Segment(source.shm_name, source.nbytes).buffer, dtype=np.float64)
    assert array[0] == 42.0 and again[0] == 1.0


def test_a_segment_released_before_it_is_read_says_so() -> None:
    source = sharedmem.write(b"x" * BIG, TAG)
    late = Segment(source.shm_name, source.nbytes)
    del source
    gc.collect()
    with pytest.raises(FileNotFoundError, match="released by the scheduler"):
        late.buffer  # noqa: B018


@pytest.mark.parametrize(
    "name",
    ["../../etc/passwd", "celeriac-xyz", f"celeriac-{TAG}-{'0' * 31}", "celeriac-" + "0" * 32],
)
def test_only_celeriac_names_are_segments(name: str) -> None:
    with pytest.raises(ValueError, match="not a Celeriac shared memory segment"):
        Segment(name, BIG)


def test_leftovers_of_a_scheduler_are_removed_by_tag() -> None:
    tag = sharedmem.scheduler_tag(f"tcp://127.0.0.1:{os.getpid()}")  # this test's alone
    mine = sharedmem.write(b"m" * BIG, tag)
    other = sharedmem.write(b"o" * BIG, "feedf00d")
    mine.disown()
    assert sharedmem.remove_leftovers(tag) == 1
    assert not mine.exists() and other.exists()


# -- on the wire -----------------------------------------------------------------------------


def test_large_frames_travel_as_names_and_small_ones_inline() -> None:
    spiller = Spiller(TAG)
    big, small = np.arange(BIG // 8, dtype=np.int64), b"s" * 70_000
    frames = protocol.encode([done_task([b"head", memoryview(big), small])], spiller)
    [head] = msgpack.unpackb(frames[0])[1]
    name, size = head["p"][0][1]
    assert (size, frames[1:]) == (BIG, [small])  # the big one is not in the message
    [msg] = protocol.decode(frames, segment=Segment)
    segment = msg.payloads[0][1]
    assert segment.shm_name == name
    assert np.array_equal(np.frombuffer(segment.buffer, dtype=np.int64), big)
    spiller.handed_over()  # sent: the segment is no longer the sender's
    assert segment.exists()
    os.unlink(segment.path)


def test_a_failed_send_deletes_what_it_wrote() -> None:
    spiller = Spiller(TAG)
    frames = protocol.encode([done_task([b"h", b"x" * BIG])], spiller)
    name = msgpack.unpackb(frames[0])[1][0]["p"][0][1][0]
    assert os.path.exists(f"/dev/shm/{name}")
    spiller.abandoned()
    gc.collect()
    assert not os.path.exists(f"/dev/shm/{name}")


def test_a_full_dev_shm_sends_the_frame_inline(monkeypatch: pytest.MonkeyPatch) -> None:
    def full(frame: Any, tag: str) -> Segment:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sharedmem, "write", full)
    big = b"x" * BIG
    frames = protocol.encode([done_task([b"h", big])], Spiller(TAG))
    assert frames[1:] == [big]


def test_segments_are_inlined_for_a_peer_on_another_host() -> None:
    segment = sharedmem.write(b"r" * BIG, TAG)
    frames = protocol.encode([done_task([b"h", segment])], sharedmem.inline)
    assert bytes(frames[1]) == b"r" * BIG
    [msg] = protocol.decode(frames)
    assert bytes(protocol.buffer_of(msg.payloads[0][1])) == b"r" * BIG


def test_a_peer_that_may_not_use_shared_memory_is_refused() -> None:
    frames = protocol.encode([done_task([b"h", sharedmem.write(b"x" * BIG, TAG)])])
    with pytest.raises(ProtocolError, match="may not use"):
        protocol.decode(frames)


def test_shared_memory_counts_against_the_message_size_limit() -> None:
    segment = sharedmem.write(b"x" * BIG, TAG)
    frames = protocol.encode([done_task([b"h", segment])])
    with pytest.raises(ProtocolError, match="beyond the message size limit"):
        protocol.decode(frames, max_bytes=BIG, segment=Segment)


@pytest.mark.parametrize("item", [["celeriac-x", 0], ["a", -1], ["a"], [1, 2], ["a", 1.5]])
def test_malformed_segment_items_are_refused(item: list[Any]) -> None:
    head = {"op": "task-done", "key": "k", "p": [[item]]}
    with pytest.raises(ProtocolError, match="malformed payload list"):
        protocol.decode([msgpack.packb([protocol.VERSION, [head]])], segment=Segment)


def test_mmap_is_what_backs_a_mapped_array() -> None:
    """The check the worker-side task relies on (tasks_for_tests.array_backing)."""
    segment = sharedmem.write(b"\0" * BIG, TAG)
    view = Segment(segment.shm_name, segment.nbytes).buffer
    assert isinstance(view.obj, mmap.mmap)
    assert array_backing(np.frombuffer(view, dtype=np.float64))[0] == "mmap"
