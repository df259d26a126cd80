"""Wire format: one msgpack header frame, then opaque payload frames.

A ZeroMQ multipart message carries a *batch* of logical messages::

    [header, payload frame, payload frame, ...]

``header`` is ``msgpack([VERSION, [msg, msg, ...]])``.  Each ``msg`` is a dict
with an ``"op"`` key and op-specific fields.  A message that carries binary
payloads (a pickled function, arguments, a result) lists them in ``"p"``: one
list of frames per payload, each frame either inline bytes (small ones: a
whole batch then costs one ZeroMQ frame), ``None``, meaning "the next
out-of-band frame" (large buffers, sent without a copy), or ``[name, size]``,
a shared memory segment on this host (see :mod:`celeriac.wire.sharedmem`).
Payload frames are never unpickled by the scheduler; it only stores and
forwards them, so a hostile frame can at worst be rejected there, never
executed.

This module is pure: no sockets, no clock.  Everything here is bounded and
validated, because every byte of it arrives from the network.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

VERSION = 1

#: Default ceiling on one multipart message (all frames together).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Messages in one batch and frames in one payload, before we call it hostile.
MAX_BATCH = 100_000
MAX_FRAMES_PER_PAYLOAD = 4096
#: Largest header frame a peer may send the scheduler.  Decoding costs memory
#: out of proportion to the bytes (an empty array is 1 byte in msgpack and a
#: 56-byte list in Python, an empty map a 64-byte dict), so this bounds what one
#: message can make the scheduler allocate: 73 MiB at worst (a header of empty
#: maps, measured), where a 63 MB header of empty arrays took 4.6 GB and froze it
#: for 16 s.  Senders stay under it: payload frames go out of band past
#: :data:`INLINE_BUDGET`, key lists are split at :data:`MAX_KEYS_PER_MESSAGE`.
MAX_HEADER_BYTES = 1 << 20
#: What a client or worker accepts from its scheduler, which it trusts
#: (authenticated, and it chose to connect): replies may list many keys.
TRUSTED_HEADER_BYTES = 64 << 20
#: Longest list of keys one message carries (``release``, ``status``): ~50 bytes
#: a key, well under :data:`MAX_HEADER_BYTES` with the rest of a batch.
MAX_KEYS_PER_MESSAGE = 5_000

Frame = Any  # bytes, memoryview or zmq.Frame: anything with the buffer protocol
Payload = Sequence[Frame]
#: What a large frame travels as (``encode``): itself, or a shared memory segment.
Exporter = Callable[[Frame], Frame]
#: Makes the frame a ``[name, size]`` item stands for (``decode``).
SegmentFactory = Callable[[str, int], Frame]


class ProtocolError(ValueError):
    """A message that does not follow the wire format; it is dropped."""


@dataclass(slots=True)
class Message:
    """One logical message: its fields and its payloads (lists of frames).

    ``op`` names its schema in :data:`SCHEMAS`; ``fields`` are the header
    fields other than ``op`` and ``p``; ``payloads`` are in the order the op
    defines (for ``submit``: the function, then the arguments).
    """

    op: str
    fields: dict[str, Any] = field(default_factory=dict)
    payloads: list[Payload] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The field ``name``, or ``default`` when the message lacks it (optional fields)."""
        return self.fields.get(name, default)


# Field types.  msgpack yields exact builtin types, so checks compare
# ``type(value)`` exactly: ``True`` is never accepted as an integer.
_STR = (str,)
_INT = (int,)
_NUM = (int, float)
_LIST = (list,)
_DICT = (dict,)
_BOOL = (bool,)
_STRS = "list of strings"  # a list whose items are all str

