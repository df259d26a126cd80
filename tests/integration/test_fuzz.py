"""Hostile input against real processes on loopback (issue 5, item 5).

* The scheduler gets tens of thousands of random, truncated, wrongly-typed,
  oversized and semantically odd messages from raw DEALER sockets, while a
  legitimate :class:`celeriac.Client` keeps submitting real tasks.
* The scheduler port gets raw TCP junk (HTTP, a ZMTP greeting then garbage).
* A worker gets the same treatment from a fake scheduler (a ROUTER we run).

Everything is generated from a seeded ``random.Random``: a failure prints the
seed and the offending message, and reruns identically.  The bugs fuzzing
found are kept as regression cases at the bottom.
"""

from __future__ import annotations

import os
import pickle
import random
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq

from celeriac import Client, LocalCluster
from celeriac.testing import FAST_SCHEDULER, FakeScheduler, RawPeer
from celeriac.testing.fakes import args_payload, function_payload, header
from celeriac.wire import protocol
from celeriac.wire.protocol import Message, ProtocolError
from tasks_for_tests import inc

SEED = 0xCE1E41AC
#: Hostile messages sent to the scheduler in the main fuzz run.
SCHEDULER_MESSAGES = 30_000
#: A legitimate task must complete correctly after every this many of them.
CLIENT_CHECK_EVERY = 400
#: Hostile messages sent to the worker.
WORKER_MESSAGES = 10_000
#: A queue that no real worker serves: hostile submissions wait there (or go
#: to the fake workers the fuzzer registers), not on the real workers.
FUZZ_QUEUE = "fuzz-nobody-serves-this"
ANCHOR = "1970-01-01T00:00:00+00:00"
MiB = 1 << 20

# Field kinds, as protocol.SCHEMAS spells them.
_STR, _INT, _NUM, _BOOL = protocol._STR, protocol._INT, protocol._NUM, protocol._BOOL
_LIST, _DICT, _STRS = protocol._LIST, protocol._DICT, protocol._STRS


# -- helpers ------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def locally_bad(frames: list[bytes]) -> bool:
    """Whether the scheduler must answer these frames with ``bad message: ...``."""
    try:
        protocol.decode(frames)
    except ProtocolError:
        return True
    return False


# -- the generator ------------------------------------------------------------------


