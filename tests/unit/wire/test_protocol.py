"""Wire format: encode/decode round trips and every way a message is refused.

Also the address helpers, which validate what users type.
"""

from __future__ import annotations

import time
import tracemalloc
from array import array
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgpack
import numpy as np
import pytest

from celeriac.wire import protocol
from celeriac.wire.addresses import DEFAULT_PORT, is_loopback, normalize, tcp_address
from celeriac.wire.protocol import (
    MAX_FRAMES_PER_PAYLOAD,
    VERSION,
    Message,
    ProtocolError,
    decode,
    encode,
    nbytes,
)

BIG = 64 * 1024  # protocol.INLINE_FRAME_BYTES: frames this large travel out of band


def header(*heads: Any, version: Any = VERSION) -> bytes:
    return msgpack.packb([version, list(heads)], use_bin_type=True)


def release(key: str = "k", **extra: Any) -> dict[str, Any]:
    return {"op": "fetch", "key": key, **extra}


def task_done(p: Any = ([b"r"],), **extra: Any) -> dict[str, Any]:
    return {"op": "task-done", "key": "k", "p": list(p), **extra}


SUBMIT_FIELDS = {"key": "k", "deps": ["d1"], "priority": 0, "retries": 0, "queue": "default"}


# -- round trips ----------------------------------------------------------------------------


def test_round_trip_with_payload_frames() -> None:
    big, huge = b"B" * BIG, memoryview(bytearray(b"H" * (BIG + 1)))
    messages = [
        Message("submit", {**SUBMIT_FIELDS, "name": "f"}, [[b"fn"], [b"args", huge]]),
        Message("fetch", {"key": "other"}),
        Message("result", {"key": "k", "inline": True}, [[]]),  # a payload of zero frames
        Message("run", {"key": "k", "deps": []}, [[b"f"], [memoryview(b"a")], [big]]),
    ]
    frames = encode(messages)
    assert frames[1:] == [huge, big]  # only large frames get a frame of their own
    assert decode(frames) == messages


def test_small_frames_travel_inside_the_header() -> None:
    frames = encode([Message("run", {"key": "k", "deps": []}, [[b"1", b"2"], [b"3"]])])
    assert len(frames) == 1
    version, [head] = msgpack.unpackb(frames[0])
    assert (version, head["op"], head["p"]) == (VERSION, "run", [[b"1", b"2"], [b"3"]])


def test_large_frames_are_passed_through_not_copied() -> None:
    big = memoryview(bytearray(BIG))
    frames = encode([Message("task-done", {"key": "k"}, [[b"head", big]])])
    assert frames[1] is big
    assert msgpack.unpackb(frames[0])[1][0]["p"] == [[b"head", None]]
    [decoded] = decode(frames)
    assert decoded.payloads[0][0] == b"head"
    assert decoded.payloads[0][1] is big


def test_decode_accepts_any_buffer_type_for_the_header() -> None:
    head = header(release())
    expected = [Message("fetch", {"key": "k"})]
    assert decode([memoryview(head)]) == decode([bytearray(head)]) == expected


def test_size_limit_is_inclusive() -> None:
    frames = [header(task_done(p=[[None]])), b"x" * 100]
    size = sum(len(f) for f in frames)
    assert decode(frames, max_bytes=size)[0].payloads == [[b"x" * 100]]
    with pytest.raises(ProtocolError, match=f"message of {size} bytes exceeds the limit"):
        decode(frames, max_bytes=size - 1)


def test_nbytes_of_buffers() -> None:
    assert nbytes(b"abc") == 3
    assert nbytes(memoryview(array("i", [1, 2]))) == 2 * array("i").itemsize
    assert nbytes(np.zeros(10, dtype=np.float64)) == 80


# -- rejections ------------------------------------------------------------------------------

