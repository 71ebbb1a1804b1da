"""Values the JSON codec refuses, shared by the tests of every layer that must survive them
(codec, runtime, DataFrames, renderers, monitor)."""

from __future__ import annotations

from typing import Any, Callable


def deep_list(levels: int = 100_000) -> list:
    """A list nested ``levels`` deep: past any recursion limit at the default."""
    value: list = []
    for _ in range(levels):
        value = [value]
    return value


def circular_list() -> list:
    value: list = [1]
    value.append(value)
    return value


#: name -> (a maker of a fresh value, the codec's ``JsonValueError.kind`` for it)
BAD_VALUES: dict[str, tuple[Callable[[], Any], str]] = {
    "deep": (deep_list, "too_deep"),
    "deep_in_object": (lambda: {"a": deep_list()}, "too_deep"),
    "nan": (lambda: float("nan"), "out_of_range"),
    "inf": (lambda: [float("inf")], "out_of_range"),
    "huge_int": (lambda: 10**5000, "out_of_range"),
    "object": (object, "unsupported"),
    "tuple_key": (lambda: {(1, 2): 3}, "unsupported"),
    "circular": (circular_list, "unsupported"),
}

#: one maker per kind
ONE_PER_KIND: dict[str, Callable[[], Any]] = {
    "too_deep": deep_list,
    "out_of_range": lambda: 10**5000,
    "unsupported": object,
}