# Each op: required fields, optional fields, and how many payloads it carries
# (``None``: any number).
SCHEMAS: dict[str, tuple[dict[str, Any], dict[str, Any], int | None]] = {
    # client -> scheduler
    "hello-client": ({"version": _INT}, {"shm": _STR}, 0),
    "submit": (
        {"key": _STR, "deps": _STRS, "priority": _INT, "retries": _INT, "queue": _STR},
        {
            "name": _STR,
            "eta": _NUM,
            "expires": _NUM,
            "retry_on_error": _BOOL,
            "retry_backoff": _NUM,  # the first back-off delay, s (0: none)
            "backoff_max": _NUM,
            "retry_jitter": _BOOL,
            "result_ttl": _NUM,
            "ignore_result": _BOOL,
            "rate_limit": _STR,
            "time_limit": _NUM,
            "soft_time_limit": _NUM,
            "detached": _BOOL,  # no future holds it: keep it until done (and its TTL)
            "ack": _BOOL,  # answer "accepted" once it is recorded
            "held": _BOOL,  # detached, but push the outcome to the submitter while it holds it
        },
        2,
    ),
    "release": ({"keys": _STRS}, {}, 0),
    "revoke": ({"key": _STR}, {"terminate": _BOOL}, 0),
    "forget": ({"key": _STR}, {}, 0),
    "status": ({"rid": _INT, "keys": _STRS}, {}, 0),
    "fire-and-forget": ({"key": _STR}, {}, 0),
    "want": ({"key": _STR}, {}, 0),
    "fetch": ({"key": _STR}, {"via_scheduler": _BOOL}, 0),
    "cancel": ({"key": _STR}, {}, 0),
    "info": ({"rid": _INT}, {}, 0),
    "who-has": ({"rid": _INT, "keys": _STRS}, {}, 0),
    # data the client put on the worker serving at ``at`` (``put-data``): a finished task
    "scattered": ({"key": _STR, "at": _STR, "size": _INT}, {}, 0),
    "periodic-set": (
        {
            "name": _STR,
            "schedule": _DICT,
            "options": _DICT,
            "misfire": _STR,
            "grace": _NUM,
            "allow_overlap": _BOOL,
        },
        {"ack": _BOOL},
        2,
    ),
    "periodic": ({"rid": _INT, "action": _STR}, {"name": _STR}, 0),
    "goodbye": ({}, {}, 0),
    # supervisor (connected as a client) -> scheduler
    "worker-died": ({"worker": _STR, "reason": _STR}, {"key": _STR}, 0),
    "workers-alive": ({"workers": _STRS}, {}, 0),
    # worker -> scheduler
    "hello-worker": (
        {"version": _INT, "slots": _INT, "queues": _STRS, "name": _STR, "pid": _INT},
        {"memory": _INT, "shm": _STR, "peer": _STR},  # peer: where other processes fetch results
        0,
    ),
    # managed, spilled: bytes of kept results in memory and on disk; paused: near its limit
    "heartbeat": (
        {},
        {"memory": _INT, "running": _INT, "managed": _INT, "spilled": _INT, "paused": _BOOL},
        0,
    ),
    "started": ({"key": _STR}, {}, 0),
    # kept: the result (of that many bytes) stays on the worker; its payload is empty
    "task-done": ({"key": _STR}, {"duration": _NUM, "kept": _INT}, 1),
    "task-failed": (
        {"key": _STR, "kind": _STR, "text": _STR},
        # missing: dependencies it could not fetch from the workers holding them
        {"duration": _NUM, "countdown": _NUM, "missing": _STRS},
        1,
    ),
    # the answer to "upload": a kept result's frames (none, and "missing", if it is gone)
    "uploaded": ({"key": _STR}, {"missing": _BOOL}, None),
    "worker-leaving": ({"keys": _STRS}, {}, 0),
    "handed-back": ({"keys": _STRS}, {}, 0),
    # scheduler -> client
    "welcome": (
        {"version": _INT},
        {
            "worker_timeout": _NUM,
            "heartbeat_interval": _NUM,
            "max_message_bytes": _INT,
            "shm": _STR,  # the scheduler's sharedmem.namespace(): peers that match may use it
            "shm_tag": _STR,  # to put in the names of segments sent to this scheduler
        },
        0,
    ),
    # not inline: fetch it (from the worker at ``at``, which holds ``size`` bytes, if given)
    "result": ({"key": _STR, "inline": _BOOL}, {"at": _STR, "size": _INT}, None),
    "erred": ({"key": _STR, "kind": _STR, "text": _STR}, {}, None),
    "cancelled": ({"key": _STR}, {"reason": _STR}, 0),
    "accepted": ({"keys": _STRS}, {}, 0),
    # not recorded, for ``reason`` ("journal": it cannot be written); ``text`` says why
    "refused": ({"keys": _STRS, "reason": _STR, "text": _STR}, {}, 0),
    "status-reply": ({"rid": _INT, "states": _DICT}, {}, 0),
    "info-reply": ({"rid": _INT, "info": _DICT}, {}, 0),
    "who-has-reply": ({"rid": _INT, "where": _DICT}, {}, 0),
    "periodic-reply": ({"rid": _INT}, {"jobs": _LIST, "error": _STR}, 0),
    "error": ({"text": _STR}, {"key": _STR, "about": _STR}, 0),
    # scheduler -> worker
    "run": (
        {"key": _STR, "deps": _STRS},
        {
            "name": _STR,
            "attempt": _INT,
            "time_limit": _NUM,
            "soft_time_limit": _NUM,
            "keep": _INT,  # keep a result larger than this many bytes here (send its size)
            "where": _STRS,  # per dependency: "" (its payload is here) or the worker holding it
        },
        None,
    ),
    "drop": ({"key": _STR}, {"terminate": _BOOL}, 0),
    "free": ({"keys": _STRS}, {}, 0),  # kept results nobody needs any more
    "upload": ({"key": _STR}, {}, 0),  # send a kept result's frames to the scheduler
    "steal": ({"keys": _STRS}, {}, 0),
    "heartbeat-ack": ({}, {}, 0),
    "reregister": ({}, {}, 0),
    "shutdown": ({}, {}, 0),
    # peer -> a worker's data server, and its answer (one payload per key found)
    "get-data": ({"rid": _INT, "keys": _STRS}, {}, 0),
    "data": ({"rid": _INT, "keys": _STRS}, {"missing": _STRS}, None),
    # a client scattering data -> a worker's data server (one payload per key), and its answer
    "put-data": ({"rid": _INT, "keys": _STRS}, {}, None),
    "put-done": ({"rid": _INT}, {}, 0),
}


