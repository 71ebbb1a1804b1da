"""The one JSON codec: every place in lash_core and lash_nb that encodes, decodes or summarises a
value goes through here.

Rules:

* ``encode_json`` is ``json.dumps`` with the failures a caller cannot prevent turned into one typed
  error, ``JsonValueError``, whose ``kind`` says which rule failed:
    - ``too_deep``: nested deeper than the interpreter can recurse (``RecursionError``);
    - ``unsupported``: a value or key JSON has no form for (``TypeError``), or a circular reference;
    - ``out_of_range``: NaN or an infinity when ``allow_nan`` is off, an int too long to write in
      decimal (Python's digit limit), an ``OverflowError``.
  ``RecursionError`` is caught here because a value is *data*: a tool may return a list nested
  100,000 levels deep, and that must become a failed tool output, never a crashed turn.
* ``decode_json`` is ``json.loads`` with the same treatment plus ``malformed`` (not JSON) and
  ``not_utf8`` (bytes that are not strict UTF-8, or an escape that decodes to a lone surrogate).
* Both refuse lone surrogates (``not_utf8``): JSON travels as UTF-8, and Rust's serde_json refuses
  them, so text the codec writes can always be sent and read back.
* ``to_plain_json`` round-trips a value through the codec: the result holds only ``dict``, ``list``,
  ``str``, ``int``, ``float``, ``bool`` and ``None``, and is safe to keep, compare and encode again.
* ``json_summary`` never raises: a bounded one-line summary for tables and tooltips, or, for a
  value the codec refuses, a fixed fallback naming the reason (``summary_fallback``). Callers that
  count such values ask ``encode_json`` directly.
* ``short_repr`` is a ``repr`` bounded in depth and length (``reprlib``), for error messages and
  logs about values that may be huge or deeply nested.
"""

from __future__ import annotations

import enum
import json
import re
import reprlib
from typing import Any, Callable

from ._errors import JsonValueError

__all__ = [
    "JsonValueKind",
    "encode_json",
    "decode_json",
    "to_plain_json",
    "json_summary",
    "summary_fallback",
    "short_repr",
    "truncate",
    "error_message",
]


class JsonValueKind(enum.StrEnum):
    """Why a value could not be encoded or decoded (``JsonValueError.kind``)."""

    TOO_DEEP = "too_deep"
    UNSUPPORTED = "unsupported"
    OUT_OF_RANGE = "out_of_range"
    MALFORMED = "malformed"
    NOT_UTF8 = "not_utf8"


def _classify(err: BaseException) -> JsonValueError:
    if isinstance(err, RecursionError):
        return JsonValueError(JsonValueKind.TOO_DEEP, "value is nested too deeply to encode as JSON")
    if isinstance(err, TypeError):
        return JsonValueError(JsonValueKind.UNSUPPORTED, str(err))
    message = str(err)
    if isinstance(err, ValueError) and "ircular reference" in message:
        return JsonValueError(JsonValueKind.UNSUPPORTED, message)
    return JsonValueError(JsonValueKind.OUT_OF_RANGE, message or type(err).__name__)


def encode_json(
    value: Any,
    *,
    allow_nan: bool = False,
    default: Callable[[Any], Any] | None = None,
    ensure_ascii: bool = False,
    separators: tuple[str, str] | None = (",", ":"),
    sort_keys: bool = False,
    indent: int | None = None,
) -> str:
    """``value`` as JSON text (compact by default; ``indent`` spaces per level for a detail view).
    Raises ``JsonValueError`` (``too_deep``, ``unsupported`` or ``out_of_range``) instead of
    ``RecursionError``/``TypeError``/``ValueError``/``OverflowError``."""
    if indent is not None and separators == (",", ":"):
        separators = (",", ": ")
    try:
        text = json.dumps(
            value,
            allow_nan=allow_nan,
            default=default,
            ensure_ascii=ensure_ascii,
            separators=separators,
            sort_keys=sort_keys,
            indent=indent,
        )
    except (RecursionError, TypeError, ValueError, OverflowError) as err:
        raise _classify(err) from None
    except Exception as err:  # a container whose own methods fail (a dict subclass's items())
        raise JsonValueError(
            JsonValueKind.UNSUPPORTED, f"value could not be read: {type(err).__name__}"
        ) from None
    if not text.isascii():
        _check_utf8(text)
    return text


