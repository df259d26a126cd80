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

Trust: ``/dev/shm`` is writable by every user, and a name comes from a peer.
A name resolves only inside a descriptor of :data:`SHM_DIR` opened once, with
``O_NOFOLLOW`` (a symbolic link there is refused, never followed) and
``O_NONBLOCK`` (a FIFO cannot stall us); the open file must then be a regular
file of this user, writable by nobody else, with one link (not another file
hard-linked under a segment's name) and exactly the announced size.
Anything else is a :class:`SegmentError` for the one message that named it.

Shrinking: a mapped file that another process truncates kills whoever touches
the lost pages with SIGBUS, and ``/dev/shm`` files cannot be sealed against
it (``F_ADD_SEALS`` works only on a memfd: a tmpfs file opened by name is born
with ``F_SEAL_SEAL``, so sealing fails with ``EPERM``; measured on 6.18).  So
who *owns* a segment (the scheduler, which took it from a peer) reads it by
copy (:meth:`Segment.read`, ``pread(2)``), never by mapping: a file that
shrank is then a short read and an error, never a signal.  A *receiver*
(client or worker, sent the name by the scheduler, which checked the file)
maps it, because a copy would cost more than the whole transfer: for 100 MB,
``pread`` into new memory takes 62 ms, a mapping 0.01 ms, and touching every
page of it 13 ms, while the transfer takes 50 ms at 2,000 MB/s.  Only a
process of the same user can shrink a checked file, and such a process could
as well signal the receiver.
"""

from __future__ import annotations

import errno
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

#: How a segment is opened to be read: never through a symbolic link, never
#: blocking (a FIFO named like a segment would wait for a writer forever),
#: never as our controlling terminal, never inherited across exec.
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
#: How a new segment is made: a fresh file (``O_EXCL`` also refuses a symbolic link).
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: One pread(2) reads at most 2 GiB - 4 KiB on Linux; larger segments take several.
_READ_CHUNK = 1 << 30


class SegmentError(OSError):
    """A file named like a segment that cannot be used as one (a symbolic link, a
    FIFO, another user's, hard-linked, of another size, or shrunk while read).

    It fails the one message that named the segment: ``protocol.decode`` turns
    it into a ``ProtocolError`` for that batch, and the scheduler's sends skip
    the messages that carried it.
    """


@functools.cache
def _directory() -> int:
    """A descriptor of :data:`SHM_DIR`, opened once: every name is resolved inside
    it, so nothing can swap the directory a path would have gone through."""
    return os.open(SHM_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)


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
    on first use, or copies it out if this process owns it (see the module
    docstring); ``nbytes`` is its size.  ``shm_name`` is the file's name in
    :data:`SHM_DIR` (``celeriac-TAG-HEX``), ``size`` its announced size; a
    malformed name or a size under one byte is a ``ValueError``.  Making one
    opens nothing, so the class is also :func:`~celeriac.wire.protocol.decode`'s
    factory for a batch's ``[name, size]`` items (:func:`accept` is the
    scheduler's, which checks the file).  The file goes with the object only
    once it is owned (:meth:`own`).
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
        """The file's path, in :data:`SHM_DIR` (for messages: files are opened by name)."""
        return os.path.join(SHM_DIR, self.shm_name)

    @property
    def buffer(self) -> memoryview | bytes:
        """The file's bytes: mapped copy-on-write on first use (writable, private),
        or, once this process owns the segment, a fresh copy each time (:meth:`read`).

        Raises ``FileNotFoundError`` when the file is gone (its owner let go of
        it) and :class:`SegmentError` when it is not a segment we may read.
        """
        if self._view is not None:
            return self._view
        if self._owner is not None:
            # The bytes came from a peer that can still shrink the file: a copy
            # fails cleanly where a mapping would SIGBUS.  The journal, the one
            # reader here, copied the mapping into bytes anyway (63 ms for
            # 100 MB, as the pread takes); uncached, so we never hold both.
            return self.read()
        try:
            fd = self._open()
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

    def read(self) -> bytes:
        """The file's bytes, copied out with ``pread(2)``; the file is never mapped.

        Raises ``FileNotFoundError`` when the file is gone, :class:`SegmentError`
        when it is not a segment we may read or shrank while it was read.
        """
        try:
            fd = self._open()
        except FileNotFoundError:
            raise FileNotFoundError(f"shared memory segment {self.shm_name} is gone") from None
        try:
            chunks = []
            done = 0
            while done < self.nbytes:
                chunk = os.pread(fd, min(self.nbytes - done, _READ_CHUNK), done)
                if not chunk:
                    raise self._refused(
                        f"it shrank to {done} bytes while it was read ({self.nbytes} announced)"
                    )
                chunks.append(chunk)
                done += len(chunk)
        finally:
            os.close(fd)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def check(self) -> None:
        """Raise unless the file is there and is a segment this process may read:
        ``FileNotFoundError`` if there is no file of that name, else
        :class:`SegmentError` naming what is wrong."""
        try:
            fd = self._open()
        except FileNotFoundError:
            raise FileNotFoundError(
                f"shared memory segment {self.shm_name} of {self.nbytes} bytes does not exist"
            ) from None
        os.close(fd)

    def exists(self) -> bool:
        """The file is there with the size announced, and may be read as a segment.

        False when there is no file of that name; a file that is there but is
        not a segment (see :meth:`check`) is refused with :class:`SegmentError`,
        not taken for absent: it is an attack or a bug, and the error says which.
        """
        try:
            self.check()
        except FileNotFoundError:
            return False
        return True

    def _open(self) -> int:
        """A read-only descriptor of the file, once it passed the checks."""
        try:
            fd = os.open(self.shm_name, _READ_FLAGS, dir_fd=_directory())
        except OSError as exc:
            if exc.errno == errno.ELOOP:  # what O_NOFOLLOW answers for a symbolic link
                raise self._refused("it is a symbolic link") from None
            if exc.errno == errno.ENXIO:  # a socket, or a device without its driver
                raise self._refused("it is not a regular file") from None
            raise
        try:
            problem = self._problem(os.fstat(fd))
        except BaseException:
            os.close(fd)
            raise
        if problem is not None:
            os.close(fd)
            raise self._refused(problem)
        return fd

    def _problem(self, info: os.stat_result) -> str | None:
        """Why the open file must not be read as this segment, if it must not."""
        if not stat.S_ISREG(info.st_mode):
            return "it is not a regular file"
        if info.st_uid != os.geteuid():
            return f"it belongs to uid {info.st_uid}, not to this process's {os.geteuid()}"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):  # they could shrink it
            return f"others may write to it (mode {stat.S_IMODE(info.st_mode):o})"
        if info.st_nlink != 1:
            return f"it has {info.st_nlink} links: another file linked under a segment's name?"
        if info.st_size != self.nbytes:
            return f"it holds {info.st_size} bytes, not the {self.nbytes} announced"
        return None

    def _refused(self, why: str) -> SegmentError:
        log.warning("refused shared memory segment %s: %s", self.shm_name, why)
        return SegmentError(f"shared memory segment {self.shm_name} refused: {why}")

    def own(self) -> None:
        """Delete the file once this object is gone.

        Raises ``ValueError`` if another live object of this process owns it
        already: a name sent twice, and the first owner to go would delete the
        file under the other.
        """
        if self._owner is not None:
            return
        with _owners_lock:
            holder = _owners.get(self.shm_name)
            if holder is not None and holder is not self:
                raise ValueError(f"shared memory segment {self.shm_name} is already held here")
            _owners[self.shm_name] = self
        self._owner = weakref.finalize(self, _unlink, self.shm_name)

    def disown(self) -> None:
        """Stop owning the file: it outlives this object (another process owns it now)."""
        if self._owner is not None:
            self._owner.detach()
            self._owner = None
            with _owners_lock:
                if _owners.get(self.shm_name) is self:
                    del _owners[self.shm_name]

    def __repr__(self) -> str:
        return f"<Segment {self.shm_name} {self.nbytes} bytes>"


#: The segments this process owns, by name: each has one owner.
_owners: weakref.WeakValueDictionary[str, Segment] = weakref.WeakValueDictionary()
_owners_lock = threading.Lock()


def accept(shm_name: str, size: int) -> Segment:
    """The segment a peer named, checked (:meth:`Segment.check`) and owned from now on.

    ``shm_name`` and ``size`` are the message's ``[name, size]`` item.  Raises
    ``ValueError`` for a malformed item or a name already owned here,
    ``FileNotFoundError`` when there is no such file and :class:`SegmentError`
    for a file that is not a segment: each fails that message alone.
    """
    segment = Segment(shm_name, size)
    segment.check()
    segment.own()
    return segment


def scheduler_tag(address: str) -> str:
    """The tag in the names of the segments a scheduler at ``address`` owns."""
    return hashlib.sha256(address.encode()).hexdigest()[:8]


def remove_leftovers(tag: str) -> int:
    """Delete segments named with ``tag``; how many there were."""
    try:
        names = [n for n in os.listdir(_directory()) if n.startswith(f"celeriac-{tag}-")]
    except OSError:
        return 0
    for name in names:
        _unlink(name)
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
        for name in doomed:
            _unlink(name)


def _unlink(name: str) -> None:
    """Delete the segment file ``name`` (in :data:`SHM_DIR`), now or as the
    :func:`deletions_deferred` block ends."""
    doomed = getattr(_later, "doomed", None)
    if doomed is not None:
        doomed.append(name)
        return
    try:
        os.unlink(name, dir_fd=_directory())
    except FileNotFoundError:
        pass
    except OSError as exc:  # deleted by hand, or /dev/shm remounted: nothing to keep alive for
        log.warning("could not delete shared memory segment %s: %s", name, exc)


def write(frame: Frame, tag: str) -> Segment:
    """A new segment (owned by the caller) holding ``frame``'s bytes, for the
    scheduler whose tag is ``tag``.

    Written with ``write(2)``, not through a mapping: a full ``/dev/shm`` is
    then an ``OSError`` here, not a ``SIGBUS`` later.
    """
    data = memoryview(buffer_of(frame)).cast("B")
    segment = Segment(f"celeriac-{tag}-{uuid.uuid4().hex}", data.nbytes)
    fd = os.open(segment.shm_name, _CREATE_FLAGS, 0o600, dir_fd=_directory())
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
    """``protocol.encode``'s exporter for a peer on another host: segments as bytes.

    Copied out (:meth:`Segment.read`), never mapped: a segment that shrank or
    was swapped since it was accepted raises an ``OSError`` for that send.
    """
    return frame.read() if type(frame) is Segment else frame
