"""Wire format: one msgpack header frame, then opaque payload frames.

A ZeroMQ multipart message carries a *batch* of logical messages::

    [header, payload frame, payload frame, ...]

``header`` is ``msgpack([VERSION, [msg, msg, ...]])``.  Each ``msg`` is a dict
with an ``"op"`` key and op-specific fields.  A message that carries binary
payloads (a pickled function, arguments, a result) lists their frame counts in
``"nf"``: ``"nf": [2, 1]`` means the next two frames form its first payload and
the frame after that its second.  Payload frames are never unpickled by the
scheduler; it only stores and forwards them, so a hostile frame can at worst
be rejected there, never executed.

This module is pure: no sockets, no clock.  Everything here is bounded and
validated, because every byte of it arrives from the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

VERSION = 1

#: Default ceiling on one multipart message (all frames together).
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30
#: Messages in one batch and frames in one payload, before we call it hostile.
MAX_BATCH = 100_000
MAX_FRAMES_PER_PAYLOAD = 4096
MAX_HEADER_BYTES = 64 << 20

Frame = Any  # bytes, memoryview or zmq.Frame: anything with the buffer protocol
Payload = Sequence[Frame]


class ProtocolError(ValueError):
    """A message that does not follow the wire format; it is dropped."""


@dataclass(slots=True)
class Message:
    """One logical message: its fields and its payloads (lists of frames)."""

    op: str
    fields: dict[str, Any] = field(default_factory=dict)
    payloads: list[Payload] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def get(self, name: str, default: Any = None) -> Any:
        return self.fields.get(name, default)


# Each op names the fields it must carry and their types, and how many
# payloads it carries.  ``None`` as the payload count means "any number".
_STR = str
_INT = int
_NUM = (int, float)
_LIST = list
_DICT = dict
_BOOL = bool
_OPT_STR = (str, type(None))

SCHEMAS: dict[str, tuple[dict[str, Any], int | None]] = {
    # client -> scheduler
    "hello-client": ({"version": _INT}, 0),
    "submit": (
        {"key": _STR, "deps": _LIST, "priority": _INT, "retries": _INT, "queue": _STR},
        2,
    ),
    "release": ({"key": _STR}, 0),
    "fire-and-forget": ({"key": _STR}, 0),
    "want": ({"key": _STR}, 0),
    "fetch": ({"key": _STR}, 0),
    "cancel": ({"key": _STR}, 0),
    "info": ({"rid": _INT}, 0),
    "goodbye": ({}, 0),
    # worker -> scheduler
    "hello-worker": (
        {"version": _INT, "slots": _INT, "queues": _LIST, "name": _STR, "pid": _INT},
        0,
    ),
    "heartbeat": ({}, 0),
    "started": ({"key": _STR}, 0),
    "task-done": ({"key": _STR}, 1),
    "task-failed": ({"key": _STR, "kind": _STR, "text": _STR}, 1),
    "worker-leaving": ({"keys": _LIST}, 0),
    # scheduler -> client
    "welcome": ({"version": _INT}, 0),
    "result": ({"key": _STR, "inline": _BOOL}, None),
    "erred": ({"key": _STR, "kind": _STR, "text": _STR}, None),
    "cancelled": ({"key": _STR}, 0),
    "info-reply": ({"rid": _INT, "info": _DICT}, 0),
    "error": ({"text": _STR}, 0),
    # scheduler -> worker
    "run": ({"key": _STR, "deps": _LIST}, None),
    "drop": ({"key": _STR}, 0),
    "heartbeat-ack": ({}, 0),
    "reregister": ({}, 0),
    "shutdown": ({}, 0),
}

# Fields that ops may carry without being required.
OPTIONAL: dict[str, dict[str, Any]] = {
    "submit": {"name": _STR},
    "run": {"name": _STR},
    "hello-worker": {"memory": _INT},
    "heartbeat": {"memory": _INT, "running": _INT},
    "error": {"key": _STR, "about": _STR},
    "welcome": {"worker_timeout": _NUM, "heartbeat_interval": _NUM, "max_message_bytes": _INT},
}


def encode(messages: Sequence[Message]) -> list[Frame]:
    """Frames for a batch of messages, ready for ``send_multipart``."""
    headers: list[dict[str, Any]] = []
    frames: list[Frame] = [b""]
    for msg in messages:
        head = {"op": msg.op, **msg.fields}
        if msg.payloads:
            head["nf"] = [len(p) for p in msg.payloads]
            for payload in msg.payloads:
                frames.extend(payload)
        headers.append(head)
    frames[0] = msgpack.packb([VERSION, headers], use_bin_type=True)
    return frames


def decode(frames: Sequence[Frame], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[Message]:
    """Parse and validate a batch; raise :class:`ProtocolError` on anything off."""
    if not frames:
        raise ProtocolError("empty message")
    total = sum(nbytes(f) for f in frames)
    if total > max_bytes:
        raise ProtocolError(f"message of {total} bytes exceeds the limit of {max_bytes}")
    header = frames[0]
    if nbytes(header) > MAX_HEADER_BYTES:
        raise ProtocolError("header frame too large")
    try:
        parsed = msgpack.unpackb(bytes(header), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"header is not valid msgpack: {exc}") from None
    version, heads = _split_header(parsed)
    if version != VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (expected {VERSION})")
    return _assemble(heads, frames[1:])


def _split_header(parsed: Any) -> tuple[Any, list[Any]]:
    if not (isinstance(parsed, list) and len(parsed) == 2 and isinstance(parsed[1], list)):
        raise ProtocolError("header must be [version, [messages]]")
    if len(parsed[1]) > MAX_BATCH:
        raise ProtocolError(f"batch of {len(parsed[1])} messages exceeds {MAX_BATCH}")
    return parsed[0], parsed[1]


def _assemble(heads: list[Any], payload_frames: Sequence[Frame]) -> list[Message]:
    messages = []
    cursor = 0
    for head in heads:
        msg, counts = validate(head)
        for n in counts:
            if cursor + n > len(payload_frames):
                raise ProtocolError(f"{msg.op!r} announces more frames than were sent")
            msg.payloads.append(payload_frames[cursor : cursor + n])
            cursor += n
        messages.append(msg)
    if cursor != len(payload_frames):
        raise ProtocolError(f"{len(payload_frames) - cursor} payload frames were not announced")
    return messages


def validate(head: Any) -> tuple[Message, list[int]]:
    """Check one message dict against its op's schema."""
    if not isinstance(head, dict):
        raise ProtocolError("each message must be a map")
    op = head.get("op")
    schema = SCHEMAS.get(op) if isinstance(op, str) else None
    if schema is None:
        raise ProtocolError(f"unknown op {op!r}")
    required, npayloads = schema
    optional = OPTIONAL.get(op, {})
    for name, kind in required.items():
        if name not in head:
            raise ProtocolError(f"{op!r} is missing field {name!r}")
        _check_type(op, name, head[name], kind)
    fields = {}
    for name, value in head.items():
        if name in ("op", "nf"):
            continue
        if name not in required:
            if name not in optional:
                raise ProtocolError(f"{op!r} has unexpected field {name!r}")
            _check_type(op, name, value, optional[name])
        fields[name] = value
    counts = _frame_counts(op, head.get("nf", []), npayloads)
    return Message(op, fields), counts


def _check_type(op: str, name: str, value: Any, kind: Any) -> None:
    # bool is an int subclass; keep them apart so True is never a priority.
    if isinstance(value, bool) and kind in (_INT, _NUM):
        raise ProtocolError(f"{op!r} field {name!r} must be {_type_name(kind)}")
    if not isinstance(value, kind):
        raise ProtocolError(f"{op!r} field {name!r} must be {_type_name(kind)}")
    if name in ("deps", "queues", "keys") and not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{op!r} field {name!r} must be a list of strings")


def _frame_counts(op: str, nf: Any, expected: int | None) -> list[int]:
    if not isinstance(nf, list) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 <= n <= MAX_FRAMES_PER_PAYLOAD
        for n in nf
    ):
        raise ProtocolError(f"{op!r} has a malformed frame count list")
    if expected is not None and len(nf) != expected:
        raise ProtocolError(f"{op!r} must carry {expected} payloads, not {len(nf)}")
    return nf


def _type_name(kind: Any) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__


def nbytes(frame: Frame) -> int:
    """Size of a frame, whatever buffer type carries it."""
    size = getattr(frame, "nbytes", None)
    return len(frame) if size is None else int(size)
