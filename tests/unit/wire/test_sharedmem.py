"""Large frames through /dev/shm between processes on one host."""

from __future__ import annotations

import errno
import gc
import logging
import mmap
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest

from celeriac.wire import protocol, sharedmem
from celeriac.wire.protocol import Message, ProtocolError
from celeriac.wire.sharedmem import SHM_DIR, Segment, SegmentError, Spiller
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


# -- files that are not segments, and segments that shrink -----------------------------------
#
# A name comes from a peer, and /dev/shm is every user's: whatever sits there
# under a segment's name must be refused, for that message only, never followed
# or mapped into a SIGBUS.


def scheduler_accept(name: str, size: int) -> Segment:
    """What the scheduler does with a ``[name, size]`` item (``server._accept_segment``)."""
    segment = Segment(name, size)
    if not segment.exists():
        raise ValueError(f"shared memory segment {name} of {size} bytes does not exist")
    segment.own()
    return segment


def naming(*names: str, size: int = BIG) -> list[Any]:
    """The frames of a batch naming these segments, as a peer sends them."""
    return protocol.encode([done_task([b"h", *(Segment(n, size) for n in names)])])


@pytest.fixture
def shm_name() -> Iterator[str]:
    """A fresh segment name; whatever the test put there is removed after it."""
    name = f"celeriac-{TAG}-{uuid.uuid4().hex}"
    yield name
    path = os.path.join(SHM_DIR, name)
    if os.path.isdir(path) and not os.path.islink(path):
        os.rmdir(path)
    with suppress(FileNotFoundError):
        os.unlink(path)


