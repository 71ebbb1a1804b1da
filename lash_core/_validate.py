"""Validation predicates shared by every module that checks caller or wire input.

Each returns a bool or the checked value, and raises only the error class its caller names, so a
module keeps its own error vocabulary (``WireFormatError`` for documents, ``InvalidObservationError``
for handle arguments, ``InvalidQueuedWorkError`` for the queue) while the rules live here once.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from typing import Any, Callable, TypeGuard, TypeVar

from ._cursor import U64_MAX
from ._json import short_repr

__all__ = [
    "is_uint",
    "is_number",
    "is_utf8_str",
    "repair_text",
    "enum_member",
    "id_tuple",
    "expect_field",
]

E = TypeVar("E", bound=enum.Enum)


def is_uint(value: Any) -> TypeGuard[int]:
    """An ``int`` (not ``bool``) in the unsigned 64-bit range ``0..2**64-1``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def is_utf8_str(value: Any) -> TypeGuard[str]:
    """A ``str`` that encodes as UTF-8: no lone surrogates (which JSON escapes and Python's
    ``surrogateescape`` can produce, and which every store and frontend message would refuse)."""
    if not isinstance(value, str):
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def repair_text(value: str) -> str:
    """``value`` with every lone surrogate replaced by U+FFFD (and surrogate pairs joined), for
    free text that comes from outside (a model's deltas, a provider's error): kept, readable, and
    encodable as UTF-8 everywhere it travels."""
    if value.isascii() or is_utf8_str(value):
        return value
    return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def enum_member(cls: type[E], value: Any, what: str, error: type[Exception]) -> E:
    """``cls(value)`` for a member or its string value; else ``error`` naming ``what`` and the
    allowed values. Never lets ``Enum`` build a message from the repr of a huge value."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        try:
            return cls(value)
        except ValueError:
            pass
    allowed = ", ".join(str(member.value) for member in cls)
    raise error(f"{what} must be one of {allowed}; got {short_repr(value)}")


def id_tuple(ids: Any, field: str, error: type[Exception]) -> tuple[str, ...]:
    """``ids`` as a tuple of non-empty UTF-8 strings, else ``error`` naming ``field``.

    A bare ``str`` (or bytes) is refused: iterating it would store its characters as ids. Any
    other iterable is read exactly once, so a generator is not consumed by the check."""
    if isinstance(ids, (str, bytes, bytearray, memoryview, Mapping, set, frozenset)) or not isinstance(
        ids, Iterable
    ):  # a mapping gives its keys and a set no order: neither is a list of ids
        raise error(f"{field} must be a list of id strings, not {type(ids).__name__} {short_repr(ids)}")
    out = tuple(ids)
    for item in out:
        if not is_utf8_str(item) or not item:
            raise error(f"{field} must hold non-empty UTF-8 strings, got {short_repr(item)}")
    return out


def is_number(value: Any) -> bool:
    """A JSON number Rust reads as a finite ``f64`` (an int too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


#: field kind -> (predicate, what the message says the field must be)
FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (is_utf8_str, "a UTF-8 string"),
    "uint": (is_uint, "an unsigned 64-bit integer"),
    "number": (is_number, "a finite number"),
    "bool": (lambda v: isinstance(v, bool), "a boolean"),
    "str_list": (
        lambda v: isinstance(v, (list, tuple)) and all(is_utf8_str(x) for x in v),
        "a list of UTF-8 strings",
    ),
}


def expect_field(kind: str, name: str, value: Any, error: type[Exception]) -> Any:
    """``value`` when it is a valid ``kind`` (a key of ``FIELD_CHECKS``); else ``error`` naming
    the field and what it must be."""
    check, what = FIELD_CHECKS[kind]
    if not check(value):
        raise error(f"field `{name}` must be {what}, got {short_repr(value)}")
    return value