class Hostile:
    """Seeded hostile frames, for the scheduler and for a worker."""

    def __init__(self, rng: random.Random, keys: int = 200) -> None:
        self.rng = rng
        self.keys = [f"fz-{i}" for i in range(keys)]
        self.worker_ids: list[str] = []  # hex ids of fake workers, for worker-died

    # values ----------------------------------------------------------------------

    def text(self) -> str:
        r = self.rng
        choice = r.random()
        if choice < 0.4:
            return r.choice(self.keys)
        if choice < 0.7:
            return "".join(r.choice("abcxyz-_:/ 0") for _ in range(r.randrange(12)))
        if choice < 0.8:
            return "ключ-🎯-\u202e-\ufeff-" + chr(r.randrange(0x20, 0xD7FF))
        if choice < 0.95:
            return "\x00" * r.randrange(4)
        return "x" * r.randrange(1_000, 100_000)  # very long

    def huge_int(self) -> int:
        return self.rng.choice([2**63 - 1, -(2**63), 2**64 - 1, 2**32, -1, 0])

    def number(self) -> float | int:
        # no NaN here: it is a known bug (see test_nan_expiry_does_not_stall_the_timers)
        return self.rng.choice(
            [0.0, -1.0, 1e-300, 1e308, -1e308, float("inf"), float("-inf"), 3, self.huge_int()]
        )

    def junk(self, depth: int = 0) -> Any:
        r = self.rng
        kind = r.randrange(10 if depth < 3 else 7)
        if kind == 0:
            return None
        if kind == 1:
            return r.choice([True, False])
        if kind == 2:
            return self.huge_int()
        if kind == 3:
            return r.choice([1.5, -0.0, 1e308, float("inf")])
        if kind == 4:
            return self.text()
        if kind == 5:
            return r.randbytes(r.randrange(64))
        if kind == 6:
            return msgpack.ExtType(r.randrange(128), r.randbytes(r.randrange(8)))
        if kind in (7, 8):
            return [self.junk(depth + 1) for _ in range(r.randrange(5))]
        return {self.text()[:20]: self.junk(depth + 1) for _ in range(r.randrange(5))}

    def valid(self, kind: Any) -> Any:
        r = self.rng
        if kind is _STR:
            return self.text()
        if kind is _INT:
            return r.choice([0, 1, 5, r.randrange(-1000, 1000), self.huge_int()])
        if kind is _NUM:
            return r.choice([0.5, time.time() + r.uniform(-5, 5), self.number()])
        if kind is _BOOL:
            return r.random() < 0.5
        if kind is _STRS:
            if r.random() < 0.01:
                return [f"k{i}" for i in range(10_000)]
            return [self.text() for _ in range(r.randrange(4))]
        if kind is _DICT:
            return {self.text()[:20]: self.junk(2) for _ in range(r.randrange(3))}
        if kind is _LIST:
            return [self.junk(2) for _ in range(r.randrange(3))]
        raise AssertionError(kind)

    def wrong(self, kind: Any) -> Any:
        """A value of the wrong type for ``kind`` (bools for ints, ints for bools, ...)."""
        r = self.rng
        options: dict[Any, list[Any]] = {
            _STR: [1, b"bytes", None, ["a"], True, {"a": 1}, 2.5],
            _INT: [True, False, 1.0, "1", None, [1], b"\x01"],
            _NUM: [True, "1.5", None, {}, [0.5], b"1"],
            _BOOL: [0, 1, "true", None, 1.0, []],
            _STRS: ["abc", [1, 2], [b"x"], ["a", None], {}, [["a"]], [True]],
            _DICT: [[], "x", 1, None, [["a", 1]]],
            _LIST: [{}, "x", 1, None],
        }
        return r.choice(options[kind])

    def payloads(self, count: int, frames: list[Any]) -> list[list[bytes | None]]:
        """``count`` payloads of non-pickles; some frames out of band (appended to ``frames``)."""
        layout: list[list[bytes | None]] = []
        for _ in range(count):
            items: list[bytes | None] = []
            for _ in range(self.rng.randrange(1, 3)):
                junk = b"\x00" + self.rng.randbytes(self.rng.randrange(40))  # \x00: no pickle
                if self.rng.random() < 0.2:
                    items.append(None)
                    frames.append(junk)
                else:
                    items.append(junk)
            layout.append(items)
        return layout

    # scheduler messages ---------------------------------------------------------------

    def schedule(self) -> dict[str, Any]:
        """A periodic schedule of the right field types, odd or invalid in content."""
        r = self.rng
        # Wrong *types* inside the schedule crash the scheduler: a known bug
        # (test_periodic_set_with_a_mistyped_schedule_is_an_error), left out here.
        return r.choice(
            [
                {"kind": "every", "seconds": r.choice([3600, 86400.5, 0, -1]), "anchor": ANCHOR},
                {"kind": "every", "seconds": 3600, "anchor": r.choice(["", "yesterday", "1-1"])},
                {"kind": "every", "seconds": 7200, "anchor": "0001-01-01T00:00:00+00:00"},
                {"kind": "every", "seconds": 7200, "anchor": "9999-12-31T23:59:59+00:00"},
                {
                    "kind": "crontab",
                    "expr": r.choice(["0 0 1 1 *", "* * *", "61 * * * *", "@x"]),
                    "tz": r.choice(["UTC", "Mars/Olympus", "../../etc/passwd", "\x00"]),
                },
                {"kind": "at", "when": r.choice(["2000-01-01T00:00:00", "9999-12-31T23:59:59Z"])},
                {"kind": "at", "when": "2000-01-01T00:00:00+00:00"},
                {"kind": r.choice(["every", "cron", "", "at"]), "seconds": 1},
                {"kind": "every"},
                {},
            ]
        )

    def fields_for(self, op: str) -> dict[str, Any]:  # noqa: C901 - one branch per op
        """A schema-valid field set for ``op``, made safe for the real workers."""
        required, optional, _ = protocol.SCHEMAS[op]
        fields = {name: self.valid(kind) for name, kind in required.items()}
        for name, kind in optional.items():
            if self.rng.random() < 0.3:
                fields[name] = self.valid(kind)
        r = self.rng
        if op == "submit":
            fields["key"] = r.choice(self.keys)
            fields["deps"] = [r.choice(self.keys) for _ in range(r.choice([0, 0, 0, 1, 2]))]
            if r.random() < 0.02:  # junk for the real workers: they must fail it cleanly
                fields["queue"] = "default"
                fields.pop("time_limit", None)
                fields.pop("soft_time_limit", None)
                fields.pop("rate_limit", None)
                fields["eta"] = 0.0
            else:
                fields["queue"] = FUZZ_QUEUE
            if "rate_limit" in fields:
                fields["rate_limit"] = r.choice(["10/s", "1/h", "0/s", "junk", "1e999/s", ""])
        elif op in ("hello-client", "hello-worker"):
            fields["version"] = r.choice([protocol.VERSION, 0, 2, -1, 2**63 - 1])
            if op == "hello-worker":  # a fake worker must not steal the client's tasks
                fields["queues"] = [FUZZ_QUEUE]
                fields["slots"] = r.choice([0, 1, -5, 2**63 - 1])
        elif op == "periodic-set":
            fields["schedule"] = self.schedule()
            fields["options"] = r.choice(
                [
                    {},
                    {"queue": FUZZ_QUEUE},
                    {"queue": FUZZ_QUEUE, "priority": 9},
                    {"key": "x"},
                    {"queue": FUZZ_QUEUE, "nonsense": 1},
                    {"queue": FUZZ_QUEUE, "retries": "x"},
                ]
            )
            if "queue" not in fields["options"]:
                fields["options"] = {"queue": FUZZ_QUEUE, **fields["options"]}
            fields["misfire"] = r.choice(["skip", "run_once", "catch_up", "sometimes"])
        elif op == "periodic":
            fields["action"] = r.choice(["list", "pause", "resume", "remove", "run-now", "boom"])
        elif op == "worker-died":
            fields["worker"] = r.choice([*self.worker_ids, "zz", "", os.urandom(16).hex()])
        elif op == "workers-alive":
            fields["workers"] = [r.choice([*self.worker_ids, "zz", os.urandom(16).hex()])]
        elif op == "revoke" and r.random() < 0.5:
            fields["key"] = os.urandom(8).hex()  # a random id, never seen
        return fields

    def message(self) -> dict[str, Any]:
        """One message map: valid for its op, or with one thing wrong."""
        r = self.rng
        op = r.choice(list(protocol.SCHEMAS))
        required, optional, _ = protocol.SCHEMAS[op]
        fields = self.fields_for(op)
        mutation = r.choice(
            ["none", "none", "none", "missing", "extra", "wrong", "bool-for-int", "long", "nested"]
        )
        names = [*required, *optional]
        if mutation == "missing" and required:
            del fields[r.choice(list(required))]
        elif mutation == "extra":
            fields[r.choice(["x", "p2", "op2", "key ", "", self.text()[:30]])] = self.junk()
        elif mutation == "wrong" and names:
            name = r.choice(names)
            fields[name] = self.wrong({**required, **optional}[name])
        elif mutation == "bool-for-int":
            ints = [n for n, k in {**required, **optional}.items() if k is _INT]
            if ints:
                fields[r.choice(ints)] = r.choice([True, False])
        elif mutation == "long":
            strs = [n for n, k in {**required, **optional}.items() if k is _STR]
            if strs:
                fields[r.choice(strs)] = "y" * r.randrange(10_000, 200_000)
        elif mutation == "nested" and names:
            fields[r.choice(names)] = [[[[self.junk()]]], {"a": {"b": [self.junk()]}}]
        return {"op": op, **fields}

    def scheduler_frames(self) -> list[Any]:
        """One hostile multipart message for the scheduler."""
        r = self.rng
        kind = r.randrange(100)
        if kind < 8:  # random bytes, possibly several frames
            return [r.randbytes(r.randrange(0, 300)) for _ in range(r.choice([1, 1, 2, 5]))]
        if kind < 14:  # a valid message, truncated
            frames = self.well_formed()
            cut = r.randrange(0, max(1, len(frames[0])))
            return [frames[0][:cut], *frames[1:]]
        if kind < 22:  # valid msgpack, wrong shape
            return [
                msgpack.packb(
                    r.choice(
                        [
                            self.junk(),
                            [protocol.VERSION],
                            [protocol.VERSION, self.junk()],
                            [protocol.VERSION, [self.junk(), self.junk()]],
                            [protocol.VERSION, [{"op": self.junk()}]],
                            [protocol.VERSION, [{b"op": "submit"}]],
                            [protocol.VERSION, {"op": "info", "rid": 1}],
                            [protocol.VERSION, [], "extra"],
                            [r.choice([0, 2, "1", None, -1, 2**64 - 1, 1.5]), []],
                            {"version": 1, "messages": []},
                        ]
                    ),
                    use_bin_type=True,
                )
            ]
        if kind < 27:  # frame counts that do not match the payload lists
            frames = self.well_formed()
            choice = r.randrange(3)
            if choice == 0:
                return [*frames, b"unannounced"]
            if choice == 1:
                op = r.choice(["submit", "task-done", "periodic-set"])
                fields = self.fields_for(op)
                count = protocol.SCHEMAS[op][2] or 1
                head = {"op": op, **fields, "p": [[None, None]] * count}
                return [header([head]), b"only one frame"]
            return frames[:1] + frames[2:] if len(frames) > 1 else [*frames, b"", b""]
        if kind < 31:  # payload lists of the wrong shape
            fields = self.fields_for("submit")
            layout = r.choice(
                [
                    [],
                    [[b"f"]],
                    [[b"f"], [b"a"], [b"x"]],
                    [b"f", b"a"],
                    "p",
                    [[1], [2]],
                    [[b"f"], None],
                    [[b"f"], [b"a"] * 5000],
                ]
            )
            return [header([{"op": "submit", **fields, "p": layout}])]
        if kind < 34:  # a batch mixing good and bad messages
            frames: list[Any] = [b""]
            heads = []
            for _ in range(r.randrange(2, 30)):
                head = self.message()
                head["p"] = self.payloads(protocol.SCHEMAS[head["op"]][2] or 0, frames)
                heads.append(head)
            frames[0] = header(heads)
            return frames
        if kind < 36:  # hello with a wrong protocol version
            op = r.choice(["hello-client", "hello-worker"])
            fields = self.fields_for(op)
            fields["version"] = r.choice([0, 2, 99, -1, 2**64 - 1])
            return [header([{"op": op, **fields}])]
        if kind < 40:  # semantically odd, well-formed
            return self.semantically_odd()
        return self.well_formed() if kind < 60 else self.one_message()

    def one_message(self) -> list[Any]:
        frames: list[Any] = [b""]
        head = self.message()
        count = protocol.SCHEMAS[head["op"]][2]
        if count is None:
            count = self.rng.randrange(3)
        elif self.rng.random() < 0.05:
            count += self.rng.choice([-1, 1])
        head["p"] = self.payloads(max(0, count), frames)
        if not head["p"] and self.rng.random() < 0.5:
            del head["p"]
        frames[0] = header([head])
        return frames

    def well_formed(self, op: str | None = None) -> list[Any]:
        """A schema-valid message (odd values allowed), as frames."""
        op = op or self.rng.choice(list(protocol.SCHEMAS))
        frames: list[Any] = [b""]
        count = protocol.SCHEMAS[op][2]
        head = {"op": op, **self.fields_for(op)}
        head["p"] = self.payloads(self.rng.randrange(3) if count is None else count, frames)
        frames[0] = header([head])
        return frames

    def semantically_odd(self) -> list[Any]:
        r = self.rng
        choice = r.randrange(9)
        key = os.urandom(6).hex()
        if choice == 0:
            frames: list[Any] = [b""]
            p = self.payloads(1, frames)
            frames[0] = header([{"op": "task-done", "key": key, "duration": -1.0, "p": p}])
            return frames
        if choice == 1:
            return [header([{"op": "release", "keys": [key, *r.sample(self.keys, 5)]}])]
        if choice == 2:
            return [header([{"op": "worker-died", "worker": os.urandom(16).hex(), "reason": "x"}])]
        if choice == 3:
            return [header([{"op": "revoke", "key": key, "terminate": True}])]
        if choice == 4:
            keys = [f"status-{i}" for i in range(10_000)]
            return [header([{"op": "status", "rid": r.randrange(2**31), "keys": keys}])]
        if choice == 5:
            return self.well_formed("periodic-set")
        if choice == 6:
            head = {
                "op": "task-failed",
                "key": r.choice(self.keys),
                "kind": "retry",
                "text": "t",
                "countdown": r.choice([0.0, 1e308, -1e308]),
                "p": [[b"\x00e"]],
            }
            return [header([head])]
        if choice == 7:
            return [header([{"op": "started", "key": key}, {"op": "heartbeat", "memory": -1}])]
        return [header([{"op": "goodbye"}])]

    # worker messages ------------------------------------------------------------------

    def worker_frames(self) -> list[Any]:
        """One hostile multipart message for a worker (from its 'scheduler')."""
        r = self.rng
        kind = r.randrange(100)
        if kind < 10:
            return [r.randbytes(r.randrange(0, 200)) for _ in range(r.choice([1, 2]))]
        if kind < 20:
            frames = self.worker_run()
            return [frames[0][: r.randrange(max(1, len(frames[0])))], *frames[1:]]
        if kind < 28:
            return [msgpack.packb(self.junk(), use_bin_type=True)]
        if kind < 35:
            op = r.choice(["run", "drop", "welcome", "frobnicate", "result", "task-done"])
            fields = self.fields_for(op) if op in protocol.SCHEMAS else {}
            if fields and (op == "run" or r.random() < 0.7):  # a valid run: worker_run()
                name = r.choice(list(fields))
                fields[name] = self.wrong(
                    {**protocol.SCHEMAS[op][0], **protocol.SCHEMAS[op][1]}[name]
                )
            return [header([{"op": op, **fields}])]
        if kind < 75:
            return self.worker_run()
        if kind < 85:
            return [header([{"op": "drop", "key": self.text(), "terminate": r.random() < 0.5}])]
        # ops a worker ignores or handles harmlessly
        op = r.choice(
            ["heartbeat-ack", "reregister", "status-reply", "accepted", "cancelled", "error"]
        )
        fields = self.fields_for(op)
        if op == "error":
            fields["about"] = r.choice(["submit", "heartbeat"])  # about hello-worker: it exits
        return [header([{"op": op, **fields}])]

    def worker_run(self) -> list[Any]:
        """A ``run`` whose payloads are junk, or pickles of harmless wrong things."""
        r = self.rng
        function = r.choice(
            [
                [b"\x00 not a pickle"],
                [r.randbytes(r.randrange(1, 50))],
                [pickle.dumps(42)],
                [pickle.dumps("not callable")],
                [pickle.dumps(len)],
                [pickle.dumps(int)],
                [pickle.dumps(sorted)],
                [],  # empty payload: no function at all
                [pickle.dumps(len), b"stray buffer"],
            ]
        )
        args = r.choice(
            [
                [pickle.dumps(((), {}))],
                [pickle.dumps((("12",), {}))],
                [pickle.dumps(((1, 2, 3), {"x": 1}))],
                [pickle.dumps(5)],
                [pickle.dumps(((), "not a dict"))],
                [pickle.dumps(None)],
                [b"\x00 junk args"],
                [],
            ]
        )
        deps = [f"dep-{i}" for i in range(r.choice([0, 0, 1, 2]))]
        dep_payloads = [r.choice([[pickle.dumps(7)], [b"\x00"], []]) for _ in deps]
        head: dict[str, Any] = {"op": "run", "key": f"run-{r.randrange(10**9)}", "deps": deps}
        if r.random() < 0.3:
            head["name"] = self.text()
        if r.random() < 0.2:
            head["attempt"] = self.huge_int()
        if r.random() < 0.1:
            head["time_limit"] = r.choice([3600.0, 1e308, float("inf")])
        if r.random() < 0.1:
            head["soft_time_limit"] = r.choice([3600.0, 1e308, float("inf")])
        # deps announced without their payloads kill the worker: a known bug
        # (test_worker_survives_a_malformed_run), left out here.
        frames: list[Any] = [b""]
        head["p"] = []
        for payload in (function, args, *dep_payloads):
            if payload and r.random() < 0.2:
                head["p"].append([None] * len(payload))
                frames.extend(payload)
            else:
                head["p"].append(payload)
        frames[0] = header([head])
        return frames


