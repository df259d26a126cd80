"""Serialization of user objects, exceptions and functions; futures inside arguments."""

from __future__ import annotations

import gc
import threading
import traceback
import weakref
from typing import Any

import numpy as np
import pytest
import zmq

from celeriac.wire.refs import KEEP, TaskRef, replace, resolve
from celeriac.wire.serialize import (
    OOB_THRESHOLD,
    FunctionCache,
    LoadedFunctions,
    RemoteError,
    SerializationError,
    dumps,
    dumps_exception,
    loads,
    loads_exception,
)

# -- dumps / loads -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [None, 1, "text", b"bytes", [1, (2, {"a": {3}})], {"k": frozenset({1})}, range(3)],
    ids=repr,
)
def test_round_trip(obj: Any) -> None:
    payload = dumps(obj)
    assert len(payload) == 1
    assert loads(payload) == obj


def test_round_trip_of_local_function_by_value() -> None:
    offset = 10

    def add(x: int) -> int:
        return x + offset

    assert loads(dumps(add))(1) == 11


@pytest.mark.parametrize("order", ["C", "F"])
def test_large_array_travels_as_its_own_frame(order: str) -> None:
    arr = np.arange(OOB_THRESHOLD // 8 * 2, dtype=np.float64).reshape(-1, 4, order=order)
    payload = dumps(arr)
    assert len(payload) == 2
    assert np.shares_memory(np.frombuffer(payload[1], dtype=arr.dtype), arr)  # no copy out
    back = loads(payload)
    np.testing.assert_array_equal(back, arr)
    assert back.flags[f"{order}_CONTIGUOUS"]


def test_loaded_array_uses_the_frame_memory() -> None:
    arr = np.zeros(OOB_THRESHOLD, dtype=np.uint8)
    head, buf = dumps(arr)
    frame = bytearray(buf)  # as if it had just arrived from the network
    back = loads([head, frame])
    frame[0] = 42
    assert back[0] == 42  # the array is a view of the frame, not a copy


@pytest.mark.parametrize(("nbytes", "frames"), [(OOB_THRESHOLD - 1, 1), (OOB_THRESHOLD, 2)])
def test_out_of_band_threshold(nbytes: int, frames: int) -> None:
    assert len(dumps(np.ones(nbytes, dtype=np.uint8))) == frames


def test_loads_accepts_memoryviews_and_zmq_frames() -> None:
    arr = np.arange(OOB_THRESHOLD, dtype=np.int16)
    payload = dumps({"a": arr})
    for wrap in (memoryview, zmq.Frame):
        back = loads([wrap(bytes(f)) for f in payload])
        np.testing.assert_array_equal(back["a"], arr)


def test_unpicklable_object_raises_clear_error() -> None:
    with pytest.raises(SerializationError, match="could not serialize lock object: TypeError"):
        dumps(threading.Lock())


@pytest.mark.parametrize("payload", [[], [b"not a pickle"]], ids=["empty", "garbage"])
def test_loads_of_bad_payload_raises(payload: list[bytes]) -> None:
    with pytest.raises(SerializationError, match=r"empty payload|could not deserialize"):
        loads(payload)


# -- exceptions --------------------------------------------------------------------------


def _refuse_to_rebuild(message: str) -> Exception:
    raise TypeError(f"cannot rebuild {message!r}")


class CannotUnpickle(Exception):
    """Pickles fine, but rebuilding it fails.

    Not the usual custom ``__init__`` without ``__reduce__``: importing
    ``distributed`` runs tblib's ``pickling_support.install()``, which repairs
    that case for every exception class defined by then (CI failed on it).
    """

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return _refuse_to_rebuild, (str(self),)


def original_failing_function(exc: BaseException) -> None:
    raise exc


def raised(exc: BaseException) -> BaseException:
    try:
        original_failing_function(exc)
    except BaseException as caught:
        return caught
    raise AssertionError("did not raise")


def frame_names(exc: BaseException) -> list[str]:
    return [frame.name for frame in traceback.extract_tb(exc.__traceback__)]


def test_exception_round_trip_keeps_type_message_and_traceback() -> None:
    back = loads_exception(dumps_exception(raised(KeyError("missing"))))
    assert type(back) is KeyError
    assert back.args == ("missing",)
    assert "original_failing_function" in frame_names(back)


def test_exception_never_raised_has_no_traceback() -> None:
    back = loads_exception(dumps_exception(ValueError("plain")))
    assert type(back) is ValueError and str(back) == "plain"
    assert back.__traceback__ is None


def _with_lock_attribute() -> Exception:
    exc = ValueError("holds a lock")
    exc.lock = threading.Lock()  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize(
    ("make", "type_name", "message"),
    [
        (lambda: CannotUnpickle("x/y"), "CannotUnpickle", "x/y"),
        (_with_lock_attribute, "ValueError", "holds a lock"),
    ],
    ids=["cannot-unpickle", "cannot-pickle"],
)
def test_exception_that_cannot_travel_becomes_remote_error(make, type_name, message) -> None:
    back = loads_exception(dumps_exception(raised(make())))
    assert type(back) is RemoteError
    assert (back.type_name, back.message) == (type_name, message)
    assert "original_failing_function" in back.traceback_text
    assert f"{type_name}: {message}" in str(back)
    assert "Remote traceback:" in str(back)


def test_remote_error_pickles() -> None:
    err = RemoteError("Odd", "msg", "tb text")
    back = loads(dumps(err))
    assert (back.type_name, back.message, back.traceback_text) == ("Odd", "msg", "tb text")
    assert str(RemoteError("Odd", "msg")) == "Odd: msg"


# -- function caches ---------------------------------------------------------------------


def make_function(value: int) -> Any:
    def fn() -> int:
        return value

    return fn


def test_function_cache_returns_same_bytes_for_same_function() -> None:
    cache = FunctionCache()
    fn = make_function(1)
    first = cache.dumps(fn)
    assert cache.dumps(fn) is first
    assert loads([first])() == 1
    assert loads([cache.dumps(make_function(2))])() == 2  # a different function


def test_function_cache_does_not_keep_functions_alive() -> None:
    cache = FunctionCache()
    fn = make_function(1)
    cache.dumps(fn)
    ref = weakref.ref(fn)
    del fn
    gc.collect()
    assert ref() is None


def test_function_cache_handles_objects_without_weakrefs() -> None:
    cache = FunctionCache()
    assert loads([cache.dumps(len)]) is len  # builtins cannot be weakly referenced


def test_function_cache_is_bounded() -> None:
    cache = FunctionCache(maxsize=2)
    functions = [make_function(i) for i in range(5)]
    for fn in functions:
        cache.dumps(fn)
    assert len(cache._by_id) == 2
    assert [loads([cache.dumps(fn)])() for fn in functions] == [0, 1, 2, 3, 4]


def test_loaded_functions_caches_by_content() -> None:
    loaded = LoadedFunctions()
    data = FunctionCache().dumps(make_function(7))
    fn = loaded.load(data)
    assert fn() == 7
    assert loaded.load(memoryview(data)) is fn
    assert loaded.load(zmq.Frame(data)) is fn


def test_loaded_functions_is_bounded() -> None:
    loaded = LoadedFunctions(maxsize=1)
    a, b = (dumps(make_function(i))[0] for i in range(2))
    fa = loaded.load(a)
    loaded.load(b)
    assert loaded.load(a) is not fa  # evicted, so loaded afresh
    assert loaded.load(a)() == 0


# -- refs --------------------------------------------------------------------------------


def test_resolve_nested_containers() -> None:
    a, b = TaskRef("a"), TaskRef("b")
    obj = ([a, (b, {"k": a})], {a, 7}, {"x": [b], "y": frozenset({b})})
    resolved = resolve(obj, {"a": 1, "b": "two"})
    assert resolved == ([1, ("two", {"k": 1})], {1, 7}, {"x": ["two"], "y": frozenset({"two"})})
    assert type(resolved[0][1]) is tuple and type(resolved[2]["y"]) is frozenset


def test_resolve_dependency_whose_value_is_none() -> None:
    ref = TaskRef("n")
    assert resolve([ref, {"k": ref}, (ref,)], {"n": None}) == [None, {"k": None}, (None,)]
    assert resolve(ref, {"n": None}) is None


def test_containers_without_refs_are_not_copied() -> None:
    inner = {"k": [1, 2]}
    obj = [inner, (3, 4), {5}]
    assert resolve(obj, {}) is obj
    mixed = [inner, TaskRef("a")]
    out = resolve(mixed, {"a": 0})
    assert out == [inner, 0] and out[0] is inner


def test_replace_collects_refs_like_the_client() -> None:
    class Fut:
        def __init__(self, key: str) -> None:
            self.key = key

    found: list[str] = []

    def swap(obj: Any) -> Any:
        if not isinstance(obj, Fut):
            return KEEP
        found.append(obj.key)
        return TaskRef(obj.key)

    out = replace(((Fut("a"), [Fut("b")]), {"kw": {"x": Fut("c")}}), swap)
    assert found == ["a", "b", "c"]
    assert repr(out[0][0]) == "TaskRef('a')"
    assert [r.key for r in out[0][1]] == ["b"]
    assert loads(dumps(out))[1]["kw"]["x"].key == "c"


def test_dict_keys_and_other_types_are_leaves() -> None:
    ref = TaskRef("a")

    class Box(list):  # a subclass is not walked into
        pass

    box = Box([ref])
    obj = {ref: "value", "box": box}
    out = resolve(obj, {"a": 1})
    assert out is obj and out["box"][0] is ref