def plain_file(path: str, size: int = BIG, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.ftruncate(fd, size)
        os.fchmod(fd, mode)  # past the umask
    finally:
        os.close(fd)


def test_a_symlink_named_like_a_segment_is_refused_not_followed(
    shm_name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = tmp_path / "shadow"
    secret.write_bytes(b"s" * BIG)  # the right size, ours: followed, it would pass
    os.symlink(secret, os.path.join(SHM_DIR, shm_name))
    with (
        caplog.at_level(logging.WARNING, "celeriac"),
        pytest.raises(ProtocolError, match="symbolic link"),
    ):
        protocol.decode(naming(shm_name), segment=scheduler_accept)
    assert f"refused shared memory segment {shm_name}: it is a symbolic link" in caplog.text
    with pytest.raises(SegmentError, match="symbolic link"):
        Segment(shm_name, BIG).buffer  # noqa: B018 - a receiver does not follow it either
    assert secret.read_bytes() == b"s" * BIG and os.path.islink(os.path.join(SHM_DIR, shm_name))


def _fifo(path: str) -> None:
    os.mkfifo(path, 0o600)


def _directory(path: str) -> None:
    os.mkdir(path, 0o700)


def _another_users(path: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user takes root")
    plain_file(path)
    os.chown(path, 65534, 65534)


def _writable_by_the_group(path: str) -> None:
    plain_file(path, mode=0o620)


def _smaller(path: str) -> None:
    plain_file(path, BIG - 1)


def _larger(path: str) -> None:
    plain_file(path, BIG + 1)


NOT_SEGMENTS: dict[str, tuple[Callable[[str], None], str]] = {
    "fifo": (_fifo, "not a regular file"),  # opened blocking, it would wait for a writer
    "directory": (_directory, "not a regular file"),
    "another-user": (_another_users, "belongs to uid 65534"),
    "group-writable": (_writable_by_the_group, "others may write to it"),
    "smaller": (_smaller, f"holds {BIG - 1} bytes, not the {BIG} announced"),
    "larger": (_larger, f"holds {BIG + 1} bytes, not the {BIG} announced"),
}


@pytest.mark.timeout(10)
@pytest.mark.parametrize(("make", "reason"), NOT_SEGMENTS.values(), ids=NOT_SEGMENTS.keys())
def test_a_file_that_is_not_a_segment_is_refused_for_that_batch(
    shm_name: str, make: Callable[[str], None], reason: str
) -> None:
    make(os.path.join(SHM_DIR, shm_name))
    with pytest.raises(ProtocolError, match=reason):
        protocol.decode(naming(shm_name), segment=scheduler_accept)
    with pytest.raises(SegmentError, match=reason):
        Segment(shm_name, BIG).buffer  # noqa: B018
    assert os.path.lexists(os.path.join(SHM_DIR, shm_name))  # refused, not deleted


def test_a_file_hard_linked_under_a_segment_name_is_refused(shm_name: str) -> None:
    original = sharedmem.write(b"x" * BIG, TAG)  # any file of ours on /dev/shm
    os.link(original.path, os.path.join(SHM_DIR, shm_name))
    with pytest.raises(ProtocolError, match="2 links"):
        protocol.decode(naming(shm_name), segment=scheduler_accept)
    with pytest.raises(ProtocolError, match="2 links"):
        protocol.decode(naming(original.shm_name), segment=scheduler_accept)


def test_a_segment_named_twice_has_one_owner(shm_name: str) -> None:
    plain_file(os.path.join(SHM_DIR, shm_name))
    first = sharedmem.accept(shm_name, BIG)
    with pytest.raises(ProtocolError, match="already held"):  # the second would delete it
        protocol.decode(naming(shm_name), segment=scheduler_accept)
    assert first.exists()
    del first
    gc.collect()
    assert not os.path.exists(os.path.join(SHM_DIR, shm_name))


def test_a_missing_segment_is_absent_not_refused(shm_name: str) -> None:
    assert not Segment(shm_name, BIG).exists()
    with pytest.raises(FileNotFoundError, match=f"{shm_name} of {BIG} bytes does not exist"):
        sharedmem.accept(shm_name, BIG)


def test_a_segment_shrunk_after_it_was_accepted_fails_each_read(shm_name: str) -> None:
    """Shrunk before the first read; after it, see the next test (in a subprocess)."""
    plain_file(os.path.join(SHM_DIR, shm_name))
    [msg] = protocol.decode(naming(shm_name), segment=scheduler_accept)
    held = msg.payloads[0][1]
    os.truncate(held.path, BIG // 2)
    with pytest.raises(OSError, match=f"holds {BIG // 2} bytes"):
        bytes(protocol.buffer_of(held))
    with pytest.raises(OSError, match=f"holds {BIG // 2} bytes"):  # the server skips that send
        protocol.encode([msg], sharedmem.inline)


def test_a_receiver_refuses_a_segment_that_shrank_before_it_was_mapped() -> None:
    source = sharedmem.write(b"x" * BIG, TAG)
    os.truncate(source.path, 4096)
    with pytest.raises(SegmentError, match="holds 4096 bytes"):
        Segment(source.shm_name, source.nbytes).buffer  # noqa: B018


SHRINK_AFTER_READ = """
import os, sys
from celeriac.wire import protocol, sharedmem
from celeriac.wire.sharedmem import Segment
segment = sharedmem.write(b"x" * (1 << 24), "0badcafe")
segment.disown()
held = Segment(segment.shm_name, segment.nbytes)  # as the scheduler accepts it
assert held.exists()
held.own()
first = bytes(protocol.buffer_of(held))  # the journal reads it
os.truncate(held.path, 0)  # its sender shrinks it
for read in (lambda: bytes(protocol.buffer_of(held)), lambda: sharedmem.inline(held)):
    try:
        read()
    except OSError as exc:
        print("failed cleanly:", exc)
print("alive", len(first))
"""


@pytest.mark.timeout(60)
def test_a_segment_shrunk_after_it_was_read_never_kills_the_process() -> None:
    """A mapping would SIGBUS here: the scheduler reads the bytes of what it holds by copy."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SHRINK_AFTER_READ)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr}"
    assert done.stdout.count("failed cleanly:") == 2 and f"alive {1 << 24}" in done.stdout