# -- the scheduler fuzz -------------------------------------------------------------------


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


def _internal(replies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m for m in replies if m.get("op") == "error" and "internal" in m.get("text", "")]


def _show(culprits: list[list[Any]], limit: int = 5) -> str:
    shown = []
    for frames in culprits[:limit]:
        try:
            shown.append(repr(msgpack.unpackb(frames[0], raw=False))[:2000])
        except Exception:
            shown.append(repr(frames)[:2000])
    return "\n".join(shown) or "(none alone: it needs the state built by its predecessors)"


def _replay(context: zmq.Context, address: str, frames: list[Any]) -> bool:
    """Whether ``frames`` alone, from a fresh client, draw an internal error."""
    peer = RawPeer(context, address, b"replay-" + os.urandom(6))
    try:
        peer.send_messages(Message("hello-client", {"version": protocol.VERSION}))
        peer.send(frames)
        return bool(_internal(peer.sync()))
    finally:
        peer.close()


@pytest.mark.timeout(120)
def test_scheduler_survives_hostile_messages_and_keeps_serving(  # noqa: C901
    cluster_factory: Callable[..., LocalCluster], context: zmq.Context, capfd: Any
) -> None:
    cluster = cluster_factory(n_workers=2, log_level="WARNING")
    scheduler_pid = cluster.scheduler_pid
    rng = random.Random(SEED)
    fuzz = Hostile(rng)
    started = time.monotonic()

    peers = [RawPeer(context, cluster.address, f"fuzz-{i}".encode()) for i in range(8)]
    # 0-3 say hello as clients, 4-5 as (fake) workers on a queue of their own, 6-7 never do
    # Like real peers, those that said hello say it again when told to reregister
    # (after a fuzzed goodbye, or a fake worker declared lost for its silence).
    hellos = {peer.identity: Message("hello-client", {"version": protocol.VERSION})
              for peer in peers[:4]}  # fmt: skip
    for i, peer in enumerate(peers[4:6]):
        fields = {"version": protocol.VERSION, "slots": 2, "queues": [FUZZ_QUEUE],
                  "name": f"fake-{i}", "pid": 1}  # fmt: skip
        hellos[peer.identity] = Message("hello-worker", fields)
        fuzz.worker_ids.append(peer.identity.hex())
    for peer in peers:
        if peer.identity in hellos:
            peer.send_messages(hellos[peer.identity])
        peer.sync()

    sent = bad_sent = checks = 0
    replies: Counter[str] = Counter()
    bad_answered = 0
    internal: list[tuple[bytes, list[list[Any]]]] = []
    run_keys: list[str] = []  # what the fake workers were given: they report on it

    with Client(cluster.address) as client:
        client.wait_for_workers(2, timeout=20)

        def check_client(i: int) -> None:
            nonlocal checks
            assert client.submit(inc, i).result(timeout=10) == i + 1
            checks += 1

        def chunk(peer: RawPeer, frames_list: list[list[Any]]) -> None:
            nonlocal sent, bad_sent, bad_answered
            expected_bad = 0
            for frames in frames_list:
                expected_bad += locally_bad(frames)
                peer.send(frames)
            sent += len(frames_list)
            bad_sent += expected_bad
            answers = peer.sync()
            for reply in answers:
                replies[reply.get("op", "?")] += 1
                if reply.get("op") == "run":
                    run_keys.append(reply["key"])
            bad = [
                m for m in answers
                if m.get("op") == "error" and m.get("text", "").startswith("bad message")
            ]  # fmt: skip
            bad_answered += len(bad)
            # every message the scheduler cannot parse is answered with an error
            assert len(bad) == expected_bad, (bad, frames_list)
            if _internal(answers):
                internal.append((peer.identity, frames_list))
            if peer.identity in hellos and any(m.get("op") == "reregister" for m in answers):
                peer.send_messages(hellos[peer.identity])
                assert not _internal(peer.sync())

        # warm-up: the oversized and deeply nested things once, then some ordinary fuzz
        probe = peers[6]
        oversized = [
            [b"\x91" * (protocol.MAX_HEADER_BYTES + 1)],  # header frame too large
            [header([{"op": "goodbye"}] * (protocol.MAX_BATCH + 1))],  # batch too long
            [b"\x91" * 100_000 + b"\xc0"],  # nested 100,000 deep
            [b"\xdd\xff\xff\xff\xff"],  # announces an array of 4 G items
            [b"\xdb\xff\xff\xff\xff" + b"x" * 100],  # announces a string of 4 GiB
            [header([{"op": "heartbeat"}]), *[b"x"] * 5000],  # 5000 unannounced frames
        ]
        chunk(probe, oversized)
        for _ in range(2_000):
            chunk(rng.choice(peers), [fuzz.scheduler_frames()])
        check_client(-1)
        rss_before = rss_bytes(scheduler_pid)

        next_check = sent + CLIENT_CHECK_EVERY
        while sent < SCHEDULER_MESSAGES:
            peer = rng.choice(peers)
            frames_list = [fuzz.scheduler_frames() for _ in range(rng.randrange(1, 40))]
            if peer in peers[4:6] and run_keys:  # fake workers report on what they were given
                for _ in range(min(len(run_keys), rng.randrange(4))):
                    key = run_keys.pop(rng.randrange(len(run_keys)))
                    op = rng.choice(["started", "task-done", "task-failed"])
                    fields = {"key": key}
                    if op == "task-failed":
                        fields.update(kind=rng.choice(["remote", "retry", "serialize"]), text="e")
                    count = protocol.SCHEMAS[op][2]
                    frames_list.append(protocol.encode([Message(op, fields, [[b"\x00r"]] * count)]))
            chunk(peer, frames_list)
            if sent >= next_check:
                check_client(sent)
                next_check += CLIENT_CHECK_EVERY

        # Still served after the storm: a batch of real work, and a fresh client.
        assert client.gather(client.map(inc, range(200)), timeout=30) == list(range(1, 201))
    with Client(cluster.address) as other:
        assert other.submit(inc, 1).result(timeout=10) == 2

    rss_after = rss_bytes(scheduler_pid)
    elapsed = time.monotonic() - started
    culprits = [frames for _, batch in internal for frames in batch]
    reproduced = [f for f in culprits if _replay(context, cluster.address, f)]
    for peer in peers:
        peer.close()
    log = capfd.readouterr().err
    print(
        f"\nscheduler fuzz (seed {SEED:#x}): {sent} hostile messages in {elapsed:.1f} s, "
        f"{bad_sent} malformed, {bad_answered} answered 'bad message', "
        f"replies by op {dict(replies.most_common())}, {checks} client checks passed, "
        f"scheduler RSS {rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB, "
        f"'bad message' log lines {log.count('bad message from peer')}, "
        f"internal errors {len(internal)}"
    )
    assert alive(scheduler_pid), "the scheduler died"
    assert not internal, f"internal scheduler errors; reproduced alone by: {_show(reproduced)}"
    assert "internal error" not in log, log[log.index("internal error") - 2000 :][:6000]
    assert bad_answered == bad_sent > SCHEDULER_MESSAGES // 4
    assert log.count("bad message from peer") >= bad_sent  # each is also logged
    assert rss_after - rss_before < 100 * MiB