def _compile(
    required: dict[str, Any], optional: dict[str, Any], npayloads: int | None
) -> tuple[dict[str, tuple[type, ...]], dict[str, Any], frozenset[str], int | None]:
    """What :func:`validate` checks one op with: per field the types a value
    passes with on sight (a float still needs its finiteness checked, a list
    its items), every field's kind, the required names, the payload count."""
    kinds = {**required, **optional}
    seen = {
        name: () if kind is _STRS else tuple(t for t in kind if t is not float)
        for name, kind in kinds.items()
    }
    return seen, kinds, frozenset(required), npayloads


_COMPILED = {op: _compile(*schema) for op, schema in SCHEMAS.items()}

#: Payload frames smaller than this travel inside the header (one frame for a
#: whole batch); larger ones get a frame of their own, sent without a copy.
INLINE_FRAME_BYTES = 64 * 1024
#: Bytes of payload one batch carries inline at most; later frames go out of
#: band, so a header stays under :data:`MAX_HEADER_BYTES` whatever the batch.
INLINE_BUDGET = 256 * 1024


def encode(messages: Sequence[Message], export: Exporter | None = None) -> list[Frame]:
    """Frames for a batch of messages, ready for ``send_multipart``.

    ``export`` sees each large frame first and may return a shared memory
    segment to send instead (or turn a segment back into bytes).
    """
    headers: list[dict[str, Any]] = []
    frames: list[Frame] = [b""]
    room = [INLINE_BUDGET]  # inline bytes left in this batch
    for msg in messages:
        head = {"op": msg.op, **msg.fields}
        if msg.payloads:
            head["p"] = _layout(msg.payloads, frames, export, room)
        headers.append(head)
    frames[0] = _pack([VERSION, headers])
    return frames


#: This thread's Packer (one is not thread safe).
_packers = threading.local()
#: A Packer keeps the buffer of its largest output, so one that packed more is dropped.
_PACKER_KEEP_BYTES = 256 * 1024


def _pack(obj: Any) -> bytes:
    """``msgpack.packb``, without the cost of a new Packer and buffer each time
    (half of encoding a one-message batch)."""
    packer = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    data: bytes = packer.pack(obj)
    if len(data) > _PACKER_KEEP_BYTES:
        _packers.packer = None
    return data


def _layout(
    payloads: list[Payload], frames: list[Frame], export: Exporter | None, room: list[int]
) -> list[Any]:
    """The ``"p"`` of a message: its payloads as header items.  ``room[0]`` is
    what the batch may still carry inline; what this message inlines is taken off."""
    # Nearly every payload is a list of small bytes, already its own layout:
    # msgpack reads it as it is, no per-frame work or copy needed.
    size = 0
    for payload in payloads:
        if type(payload) is not list:
            return [_place(payload, frames, export, room) for payload in payloads]
        for frame in payload:
            if type(frame) is not bytes or len(frame) >= INLINE_FRAME_BYTES:
                return [_place(payload, frames, export, room) for payload in payloads]
            size += len(frame)
    if size > room[0]:
        return [_place(payload, frames, export, room) for payload in payloads]
    room[0] -= size
    return payloads


