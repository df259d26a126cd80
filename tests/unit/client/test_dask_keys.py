"""Dask keys as Celeriac keys, and the nesting of requested keys (no dask needed)."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac.client.dask_keys import celeriac_key, flatten, repack


@pytest.mark.parametrize(
    ("dask_key", "expected"),
    [
        ("x-abc", "x-abc"),
        (("x-abc", 0, 1), "('x-abc', 0, 1)"),
        (("x", ("nested", 2)), "('x', ('nested', 2))"),
        (b"raw", "b'raw'"),
        (7, "7"),
        (1.5, "1.5"),
    ],
)
def test_celeriac_key(dask_key: Any, expected: str) -> None:
    assert celeriac_key(dask_key) == expected
    assert celeriac_key(dask_key) == celeriac_key(dask_key)  # deterministic


def test_distinct_tuple_keys_stay_distinct() -> None:
    keys = [("x", i, j) for i in range(20) for j in range(20)] + [("x", "0", 0)]
    assert len({celeriac_key(k) for k in keys}) == len(keys)


def test_a_key_that_is_no_dask_key_is_refused() -> None:
    with pytest.raises(TypeError, match="not a Dask key"):
        celeriac_key(["a", "list"])


def test_flatten_nests_lists_only() -> None:
    keys = [["a", ("b", 0)], [[("c", 1)]], "d"]
    assert list(flatten(keys)) == ["a", ("b", 0), ("c", 1), "d"]
    assert list(flatten(("b", 0))) == [("b", 0)]  # a tuple is a key, not a nesting


def test_repack_keeps_the_shape() -> None:
    values = {"a": 1, ("b", 0): 2, ("c", 1): 3, "d": 4}
    assert repack([["a", ("b", 0)], [[("c", 1)]], "d"], values.__getitem__) == [[1, 2], [[3]], 4]
    assert repack(("b", 0), values.__getitem__) == 2
    assert repack([], values.__getitem__) == []