# -- raw TCP ----------------------------------------------------------------------------------


def zmtp_greeting(mechanism: bytes = b"NULL", major: int = 3) -> bytes:
    return (
        b"\xff" + b"\x00" * 8 + b"\x7f" + bytes([major, 0]) + mechanism.ljust(20, b"\x00")
        + b"\x00" + b"\x00" * 31
    )  # fmt: skip


def zmtp_command(name: bytes, body: bytes) -> bytes:
    data = bytes([len(name)]) + name + body
    return (
        b"\x04" + bytes([len(data)]) + data
        if len(data) < 256
        else (b"\x06" + struct.pack(">Q", len(data)) + data)
    )


@pytest.mark.timeout(90)
def test_raw_tcp_junk_does_not_hurt_the_scheduler(  # noqa: C901
    cluster_factory: Callable[..., LocalCluster],
) -> None:
    cluster = cluster_factory(n_workers=1, log_level="WARNING", tcp=True)
    scheduler_pid = cluster.scheduler_pid
    assert cluster.tcp_address is not None
    host, port = cluster.tcp_address.removeprefix("tcp://").rsplit(":", 1)
    rng = random.Random(SEED + 1)
    ready = zmtp_greeting() + zmtp_command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x06DEALER")

    def payload() -> bytes:
        kind = rng.randrange(10)
        if kind == 0:
            return b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n"
        if kind == 1:
            return zmtp_greeting() + rng.randbytes(rng.randrange(1, 5000))
        if kind == 2:
            return zmtp_greeting(rng.choice([b"CURVE", b"PLAIN", b"GSSAPI", b"\xff" * 20]))
        if kind == 3:
            return zmtp_greeting(major=rng.choice([0, 1, 2, 255])) + rng.randbytes(100)
        if kind == 4:  # a proper handshake, then a frame announcing 2**62 bytes
            return ready + b"\x02" + struct.pack(">Q", 1 << 62) + b"x" * 1000
        if kind == 5:  # a handshake, then a READY with garbage metadata
            return zmtp_greeting() + zmtp_command(b"READY", rng.randbytes(rng.randrange(300)))
        if kind == 6:  # a handshake, then a valid frame holding garbage
            return ready + b"\x00" + bytes([200]) + rng.randbytes(200)
        if kind == 7:
            return b"\xff" + rng.randbytes(rng.randrange(1, 64))  # half a greeting
        return rng.randbytes(rng.randrange(1, 20_000))

    connections = 0
    held: list[socket.socket] = []
    with Client(cluster.address) as client:
        client.wait_for_workers(1, timeout=20)
        assert client.submit(inc, 0).result(timeout=10) == 1
        rss_before = rss_bytes(scheduler_pid)
        for i in range(600):
            conn = socket.create_connection((host, int(port)), timeout=5)
            connections += 1
            try:
                conn.sendall(payload())
            except OSError:
                pass  # the scheduler may hang up on us mid-send: fine
            if i % 5 == 0 and len(held) < 100:
                held.append(conn)  # left open, half-spoken
            else:
                conn.close()
            if i % 50 == 0:
                assert client.submit(inc, i).result(timeout=10) == i + 1
        assert client.gather(client.map(inc, range(100)), timeout=30) == list(range(1, 101))
        for conn in held:
            conn.close()
        assert client.submit(inc, 41).result(timeout=10) == 42
    rss_after = rss_bytes(scheduler_pid)
    print(
        f"\nraw TCP: {connections} connections ({len(held)} held open), "
        f"scheduler RSS {rss_before / MiB:.1f} -> {rss_after / MiB:.1f} MiB"
    )
    assert alive(scheduler_pid)
    assert rss_after - rss_before < 50 * MiB