def _place(
    payload: Payload, frames: list[Frame], export: Exporter | None, room: list[int]
) -> list[Any]:
    """Inline small frames while the batch has room; move the rest out of band
    (``None`` marks their place) or name their shared memory segment."""
    items: list[Any] = []
    for frame in payload:
        size = nbytes(frame)
        if size < INLINE_FRAME_BYTES and size <= room[0]:
            room[0] -= size
            items.append(frame if type(frame) is bytes else bytes(buffer_of(frame)))
        elif size < INLINE_FRAME_BYTES:
            items.append(None)  # out of band: the batch's inline budget is spent
            frames.append(frame)
        else:
            if export is not None:
                frame = export(frame)
            shm_name = getattr(frame, "shm_name", None)
            if shm_name is not None:
                items.append([shm_name, nbytes(frame)])
            else:
                items.append(None)
                frames.append(frame)
    return items


def decode(
    frames: Sequence[Frame],
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    segment: SegmentFactory | None = None,
    max_header_bytes: int = MAX_HEADER_BYTES,
) -> list[Message]:
    """Parse and validate a batch; raise :class:`ProtocolError` on anything off.

    ``frames`` are the multipart message's frames (header first).  ``max_bytes``
    bounds the whole message: its frames plus the sizes its shared memory items
    announce.  ``segment`` makes the frame for a shared memory item from its
    name and size (a ``ValueError`` or ``OSError`` from it refuses the batch);
    without it, such an item is refused.  ``max_header_bytes`` bounds the header
    frame before it is unpacked (:data:`MAX_HEADER_BYTES`: what the scheduler
    takes from peers; clients and workers take :data:`TRUSTED_HEADER_BYTES`).
    """
    if not frames:
        raise ProtocolError("empty message")
    total = 0
    for frame in frames:  # not sum(): a generator costs more than the usual single frame
        total += nbytes(frame)
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {max_bytes}")
    header = frames[0]
    if nbytes(header) > max_header_bytes:
        raise ProtocolError(
            f"header frame of {nbytes(header)} bytes exceeds the limit of {max_header_bytes}"
        )
    try:
        parsed = msgpack.unpackb(buffer_of(header), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"header is not valid msgpack: {exc}") from None
    version, heads = _split_header(parsed)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (expected {VERSION})")
    return _assemble(heads, frames[1:], max_bytes - total, segment)


def _split_header(parsed: Any) -> tuple[Any, list[Any]]:
    if not (type(parsed) is list and len(parsed) == 2 and type(parsed[1]) is list):
        raise ProtocolError("header must be [version, [messages]]")
    if len(parsed[1]) > MAX_BATCH:
        raise ProtocolError(f"batch of {len(parsed[1])} messages exceeds {MAX_BATCH}")
    return parsed[0], parsed[1]


def _assemble(
    heads: list[Any],
    out_of_band: Sequence[Frame],
    room: int,
    segment: SegmentFactory | None,
) -> list[Message]:
    messages = []
    cursor = 0
    for head in heads:
        msg, refers = validate(head)
        if refers:
            cursor, room = _resolve(msg, out_of_band, cursor, room, segment)
        messages.append(msg)
    if cursor != len(out_of_band):
        raise ProtocolError(f"{len(out_of_band) - cursor} frames were not announced")
    return messages


def _resolve(
    msg: Message,
    out_of_band: Sequence[Frame],
    cursor: int,
    room: int,
    segment: SegmentFactory | None,
) -> tuple[int, int]:
    """Put the frames that ``None`` and ``[name, size]`` items stand for in their
    place; return the next out-of-band frame and the room left."""
    payloads: list[Payload] = []
    for items in msg.payloads:
        payload = []
        for item in items:
            if item is None:
                if cursor >= len(out_of_band):
                    raise ProtocolError(f"{msg.op!r} announces more frames than were sent")
                item = out_of_band[cursor]
                cursor += 1
            elif type(item) is list:
                room -= item[1]
                if room < 0:
                    raise ProtocolError("shared memory beyond the message size limit")
                item = _segment(msg.op, item, segment)
            payload.append(item)
        payloads.append(payload)
    msg.payloads = payloads
    return cursor, room


def _segment(op: str, item: list[Any], segment: SegmentFactory | None) -> Frame:
    if segment is None:
        raise ProtocolError(f"{op!r} names shared memory, which this peer may not use")
    try:
        return segment(item[0], item[1])
    except (ValueError, OSError) as exc:
        raise ProtocolError(f"{op!r}: {exc}") from None