REJECTED = {
    "empty message": ([], "empty message"),
    "not msgpack": ([b"\xc1"], "not valid msgpack"),
    "trailing garbage": ([header() + b"\x00"], "not valid msgpack"),
    "non-string map key": ([msgpack.packb([VERSION, [{1: "x"}]])], "not valid msgpack"),
    "header not a list": ([msgpack.packb({"v": 1})], r"must be \[version, \[messages\]\]"),
    "header too short": ([msgpack.packb([VERSION])], r"must be \[version"),
    "messages not a list": ([msgpack.packb([VERSION, {}])], r"must be \[version"),
    "wrong version": ([header(version=VERSION + 1)], f"version {VERSION + 1} is not supported"),
    "message not a map": ([header(["fetch"])], "must be a map"),
    "unknown op": ([header({"op": "explode"})], "unknown op 'explode'"),
    "missing op": ([header({"key": "k"})], "unknown op None"),
    "op not a string": ([header({"op": 7})], "unknown op 7"),
    "missing field": ([header({"op": "fetch"})], "'fetch' is missing field 'key'"),
    "str expected": ([header(release(key=5))], "'key' must be str"),
    "bool for int": ([header({"op": "info", "rid": True})], "'rid' must be int"),
    "bool for number": (
        [header({"op": "welcome", "version": VERSION, "heartbeat_interval": False})],
        "must be int or float",
    ),
    "int for bool": ([header({"op": "result", "key": "k", "inline": 1})], "must be bool"),
    "float for int": ([header({"op": "info", "rid": 1.5})], "'rid' must be int"),
    "deps not strings": (
        [header({"op": "submit", **SUBMIT_FIELDS, "deps": [1], "p": [[b"f"], [b"a"]]})],
        "'deps' must be a list of strings",
    ),
    "unexpected field": ([header(release(extra=1))], "unexpected field 'extra'"),
    "unexpected field before a bad one": (
        [header({"op": "fetch", "extra": 1, "key": 5})],
        "unexpected field 'extra'",
    ),
    "bad field before an unexpected one": (
        [header({"op": "fetch", "key": 5, "extra": 1})],
        "'key' must be str",
    ),
    "bad field before a missing one": (
        [header({"op": "status", "rid": True})],
        "'rid' must be int",
    ),
    "NaN": ([header(task_done(duration=float("nan")))], "'duration' must be a finite number"),
    "infinity": ([header(task_done(duration=float("-inf")))], "must be a finite number"),
    "int for list of strings": ([header({"op": "release", "keys": 3})], "list of strings"),
    "None in list of strings": (
        [header({"op": "status", "rid": 1, "keys": ["a", None]})],
        "'keys' must be a list of strings",
    ),
    "bool for list": ([header({"op": "periodic-reply", "rid": 1, "jobs": True})], "must be list"),
    "list for map": ([header({"op": "info-reply", "rid": 1, "info": []})], "must be dict"),
    "optional field of wrong type": (
        [header({"op": "heartbeat", "memory": "lots"})],
        "'memory' must be int",
    ),
    "payloads not a list": ([header(task_done(p="r"))], "malformed payload list"),
    "payloads nil": ([header({"op": "fetch", "key": "k", "p": None})], "malformed payload list"),
    "payloads missing": ([header({"op": "task-done", "key": "k"})], "must carry 1 payloads, not 0"),
    "bad segment item": ([header(task_done(p=[[["seg", 0]]]))], "malformed payload list"),
    "payload not a list": ([header(task_done(p=[b"r"]))], "malformed payload list"),
    "frame neither bytes nor None": ([header(task_done(p=[["r"]]))], "malformed payload"),
    "too many frames per payload": (
        [header(task_done(p=[[b""] * (MAX_FRAMES_PER_PAYLOAD + 1)]))],
        "malformed payload list",
    ),
    "wrong payload count": ([header(task_done(p=[[b"x"], [b"y"]]))], "must carry 1 payloads"),
    "payload where none allowed": ([header(release(p=[[b"x"]]))], "must carry 0 payloads"),
    "more frames announced than sent": (
        [header(task_done(p=[[None, None]])), b"x"],
        "announces more frames than were sent",
    ),
    "frames not announced": ([header(release()), b"x"], "1 frames were not announced"),
    "frames after the last payload": (
        [header(task_done(p=[[None]]), release()), b"x", b"y"],
        "1 frames were not announced",
    ),
}