# -- the worker fuzz -----------------------------------------------------------------------------


@pytest.fixture
def fake_scheduler(context: zmq.Context, tmp_path: Any) -> Iterator[FakeScheduler]:
    fake = FakeScheduler(context, str(tmp_path / "worker.log"))
    try:
        fake.wait_registered()
        yield fake
    finally:
        fake.close()


@pytest.mark.timeout(90)
def test_worker_survives_a_hostile_scheduler(fake_scheduler: FakeScheduler) -> None:
    fake = fake_scheduler
    rng = random.Random(SEED + 2)
    fuzz = Hostile(rng)
    started = time.monotonic()
    assert fake.run_real_task("before", inc, 1) == 2
    sent = 0
    while sent < WORKER_MESSAGES:
        for _ in range(50):
            fake.send(fuzz.worker_frames())
            sent += 1
        fake.pump(0.0)
        assert fake.proc.poll() is None, f"the worker exited: {fake.log()[-3000:]}"
    # the worker runs its queue in order: this comes back once all junk before it is done
    assert fake.run_real_task("after", inc, 41, timeout=60) == 42
    assert fake.heartbeats_flowing(), "the worker stopped sending heartbeats"
    assert fake.proc.poll() is None
    log = fake.log()
    elapsed = time.monotonic() - started
    outcomes = Counter(o["op"] for o in fake.outcomes.values())
    print(
        f"\nworker fuzz (seed {SEED + 2:#x}): {sent} hostile messages in {elapsed:.1f} s, "
        f"outcomes {dict(outcomes)}, received {dict(fake.received)}, "
        f"'bad message' log lines {log.count('bad message from the scheduler')}, "
        f"worker RSS {rss_bytes(fake.proc.pid) / MiB:.1f} MiB"
    )
    assert "I/O loop failed" not in log and "worker process failed" not in log, log[-5000:]
    assert outcomes["task-failed"] > 100 and log.count("bad message from the scheduler") > 100