def _check_utf8(text: str) -> None:
    """JSON travels as UTF-8: a lone surrogate (a non-UTF-8 file name from ``os.listdir``, a
    ``\\udXXX`` escape) has no encoding there, and Rust's serde_json refuses it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise JsonValueError(
            JsonValueKind.NOT_UTF8, f"a string holds a lone surrogate at character {err.start}"
        ) from None


def decode_json(data: str | bytes | bytearray) -> Any:
    """Parse one JSON document. Raises ``JsonValueError``: ``not_utf8`` for bytes that are not
    strict UTF-8, ``malformed`` for text that is not JSON (with line and column), ``too_deep``,
    ``out_of_range`` (an integer beyond Python's digit limit)."""
    if isinstance(data, (bytes, bytearray)):
        try:
            data = bytes(data).decode("utf-8")
        except UnicodeDecodeError as err:
            raise JsonValueError(
                JsonValueKind.NOT_UTF8, f"not valid UTF-8 at byte {err.start}: {err.reason}"
            ) from None
    if not isinstance(data, str):
        raise JsonValueError(
            JsonValueKind.UNSUPPORTED, f"JSON text must be str or bytes, not {type(data).__name__}"
        )
    try:
        value = json.loads(data)
    except json.JSONDecodeError as err:
        raise JsonValueError(
            JsonValueKind.MALFORMED, f"{err.msg} (line {err.lineno}, column {err.colno})"
        ) from None
    except RecursionError:
        raise JsonValueError(
            JsonValueKind.TOO_DEEP, "document is nested too deeply to decode"
        ) from None
    except (ValueError, OverflowError) as err:
        raise JsonValueError(JsonValueKind.OUT_OF_RANGE, str(err)) from None
    if not data.isascii() and _SURROGATE_ESCAPE.search(data) is None:
        _check_utf8(data)  # raw lone surrogates in the text itself
    elif _SURROGATE_ESCAPE.search(data) is not None:
        encode_json(value, allow_nan=True)  # an escape that decoded to a lone surrogate
    return value


#: ``\udXXX``: an escaped surrogate, which decodes to a lone surrogate unless it is half of a pair
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def to_plain_json(value: Any) -> Any:
    """A deep copy of ``value`` made only of plain JSON types; raises ``JsonValueError``."""
    return decode_json(encode_json(value))


def truncate(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending in ``…`` when cut."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_message(err: BaseException, limit: int = 4000, *, with_type: bool = True) -> str:
    """``"{ErrorType}: {message}"`` (``with_type=False``: the message alone), the type's name when
    there is no message; at most ``limit`` characters, lone surrogates repaired. Never raises,
    even for an exception whose ``__str__`` fails."""
    try:
        message = str(err)
    except Exception:
        message = "<message unavailable>"
    name = type(err).__name__
    text = (f"{name}: {message}" if with_type else message) if message else name
    if not text.isascii():
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return truncate(text, limit)


def summary_fallback(err: JsonValueError) -> str:
    """The text shown in place of a value the codec refuses."""
    return f"<value not shown: {err.kind}>"


def json_summary(value: Any, limit: int) -> str:
    """At most ``limit`` characters of ``value`` as readable JSON (``", "``/``": "`` separators,
    non-JSON leaves through ``str``); a fixed fallback when it cannot be encoded. Never raises."""
    try:
        text = encode_json(value, allow_nan=True, default=_safe_str, separators=(", ", ": "))
    except JsonValueError as err:
        return truncate(summary_fallback(err), limit)
    return truncate(text, limit)


def _safe_str(value: Any) -> str:
    """``str(value)`` for a leaf JSON has no form for; a failing ``__str__`` reads as its repr."""
    try:
        return str(value)
    except Exception:
        return short_repr(value)


class _BoundedRepr(reprlib.Repr):
    """``reprlib`` with ints past Python's digit limit printed by size, not raising."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 10_000:  # about 3,000 digits: below the 4,300-digit limit
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_REPR = _BoundedRepr()
_REPR.maxlevel = 4
_REPR.maxstring = 60
_REPR.maxother = 60
_REPR.maxlong = 40


def short_repr(value: Any, limit: int = 80) -> str:
    """A ``repr`` bounded to ``limit`` characters and a few levels of nesting; never raises."""
    try:
        text = _REPR.repr(value)
    except Exception as err:  # a user object whose __repr__ fails
        text = f"<{type(value).__name__} (repr failed: {type(err).__name__})>"
    return truncate(text, limit)