@pytest.mark.parametrize(("frames", "match"), REJECTED.values(), ids=REJECTED.keys())
def test_decode_rejects(frames: list[Any], match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        decode(frames)


@pytest.mark.parametrize(
    "head",
    [
        {"op": "task-done", "duration": 1.0, "p": [[b"r"]]},
        {"op": "error", "key": "k"},
        {"op": "hello-worker", "version": 1, "slots": 1, "queues": [], "name": "w", "memory": 0},
    ],
    ids=["task-done-without-key", "error-without-text", "hello-worker-without-pid"],
)
def test_missing_required_field_is_rejected_even_with_optional_ones(head: dict) -> None:
    with pytest.raises(ProtocolError, match="is missing field"):
        decode([header(head)])


def test_missing_field_named_is_the_first_the_schema_requires() -> None:
    fields = {"key": "k", "deps": [], "retries": 0, "name": "f", "eta": 1.5, "ack": True}
    head = {"op": "submit", **fields, "p": [[b"f"], [b"a"]]}
    with pytest.raises(ProtocolError, match="'submit' is missing field 'priority'"):
        decode([header(head)])


def test_fields_of_every_accepted_type() -> None:
    head = {"op": "welcome", "version": VERSION, "worker_timeout": 3, "heartbeat_interval": -0.5}
    [msg] = decode([header(head)])
    assert msg == Message("welcome", {k: v for k, v in head.items() if k != "op"})
    status = {"op": "status", "rid": 0, "keys": []}
    assert decode([header(status)]) == [Message("status", {"rid": 0, "keys": []})]
    run = {"op": "run", "key": "k", "deps": ["a", "b"], "p": []}  # any payload count
    assert decode([header(run)]) == [Message("run", {"key": "k", "deps": ["a", "b"]})]


def test_segment_items_are_resolved_in_order() -> None:
    frames = [header(task_done(p=[[b"a", ["seg", 3], None]]), task_done(p=[[None]])), b"x", b"y"]
    made: list[tuple[str, int]] = []

    def segment(name: str, size: int) -> bytes:
        made.append((name, size))
        return b"S" * size

    decoded = decode(frames, segment=segment)
    assert [m.payloads for m in decoded] == [[[b"a", b"SSS", b"x"]], [[b"y"]]]
    assert made == [("seg", 3)]
    with pytest.raises(ProtocolError, match="'task-done' names shared memory"):
        decode(frames)


def test_decode_of_zmq_frames() -> None:
    zmq = pytest.importorskip("zmq")
    frames = [zmq.Frame(header(task_done(p=[[None]]))), zmq.Frame(b"big")]
    assert nbytes(frames[1]) == 3
    [msg] = decode(frames)
    assert bytes(msg.payloads[0][0]) == b"big"


class _Exported:
    """A large frame moved to shared memory, as :class:`celeriac.wire.sharedmem.Segment`."""

    __slots__ = ("nbytes", "shm_name")

    def __init__(self, name: str, size: int) -> None:
        self.shm_name, self.nbytes = name, size


def test_encode_exports_only_large_frames() -> None:
    big, bigger = b"B" * BIG, memoryview(b"C" * (BIG + 1))
    seen: list[Any] = []

    def export(frame: Any) -> Any:
        seen.append(frame)
        return _Exported("seg", nbytes(frame)) if frame is big else frame

    msg = Message("run", {"key": "k", "deps": []}, [[b"f"], [memoryview(b"a"), big], [bigger]])
    frames = encode([msg], export)
    assert seen == [big, bigger]
    assert frames[1:] == [bigger]
    layout = msgpack.unpackb(frames[0])[1][0]["p"]
    assert layout == [[b"f"], [b"a", ["seg", BIG]], [None]]


def test_encode_packs_like_msgpack_after_a_large_batch_and_a_failure() -> None:
    def packed(messages: list[Message]) -> bytes:
        heads = [{"op": m.op, **m.fields, "p": m.payloads} for m in messages]
        return msgpack.packb([VERSION, heads], use_bin_type=True)

    # a header past the Packer's kept buffer (256 KiB) from its fields, not its
    # payloads: those would go out of band past the batch's inline budget
    large = [Message("task-done", {"key": "k" * 1000 + str(i)}, [[b"r"]]) for i in range(500)]
    small = [Message("task-done", {"key": "k"}, [[b"r"]])]
    assert encode(large) == [packed(large)]
    with pytest.raises(TypeError):
        encode([Message("fetch", {"key": object()})])
    assert encode(small) == [packed(small)]


def test_encode_from_several_threads() -> None:
    def work(i: int) -> bool:
        messages = [Message("fetch", {"key": f"{i}-{n}"}) for n in range(i % 50)]
        return all(decode(encode(messages)) == messages for _ in range(200))

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(40)))


def test_max_frames_per_payload_is_allowed() -> None:
    frames = [header(task_done(p=[[b""] * MAX_FRAMES_PER_PAYLOAD]))]
    assert len(decode(frames)[0].payloads[0]) == MAX_FRAMES_PER_PAYLOAD


def test_batch_size_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(protocol, "MAX_BATCH", 2)
    assert len(decode([header(release(), release())])) == 2
    with pytest.raises(ProtocolError, match="batch of 3 messages exceeds 2"):
        decode([header(release(), release(), release())])