# -- regressions: inputs that once crashed or stalled something --------------------------


@pytest.fixture(scope="module")
def shared_cluster() -> Iterator[LocalCluster]:
    cluster = LocalCluster(1, 1, scheduler_args=FAST_SCHEDULER, log_level="WARNING")
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def raw_client(shared_cluster: LocalCluster, context: zmq.Context) -> Iterator[RawPeer]:
    peer = RawPeer(context, shared_cluster.address, b"raw-" + os.urandom(6))
    peer.send_messages(Message("hello-client", {"version": protocol.VERSION}))
    assert [m["op"] for m in peer.sync()] == ["welcome"]
    yield peer
    peer.close()


MISTYPED_SCHEDULES = {
    "seconds-str": {"kind": "every", "seconds": "60", "anchor": ANCHOR},
    "seconds-bool": {"kind": "every", "seconds": True, "anchor": ANCHOR},
    "seconds-huge": {"kind": "every", "seconds": 1e300, "anchor": ANCHOR},
    "seconds-inf": {"kind": "every", "seconds": float("inf"), "anchor": ANCHOR},
    "anchor-int": {"kind": "every", "seconds": 60, "anchor": 5},
    "cron-expr-int": {"kind": "crontab", "expr": 5, "tz": "UTC"},
    "cron-tz-none": {"kind": "crontab", "expr": "* * * * *", "tz": None},
    "at-int": {"kind": "at", "when": 1700000000},
}