def validate(head: Any) -> tuple[Message, bool]:
    """Check one message map against its op's schema (payload layout included).

    The map, fresh from msgpack and ours alone, becomes the message's fields
    without a copy, and its payloads are the layout's lists.  Also says whether
    an item of them stands for another frame, for :func:`_resolve`.
    """
    if type(head) is not dict:
        raise ProtocolError("each message must be a map")
    op = head.pop("op", None)
    schema = _COMPILED.get(op) if type(op) is str else None
    if schema is None:
        raise ProtocolError(f"unknown op {op!r}")
    seen, kinds, required, npayloads = schema
    carries = "p" in head
    layout = head.pop("p") if carries else []
    for name, value in head.items():
        if type(value) not in seen.get(name, ()):
            _check_field(op, name, value, kinds)
    if not head.keys() >= required:
        missing = next(name for name in SCHEMAS[op][0] if name not in head)
        raise ProtocolError(f"{op!r} is missing field {missing!r}")
    refers = False
    if carries or npayloads:  # most messages carry no payload: skip the walk
        refers = _check_payload_layout(op, layout, npayloads)
    return Message(op, head, layout), refers


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*([smh])\s*$")
_PER = {"s": 1.0, "m": 60.0, "h": 3600.0}


def parse_rate(text: str) -> tuple[float, float]:
    """``"100/m"`` -> ``(100.0, 60.0)``: that many tasks per that many seconds."""
    match = _RATE.match(text)
    if match is None or float(match[1]) <= 0:
        raise ValueError(f"rate limit {text!r} must look like '10/s', '100/m' or '1000/h'")
    return float(match[1]), _PER[match[2]]


def check_task_options(options: dict[str, Any]) -> None:
    """Validate the per-run submit fields a periodic job carries.

    ``options`` may hold ``submit``'s optional fields and ``priority``,
    ``retries`` and ``queue``, each of its type; never ``key``, ``deps`` or the
    per-submit flags (``detached``, ``ack``, ``held``).  Raises
    :class:`ProtocolError` otherwise.
    """
    _, optional, _ = SCHEMAS["submit"]
    allowed = {"priority": _INT, "retries": _INT, "queue": _STR, **optional}
    for name, value in options.items():
        if name in ("key", "deps", "detached", "ack", "held") or name not in allowed:
            raise ProtocolError(f"periodic job option {name!r} is not allowed")
        _check_type("periodic-set", name, value, allowed[name])


def _check_field(op: str, name: str, value: Any, kinds: dict[str, Any]) -> None:
    kind = kinds.get(name)
    if kind is None:
        raise ProtocolError(f"{op!r} has unexpected field {name!r}")
    _check_type(op, name, value, kind)


def _check_type(op: str, name: str, value: Any, kind: Any) -> None:
    if kind is _STRS:
        if type(value) is list:
            for item in value:  # a plain loop: all() costs more, and most lists are short
                if type(item) is not str:
                    break
            else:
                return
        raise ProtocolError(f"{op!r} field {name!r} must be a list of strings")
    if type(value) not in kind:
        names = " or ".join(k.__name__ for k in kind)
        raise ProtocolError(f"{op!r} field {name!r} must be {names}")
    if type(value) is float and not math.isfinite(value):
        # NaN never compares: one in a timer heap would stall every timer.
        raise ProtocolError(f"{op!r} field {name!r} must be a finite number")


def _check_payload_layout(op: str, layout: Any, expected: int | None) -> bool:
    """Raise unless ``layout`` is well formed; say whether any item stands for
    another frame (``None`` or a shared memory segment) rather than inline bytes."""
    # Plain loops: this runs for every message, and generator expressions
    # inside all() cost several times more here.
    if type(layout) is not list:
        raise ProtocolError(f"{op!r} has a malformed payload list")
    refers = False
    for items in layout:
        if type(items) is not list or len(items) > MAX_FRAMES_PER_PAYLOAD:
            raise ProtocolError(f"{op!r} has a malformed payload list")
        for item in items:
            if type(item) is not bytes:
                if item is not None and not _is_segment_item(item):
                    raise ProtocolError(f"{op!r} has a malformed payload list")
                refers = True
    if expected is not None and len(layout) != expected:
        raise ProtocolError(f"{op!r} must carry {expected} payloads, not {len(layout)}")
    return refers


def _is_segment_item(item: Any) -> bool:
    return (
        type(item) is list
        and len(item) == 2
        and type(item[0]) is str
        and type(item[1]) is int
        and item[1] > 0
    )


def buffer_of(frame: Frame) -> Any:
    """The memory of a frame, without a copy."""
    # zmq.Frame exposes its memory as .buffer; bytes and memoryview are buffers already.
    return getattr(frame, "buffer", frame)


def nbytes(frame: Frame) -> int:
    """Size of a frame, whatever buffer type carries it."""
    if type(frame) is bytes:
        return len(frame)
    # Ask the type first: a zmq.Frame has no ``nbytes``, and looking for one on
    # the instance goes through its __getattr__, which costs about 2 µs.
    size = getattr(frame, "nbytes", None) if hasattr(type(frame), "nbytes") else None
    return len(frame) if size is None else int(size)
