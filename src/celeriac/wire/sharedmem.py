"""Large frames through shared memory, between processes on one host.

Over loopback TCP, a 100 MB array is copied four times per hop (into the
kernel and out of it, at both ends of the scheduler) and held in the
scheduler's memory meanwhile.  When a client or worker shares the
scheduler's ``/dev/shm`` (same machine, same user), an out-of-band frame of
at least :data:`MIN_BYTES` is written once into a file there instead, and
the message carries only its name.  The scheduler stores and forwards the
name; a receiver maps the file copy-on-write, so an array arrives without a
copy and is still writable.

Lifetime: the scheduler owns every segment it accepts and deletes the file
when it drops its last reference (the task's result or arguments are
released, forgotten, or expire), after sending that loop turn's replies
(:func:`deletions_deferred`).  A mapping made before that stays valid:
the memory goes when the last mapping does.  A sender owns a segment it
made until the batch naming it is handed to ZeroMQ.  Every name carries the
scheduler's tag (from its address), and a scheduler starting up deletes
what an earlier run on its address left (killed, it could not): journaled
work keeps its bytes in the journal, and futures do not survive a restart.

The scheduler inlines a segment's bytes for a peer that does not share its
``/dev/shm`` (:func:`inline`); the journal stores the bytes, never a name.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import mmap
import os
import re
import stat
import threading
import uuid
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from celeriac.wire.protocol import Frame, buffer_of, nbytes

log = logging.getLogger("celeriac")

#: Below this, a copy through the socket costs less than a file and a mapping.
MIN_BYTES = 1 << 20

SHM_DIR = "/dev/shm"
_TAG = re.compile(r"[0-9a-f]{8}\Z")
_NAME = re.compile(r"celeriac-[0-9a-f]{8}-[0-9a-f]{32}\Z")


@functools.cache
def namespace() -> str | None:
    """Who can open our segments: this boot of this host, this ``/dev/shm``, this user.

    Two processes exchange segments only when their namespaces are equal.
    None where there is no ``/dev/shm`` (then everything travels inline).
    """
    try:
        info = os.stat(SHM_DIR)
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or not os.access(SHM_DIR, os.W_OK):
        return None
    return f"{boot}:{info.st_dev}:{info.st_ino}:{os.getuid()}"


def hello_fields() -> dict[str, str]:
    """What a client's or worker's hello says of its ``/dev/shm``."""
    shm = namespace()
    return {} if shm is None else {"shm": shm}


class Segment:
    """A named file in ``/dev/shm`` holding one frame; behaves as a frame.

    ``buffer`` (what :func:`celeriac.wire.protocol.buffer_of` reads) maps the file
    on first use; ``nbytes`` is its size.  ``shm_name`` is the file's name in
    :data:`SHM_DIR` (``celeriac-TAG-HEX``), ``size`` its announced size; a
    malformed name or a size under one byte is a ``ValueError``.  Making one
    opens nothing, so the class is also :func:`~celeriac.wire.protocol.decode`'s
    factory for a batch's ``[name, size]`` items.  The file goes with the object
    only once it is owned (:meth:`own`).
    """

    __slots__ = ("__weakref__", "_owner", "_view", "nbytes", "shm_name")

    def __init__(self, shm_name: str, size: int) -> None:
        if not _NAME.match(shm_name):
            raise ValueError(f"not a Celeriac shared memory segment: {shm_name!r}")
        if size <= 0:
            raise ValueError(f"shared memory segment of {size} bytes")
        self.shm_name = shm_name  # what protocol.encode looks for
        self.nbytes = size
        self._view: memoryview | None = None
        self._owner: weakref.finalize | None = None

    @property
    def path(self) -> str:
        """The file's path, in :data:`SHM_DIR`."""
        return os.path.join(SHM_DIR, self.shm_name)

    @property
    def buffer(self) -> memoryview:
        """The file's bytes, mapped copy-on-write on first use (writable, private).

        Raises ``FileNotFoundError`` when the file is gone (its owner let go of it).
        """
        if self._view is None:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"shared memory segment {self.shm_name} is gone: its data was released "
                    "by the scheduler (forgotten, expired or cancelled) before it was read"
                ) from None
            try:
                # Copy-on-write: the receiver may modify its array; nobody else sees it.
                self._view = memoryview(mmap.mmap(fd, self.nbytes, access=mmap.ACCESS_COPY))
            finally:
                os.close(fd)
        return self._view

    def exists(self) -> bool:
        """The file is there with the size announced."""
        try:
            return os.stat(self.path).st_size == self.nbytes
        except OSError:
            return False

    def own(self) -> None:
        """Delete the file once this object is gone."""
        if self._owner is None:
            self._owner = weakref.finalize(self, _unlink, self.path)

    def disown(self) -> None:
        """Stop owning the file: it outlives this object (another process owns it now)."""
        if self._owner is not None:
            self._owner.detach()
            self._owner = None

    def __repr__(self) -> str:
        return f"<Segment {self.shm_name} {self.nbytes} bytes>"