@pytest.mark.parametrize("schedule", MISTYPED_SCHEDULES.values(), ids=MISTYPED_SCHEDULES.keys())
@pytest.mark.timeout(60)
def test_periodic_set_with_a_mistyped_schedule_is_an_error(
    raw_client: RawPeer, schedule: dict[str, Any]
) -> None:
    fields = {"name": "mistyped", "schedule": schedule, "options": {"queue": FUZZ_QUEUE},
              "misfire": "skip", "grace": 1.0, "allow_overlap": False, "ack": True}  # fmt: skip
    raw_client.send_messages(Message("periodic-set", fields, [[b"\x00f"], [b"\x00a"]]))
    replies = raw_client.sync()
    assert not _internal(replies), replies
    assert [m["op"] for m in replies] == ["error"] and replies[0].get("about") == "periodic-set"


@pytest.mark.timeout(60)
def test_periodic_job_with_a_bad_rate_limit_is_refused(raw_client: RawPeer) -> None:
    fields = {"name": "bad-rate", "schedule": {"kind": "every", "seconds": 3600, "anchor": ANCHOR},
              "options": {"queue": FUZZ_QUEUE, "rate_limit": "junk"}, "misfire": "skip",
              "grace": 1.0, "allow_overlap": False, "ack": True}  # fmt: skip
    raw_client.send_messages(Message("periodic-set", fields, [[b"\x00f"], [b"\x00a"]]))
    replies = raw_client.sync()
    raw_client.send_messages(
        Message("periodic", {"rid": 1, "action": "remove", "name": "bad-rate"})
    )
    raw_client.sync()
    assert [m["op"] for m in replies] == ["error"], replies


@pytest.mark.timeout(60)
def test_nan_expiry_does_not_stall_the_timers(
    cluster_factory: Callable[..., LocalCluster], context: zmq.Context
) -> None:
    cluster = cluster_factory(n_workers=1, log_level="WARNING")
    peer = RawPeer(context, cluster.address, b"nan-" + os.urandom(6))
    try:
        peer.send_messages(Message("hello-client", {"version": protocol.VERSION}))
        peer.sync()
        task = {"deps": [], "priority": 0, "retries": 0}
        poison = Message("submit", {**task, "key": "poison", "queue": FUZZ_QUEUE,
                                    "expires": float("nan")}, [[b"\x00f"], [b"\x00a"]])  # fmt: skip
        later = Message(
            "submit",
            {**task, "key": "later", "queue": "default", "eta": time.time() + 0.2},
            [function_payload(inc), args_payload(1)],
        )
        peer.send_messages(poison)
        peer.sync()
        peer.send_messages(later)
        deadline = time.monotonic() + 10
        results = []
        while time.monotonic() < deadline and not results:
            batch = peer.recv(max(0.0, deadline - time.monotonic())) or []
            results = [m for m in batch if m.get("op") == "result" and m["key"] == "later"]
        assert results, "a task with an eta 0.2 s ahead did not run within 10 s"
    finally:
        peer.close()


