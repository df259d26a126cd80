"""All (de)serialization of user objects lives here.

Objects travel as a *payload*: a list of frames, the first the pickle stream
(protocol 5) and the rest its out-of-band buffers, so a numpy array's memory
is its own frame and is sent without a copy.

Exceptions travel with their traceback (tblib).  An exception that cannot be
pickled becomes a :class:`RemoteError` carrying its type name, message and
traceback text, so the caller always learns what went wrong.
"""

from __future__ import annotations

import pickle
import threading
import traceback
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import cloudpickle
from tblib import Traceback

from celeriac.wire.protocol import Frame, buffer_of

#: Buffers smaller than this are kept in-band: a frame costs more than a copy.
OOB_THRESHOLD = 64 * 1024


class RemoteError(Exception):
    """A remote exception whose original type could not travel.

    ``type_name`` is the original class's name, ``message`` its ``str()``,
    ``traceback_text`` the formatted remote traceback (shown by ``str()``).
    """

    def __init__(self, type_name: str, message: str, traceback_text: str = "") -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return RemoteError, (self.type_name, self.message, self.traceback_text)

    def __str__(self) -> str:
        if self.traceback_text:
            return f"{self.type_name}: {self.message}\n\nRemote traceback:\n{self.traceback_text}"
        return f"{self.type_name}: {self.message}"


class SerializationError(Exception):
    """An object (argument or result) that could not be pickled or unpickled."""


def dumps(obj: Any) -> list[Frame]:
    """Serialize ``obj`` into a payload: pickle bytes, then large buffers."""
    buffers: list[pickle.PickleBuffer] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes < OOB_THRESHOLD:
            return True  # serialize in-band
        buffers.append(buf)
        return False

    try:
        head = cloudpickle.dumps(obj, protocol=5, buffer_callback=keep_large)
    except Exception as exc:
        raise SerializationError(
            f"could not serialize {type(obj).__name__} object: {type(exc).__name__}: {exc}"
        ) from exc
    return [head, *(b.raw() for b in buffers)]


def dumps_plain(obj: Any) -> list[Frame]:
    """:func:`dumps` for objects made only of builtin scalars: the C pickler, no cloudpickle.

    Only for such objects: plain pickle would send a ``__main__`` function by
    reference, which the worker cannot resolve.
    """
    return [pickle.dumps(obj, protocol=5)]


def loads(payload: Sequence[Frame]) -> Any:
    """Inverse of :func:`dumps`; frames may be bytes, memoryviews or zmq Frames."""
    if not payload:
        raise SerializationError("empty payload")
    head, *buffers = payload
    try:
        return pickle.loads(buffer_of(head), buffers=[buffer_of(b) for b in buffers])
    except Exception as exc:
        raise SerializationError(f"could not deserialize: {type(exc).__name__}: {exc}") from exc


class FunctionCache:
    """Pickle each function once.

    cloudpickle costs several microseconds per call (far more for a function
    defined in ``__main__``, which travels by value); a workload submits the
    same function thousands of times.  Keyed by identity, held weakly where the
    object allows it so a cache entry never keeps a function alive.  ``maxsize``
    bounds the entries; the oldest goes first (a hit does not refresh one).

    The bytes are those of the first pickling: a ``__main__`` function's
    globals, captured by value then, are not pickled again for later calls.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._by_id: OrderedDict[int, tuple[Any, bytes]] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def dumps(self, fn: Any) -> bytes:
        """``fn`` pickled with cloudpickle, from the cache when this object was seen before.

        An object that cannot be weakly referenced (a bound method of a builtin)
        is pickled each time, never cached.  Thread-safe.
        """
        key = id(fn)
        with self._lock:
            hit = self._by_id.get(key)
            if hit is not None and hit[0]() is fn:
                return hit[1]
        data = cloudpickle.dumps(fn, protocol=5)
        try:
            ref = weakref.ref(fn)
        except TypeError:
            return data  # e.g. a builtin bound method: cheap to pickle anyway
        with self._lock:
            self._by_id[key] = (ref, data)
            if len(self._by_id) > self._maxsize:
                self._by_id.popitem(last=False)
        return data


class LoadedFunctions:
    """Unpickled functions on the worker, keyed by their pickled bytes.

    ``maxsize`` bounds the entries; the oldest goes first (a hit does not refresh one).
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._cache: OrderedDict[bytes, Any] = OrderedDict()
        self._maxsize = maxsize
        self._lock = threading.Lock()

    def load(self, frame: Frame) -> Any:
        """The function pickled in ``frame``, unpickled once per distinct bytes.

        Raises :class:`SerializationError` when it will not unpickle (e.g. its
        module cannot be imported here).  Thread-safe.
        """
        data = bytes(buffer_of(frame))
        with self._lock:
            fn = self._cache.get(data)
            if fn is not None:
                return fn
        fn = loads([data])
        with self._lock:
            self._cache[data] = fn
            if len(self._cache) > self._maxsize:
                self._cache.popitem(last=False)
        return fn


def dumps_exception(exc: BaseException) -> list[Frame]:
    """Payload for an exception and its traceback.

    Falls back to a :class:`RemoteError` when the exception itself will not
    pickle (or not unpickle: many exception classes break the round trip).
    """
    tb = Traceback(exc.__traceback__).to_dict() if exc.__traceback__ else None
    try:
        payload = dumps((exc, tb))
        loads(payload)  # round-trip now, so the failure is reported, not hidden
        return payload
    except Exception:
        fallback = RemoteError(type(exc).__name__, str(exc), format_traceback(exc))
        return dumps((fallback, None))


def loads_exception(payload: Sequence[Frame]) -> BaseException:
    """The exception from :func:`dumps_exception`, with its remote traceback attached."""
    exc, tb = loads(payload)
    if tb is not None:
        try:
            return exc.with_traceback(Traceback.from_dict(tb).as_traceback())
        except Exception:
            return exc
    return exc


def format_traceback(exc: BaseException) -> str:
    """``exc`` and its traceback (and chained causes) as Python prints them."""
    tb: TracebackType | None = exc.__traceback__
    return "".join(traceback.format_exception(type(exc), exc, tb))