def scheduler_tag(address: str) -> str:
    """The tag in the names of the segments a scheduler at ``address`` owns."""
    return hashlib.sha256(address.encode()).hexdigest()[:8]


def remove_leftovers(tag: str) -> int:
    """Delete segments named with ``tag``; how many there were."""
    try:
        names = [n for n in os.listdir(SHM_DIR) if n.startswith(f"celeriac-{tag}-")]
    except OSError:
        return 0
    for name in names:
        _unlink(os.path.join(SHM_DIR, name))
    return len(names)


_later = threading.local()


@contextmanager
def deletions_deferred() -> Iterator[None]:
    """Segments this thread lets go of inside the block are deleted as it ends.

    Deleting a 100 MB file takes 11 ms (the kernel frees 25,600 pages): the
    scheduler lets the arguments of a finished task go while it handles the
    task's outcome, and would otherwise make the client wait that long for
    the result.  It sends first, then deletes.
    """
    doomed: list[str] = []
    _later.doomed = doomed
    try:
        yield
    finally:
        _later.doomed = None
        for path in doomed:
            _unlink(path)


def _unlink(path: str) -> None:
    doomed = getattr(_later, "doomed", None)
    if doomed is not None:
        doomed.append(path)
        return
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # deleted by hand, or /dev/shm remounted: nothing to keep alive for
        log.warning("could not delete shared memory segment %s: %s", path, exc)


def write(frame: Frame, tag: str) -> Segment:
    """A new segment (owned by the caller) holding ``frame``'s bytes, for the
    scheduler whose tag is ``tag``.

    Written with ``write(2)``, not through a mapping: a full ``/dev/shm`` is
    then an ``OSError`` here, not a ``SIGBUS`` later.
    """
    data = memoryview(buffer_of(frame)).cast("B")
    segment = Segment(f"celeriac-{tag}-{uuid.uuid4().hex}", data.nbytes)
    fd = os.open(segment.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    segment.own()  # from now on the file goes with the object, whatever happens
    with os.fdopen(fd, "wb", buffering=0) as f:
        while data:
            data = data[f.write(data) :]
    return segment


class Spiller:
    """``protocol.encode``'s exporter for a peer that shares the scheduler's ``/dev/shm``.

    Large frames become segments; the batch is the scheduler's once sent
    (:meth:`handed_over`).  A frame that cannot be written (``/dev/shm``
    full) travels inline, as it would without shared memory.  ``tag`` is the
    scheduler's (its welcome's ``shm_tag``: 8 lowercase hex digits, else
    ``ValueError``).  One send at a time: the segments made since the last
    :meth:`handed_over` or :meth:`abandoned` are the next send's.
    """

    def __init__(self, tag: str) -> None:
        if not _TAG.match(tag):
            raise ValueError(f"not a shared memory tag: {tag!r}")
        self._tag = tag
        self._made: list[Segment] = []

    def __call__(self, frame: Frame) -> Frame:
        """What ``frame`` travels as: a new segment if it is large (:data:`MIN_BYTES`).

        A smaller frame, a frame already in a segment (it travels by name as it
        is), or one that cannot be written is returned unchanged.
        """
        if type(frame) is Segment or nbytes(frame) < MIN_BYTES:
            return frame
        try:
            segment = write(frame, self._tag)
        except OSError:
            return frame
        self._made.append(segment)
        return segment

    def handed_over(self) -> None:
        """The batch went to ZeroMQ: its segments are the scheduler's, left to it to delete."""
        for segment in self._made:
            segment.disown()
        self._made.clear()

    def abandoned(self) -> None:
        """The send failed: the segments made for it go."""
        self._made.clear()  # dropping the last references deletes the files


def inline(frame: Frame) -> Frame:
    """``protocol.encode``'s exporter for a peer on another host: segments as bytes."""
    return frame.buffer if type(frame) is Segment else frame