@pytest.mark.timeout(90)
def test_revoking_unknown_ids_keeps_memory_bounded(
    cluster_factory: Callable[..., LocalCluster], context: zmq.Context
) -> None:
    cluster = cluster_factory(n_workers=1, log_level="WARNING")
    peer = RawPeer(context, cluster.address, b"revoker-" + os.urandom(6))
    max_revoked = 100_000  # SchedulerConfig.max_revoked
    try:
        peer.send_messages(Message("hello-client", {"version": protocol.VERSION}))
        peer.sync()
        for batch in range(25):  # 250,000 distinct ids
            peer.send([header([{"op": "revoke", "key": f"r{batch}-{i}"} for i in range(10_000)])])
            assert not peer.sync(timeout=30)
        peer.send_messages(Message("info", {"rid": 7}))
        info = peer.sync()[0]["info"]
    finally:
        peer.close()
    print(f"\nafter 250,000 revokes of unknown ids: {info['timers']} timers")
    assert info["timers"] <= max_revoked + 1_000


MALFORMED_RUNS = {
    "deps-without-payloads": ({"deps": ["a", "b"]}, 2),
    "no-payloads": ({"deps": []}, 0),
    "function-only": ({"deps": []}, 1),
}


@pytest.mark.parametrize("fields,count", MALFORMED_RUNS.values(), ids=MALFORMED_RUNS.keys())
@pytest.mark.timeout(60)
def test_worker_survives_a_malformed_run(
    fake_scheduler: FakeScheduler, fields: dict[str, Any], count: int
) -> None:
    fake = fake_scheduler
    fake.send(protocol.encode([Message("run", {"key": "bad", **fields}, [[b"\x00"]] * count)]))
    assert fake.heartbeats_flowing(), "the worker stopped sending heartbeats"
    assert fake.run_real_task("after", inc, 1) == 2
    assert fake.proc.poll() is None


@pytest.mark.timeout(60)
def test_worker_survives_a_welcome_with_an_absurd_heartbeat_interval(
    fake_scheduler: FakeScheduler,
) -> None:
    fake = fake_scheduler
    fake.welcome(heartbeat_interval=1e300)
    fake.pump(0.5)
    assert fake.run_real_task("after", inc, 1) == 2
    assert fake.proc.poll() is None


@pytest.mark.timeout(60)
def test_worker_survives_tiny_soft_time_limits(fake_scheduler: FakeScheduler) -> None:
    fake = fake_scheduler
    limits = [-1.0, 0.0, 1e-6, 1e-4, 1e-3]
    for i in range(2_000):
        head = {"op": "run", "key": f"soft-{i}", "deps": [], "soft_time_limit": limits[i % 5],
                "p": [[pickle.dumps(sum)], [pickle.dumps((([1] * 2000,), {}))]]}  # fmt: skip
        fake.send([header([head])])
        if i % 100 == 0:
            fake.pump(0.01)
            if fake.proc.poll() is not None:
                break
    deadline = time.monotonic() + 30
    while fake.proc.poll() is None and len(fake.outcomes) < 2_000:
        assert time.monotonic() < deadline, "the worker hangs"
        fake.pump(0.1)
    assert fake.proc.poll() is None, f"the worker exited: {fake.log()[-3000:]}"
    assert fake.run_real_task("after", inc, 1) == 2


def _next_from_worker(fake: FakeScheduler, wanted: Callable[[Message], bool]) -> Message:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if fake.router.poll(100):
            _, *frames = fake.router.recv_multipart()
            for msg in protocol.decode(frames):
                if wanted(msg):
                    return msg
    raise AssertionError(f"the worker did not send it in 15 s; {fake.log()[-3000:]}")


@pytest.mark.timeout(60)
def test_a_run_that_crosses_the_workers_leaving_is_handed_back(
    fake_scheduler: FakeScheduler,
) -> None:
    """A recycle or SIGTERM and a 'run' cross: the worker has handed back its queue
    when the task arrives.  It must hand that one back too, and still leave."""
    fake = fake_scheduler
    busy = Message("run", {"key": "busy", "deps": [], "name": "sleep"},
                   [function_payload(time.sleep), args_payload(1.0)])  # fmt: skip
    fake.send(protocol.encode([busy]))
    _next_from_worker(fake, lambda m: m.op == "heartbeat" and m.get("running") == 1)
    fake.send(protocol.encode([Message("shutdown")]))
    leaving = _next_from_worker(fake, lambda m: m.op == "worker-leaving")
    assert leaving["keys"] == []  # the busy task runs on
    late = Message("run", {"key": "late", "deps": [], "name": "inc"},
                   [function_payload(inc), args_payload(1)])  # fmt: skip
    fake.send(protocol.encode([late]))
    handed_back = _next_from_worker(fake, lambda m: m.op == "worker-leaving")
    assert handed_back["keys"] == ["late"]
    assert _next_from_worker(fake, lambda m: m.op in ("task-done", "goodbye"))["key"] == "busy"
    _next_from_worker(fake, lambda m: m.op == "goodbye")
    assert fake.proc.wait(10) == 0