def test_header_size_is_bounded() -> None:
    head = header(release())
    with pytest.raises(ProtocolError, match=f"header frame of {len(head)} bytes exceeds"):
        decode([head], max_header_bytes=len(head) - 1)
    assert [m.op for m in decode([head], max_header_bytes=len(head))] == [release()["op"]]


def test_a_header_over_the_peer_limit_is_refused_before_it_is_unpacked() -> None:
    # finding H1: 63 MB of empty arrays took the scheduler to 4.6 GB and froze it 16 s
    count = 63_000_000  # [VERSION, [{"op": "release", "keys": [[], [], ...]}]], built as bytes
    bomb = b"\x92\x01\x91\x82\xa2op\xa7release\xa4keys\xdd" + count.to_bytes(4, "big")
    bomb += b"\x90" * count
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ProtocolError, match="exceeds the limit of 1048576"):
        decode([bomb])
    elapsed, (_, peak) = time.perf_counter() - started, tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1 << 20 and elapsed < 0.1


def test_the_worst_header_under_the_limit_costs_a_bounded_amount_of_memory() -> None:
    # One-byte containers are the most memory per header byte msgpack can make:
    # an empty map is 1 byte on the wire and a 64-byte dict here (73 MiB for a
    # whole MAX_HEADER_BYTES of them, measured).  A quarter of that, to stay fast:
    quarter = protocol.MAX_HEADER_BYTES // 4
    worst = msgpack.packb([VERSION, [{"op": "release", "keys": [{}] * quarter}]])
    tracemalloc.start()
    with pytest.raises(ProtocolError):  # not a list of strings
        decode([worst])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 20 << 20, f"{peak / (1 << 20):.0f} MiB for a {len(worst)}-byte header"


def test_encode_keeps_a_batch_header_under_the_limit_by_moving_frames_out_of_band() -> None:
    messages = [Message("task-done", {"key": str(i)}, [[b"r" * 60_000]]) for i in range(1000)]
    frames = encode(messages)
    assert len(frames[0]) < protocol.MAX_HEADER_BYTES
    assert len(frames) > 900  # most frames out of band, none lost
    assert decode(frames) == [
        Message("task-done", {"key": str(i)}, [[b"r" * 60_000]]) for i in range(1000)
    ]


def test_every_op_round_trips_with_its_required_fields() -> None:
    def sample(kind: Any) -> Any:
        if isinstance(kind, str):  # the "list of strings" marker
            return ["s"]
        return {str: "s", int: 1, float: 1.5, list: [], dict: {}, bool: True}[kind[0]]

    for op, (required, _optional, npayloads) in protocol.SCHEMAS.items():
        fields = {name: sample(kind) for name, kind in required.items()}
        message = Message(op, fields, [[b"p"] for _ in range(npayloads or 0)])
        assert decode(encode([message])) == [message], op


# -- addresses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("localhost:9000", "tcp://localhost:9000"),
        ("localhost", f"tcp://localhost:{DEFAULT_PORT}"),
        ("tcp://10.0.0.1:1", "tcp://10.0.0.1:1"),
        ("tcp://example.com", f"tcp://example.com:{DEFAULT_PORT}"),
        ("  host:65535 \n", "tcp://host:65535"),
        ("[::1]:9000", "tcp://[::1]:9000"),
        ("[::1]", f"tcp://[::1]:{DEFAULT_PORT}"),
        (" ipc:///run/celeriac/s.sock ", "ipc:///run/celeriac/s.sock"),
    ],
)
def test_normalize_accepts_common_forms(text: str, expected: str) -> None:
    assert normalize(text) == expected
    assert normalize(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", "non-empty string"),
        ("   ", "non-empty string"),
        (None, "non-empty string"),
        (8786, "non-empty string"),
        ("udp://host:1", "use tcp:// or ipc://"),
        ("ipc://", "needs a path"),
        ("ipc:///" + "x" * 107, "longer than 107 bytes"),
        ("host:0", "port 0 .* out of range"),
        ("host:65536", "port 65536 .* out of range"),
        ("host:abc", "malformed scheduler address 'host:abc'"),
        ("host:", "malformed"),
        ("host:123456", "malformed"),
        ("tcp://host:1/path", "malformed"),
        ("my host:1", "malformed"),
    ],
)
def test_normalize_rejects_clearly(text: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        normalize(text)


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("127.0.0.1", 1, "tcp://127.0.0.1:1"),
        ("::1", "*", "tcp://[::1]:*"),
        ("[::1]", 5, "tcp://[::1]:5"),
    ],
)
def test_tcp_address(host: str, port: Any, expected: str) -> None:
    assert tcp_address(host, port) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("example.com", False),
        ("localhost.example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
