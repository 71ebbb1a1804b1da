"""Validation predicates shared by every module that checks caller or wire input.

Each returns a bool or the checked value, and raises only the error class its caller names, so a
module keeps its own error vocabulary (``WireFormatError`` for documents, ``InvalidObservationError``
for handle arguments, ``InvalidQueuedWorkError`` for the queue) while the rules live here once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any, TypeVar

from ._cursor import U64_MAX
from ._json import short_repr

__all__ = ["is_uint", "is_utf8_str", "enum_member", "id_tuple"]

E = TypeVar("E", bound=enum.Enum)


def is_uint(value: Any) -> bool:
    """An ``int`` (not ``bool``) in the unsigned 64-bit range ``0..2**64-1``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U64_MAX


def is_utf8_str(value: Any) -> bool:
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
    if isinstance(ids, (str, bytes, bytearray, memoryview)) or not isinstance(ids, Iterable):
        raise error(f"{field} must be a list of id strings, not {type(ids).__name__} {short_repr(ids)}")
    out = tuple(ids)
    for item in out:
        if not is_utf8_str(item) or not item:
            raise error(f"{field} must hold non-empty UTF-8 strings, got {short_repr(item)}")
    return out
