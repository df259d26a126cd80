"""The pure half of ``Client.scatter``: shapes, content keys, placement."""

from __future__ import annotations

from celeriac.client import scatter


def test_the_shape_of_what_is_scattered_comes_back() -> None:
    assert scatter.items([1, 2]) == ("list", [(None, 1), (None, 2)])
    assert scatter.items((1,)) == ("tuple", [(None, 1)])
    assert scatter.items({"a": 1}) == ("dict", [("a", 1)])
    assert scatter.items(5) == ("one", [(None, 5)])
    assert scatter.shaped("one", ["k"], ["f"]) == "f"
    assert scatter.shaped("tuple", ["k", "j"], ["f", "g"]) == ("f", "g")
    assert scatter.shaped("dict", ["a", "b"], ["f", "g"]) == {"a": "f", "b": "g"}
    assert scatter.shaped("set", ["a"], ["f"]) == ["f"]  # futures of a set: a list, as Dask


def test_equal_data_gets_one_key_and_different_data_another() -> None:
    one = scatter.content_key(3, [b"same"])
    assert one == scatter.content_key(3, [b"same"])
    assert one != scatter.content_key(3, [b"other"])
    assert one.startswith("int-") and len(one) == 4 + 32


def test_keys_go_round_robin_from_the_worker_keeping_least() -> None:
    placement = scatter.spread(["a", "b", "c"], {"tcp://x:1": 100, "tcp://y:2": 0})
    assert placement == {"tcp://y:2": ["a", "c"], "tcp://x:1": ["b"]}
