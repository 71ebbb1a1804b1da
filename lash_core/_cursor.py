"""Session revisions and opaque session cursors.

A cursor is ``lashsc1:{revision}:{live_position}:{session_id}``. The session id is everything
after the third colon, so ids may themselves contain colons. Clients must treat the string as
opaque: they store it and hand it back, nothing more. Parsing is strict, mirroring Rust's
``u64::from_str`` so that a cursor accepted here is accepted by the Rust service and vice versa.
"""

from __future__ import annotations

import dataclasses
import re

from ._errors import MalformedCursorError, SessionCursorError, WrongSessionError

__all__ = [
    "SessionRevision",
    "SessionCursor",
    "ParsedSessionCursor",
    "CURSOR_PREFIX",
    "U64_MAX",
    "as_cursor",
    "format_cursor",
]

CURSOR_PREFIX = "lashsc1:"
U64_MAX = (1 << 64) - 1


class SessionRevision(int):
    """A durable committed point of a session: an unsigned 64-bit integer."""

    __slots__ = ()

    def __new__(cls, value: int = 0) -> SessionRevision:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"session revision must be an int, not {type(value).__name__}")
        if not 0 <= value <= U64_MAX:
            raise ValueError(f"session revision out of range 0..2**64-1: {value}")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"SessionRevision({int(self)})"


_EMPTY = "cannot parse integer from empty string"
_INVALID_DIGIT = "invalid digit found in string"
_TOO_LARGE = "number too large to fit in target type"
_NON_DIGIT = re.compile(r"[^0-9]")


def _parse_u64(text: str) -> int:
    """Parse like Rust's ``u64::from_str``; raise ValueError carrying Rust's message.

    Rust reads the digits left to right and, for each one, checks the digit before it checks that
    the running value still fits; so the first error *in reading order* wins:
    ``99999999999999999999x`` overflows at its 20th digit, before the ``x`` is reached ("number too
    large"), while ``1x99999999999999999999`` fails on the ``x`` ("invalid digit"). Leading zeros
    never overflow. A lone ``+`` (or ``-``) is an invalid digit; a leading ``-`` is one too.
    """
    if text == "":
        raise ValueError(_EMPTY)
    if len(text) <= 19 and text.isascii() and text.isdigit():  # the common case: fits, no sign
        return int(text)
    digits = text[1:] if text[0] == "+" else text
    if digits == "":
        raise ValueError(_INVALID_DIGIT)
    bad = _NON_DIGIT.search(digits)
    prefix = digits if bad is None else digits[: bad.start()]
    significant = prefix.lstrip("0")
    # u64 has at most 20 digits: a longer run of significant digits overflows inside the valid
    # prefix, i.e. before any invalid character. Checking the length first also keeps int() away
    # from Python's 4300-digit conversion limit for absurd (but valid) zero-padded input.
    if len(significant) > 20 or (len(significant) == 20 and int(significant) > U64_MAX):
        raise ValueError(_TOO_LARGE)
    if bad is not None:
        raise ValueError(_INVALID_DIGIT)
    return int(significant) if significant else 0


@dataclasses.dataclass(frozen=True, slots=True)
class ParsedSessionCursor:
    session_id: str
    revision: SessionRevision
    live_position: int


class SessionCursor:
    """An opaque resume token. ``str(cursor)`` is the wire string; ``repr`` hides it.

    Construction never validates (a cursor read back from JSON is just a string); parsing does.
    """

    __slots__ = ("_raw", "_position")

    def __init__(self, raw: str) -> None:
        if not isinstance(raw, str):
            raise TypeError(f"session cursor must be a str, not {type(raw).__name__}")
        self._raw = raw
        #: the live position, once known (set by ``format_cursor``, or by the first
        #: ``live_position()``); -1 when the cursor does not parse. Never part of the value.
        self._position: int | None = None

    @classmethod
    def new(cls, session_id: str, revision: int, live_position: int) -> SessionCursor:
        """A well-formed cursor. Raises ValueError for an empty id or out-of-range numbers."""
        if not isinstance(session_id, str) or session_id == "":
            raise ValueError("session id must be a non-empty string")
        revision = SessionRevision(revision)
        if isinstance(live_position, bool) or not isinstance(live_position, int):
            raise TypeError("live position must be an int")
        if not 0 <= live_position <= U64_MAX:
            raise ValueError(f"live position out of range 0..2**64-1: {live_position}")
        return format_cursor(revision, live_position, session_id)

    def as_str(self) -> str:
        return self._raw

    def __str__(self) -> str:
        return self._raw

    def __repr__(self) -> str:
        return "SessionCursor(<opaque>)"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, SessionCursor):
            return self._raw == other._raw
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self._raw)

    def __reduce__(self) -> tuple[type[SessionCursor], tuple[str]]:
        return (SessionCursor, (self._raw,))

    def to_json(self) -> str:
        """JSON form: the plain string (``json.dumps(cursor.to_json())``)."""
        return self._raw

    def parse(self) -> ParsedSessionCursor:
        raw = self._raw
        if not raw.startswith(CURSOR_PREFIX):
            raise MalformedCursorError("missing cursor prefix")
        parts = raw[len(CURSOR_PREFIX) :].split(":", 2)
        # str.split always yields a first element; like Rust's splitn, an empty one is invalid.
        try:
            revision = _parse_u64(parts[0])
        except ValueError as err:
            raise MalformedCursorError(f"invalid session revision: {err}") from None
        if len(parts) < 2:
            raise MalformedCursorError("missing live replay position")
        try:
            live_position = _parse_u64(parts[1])
        except ValueError as err:
            raise MalformedCursorError(f"invalid live replay position: {err}") from None
        if len(parts) < 3 or parts[2] == "":
            raise MalformedCursorError("missing session id")
        return ParsedSessionCursor(
            session_id=parts[2], revision=SessionRevision(revision), live_position=live_position
        )

    def live_position(self) -> int | None:
        """The live position ``parse()`` reads, or ``None`` when the cursor does not parse; read
        once per cursor object (stores set it when they write the cursor)."""
        position = self._position
        if position is None:
            try:
                position = self.parse().live_position
            except SessionCursorError:
                position = -1
            self._position = position
        return None if position < 0 else position

    def belongs_to(self, session_id: str) -> bool:
        """Whether this is a well-formed cursor of ``session_id`` (``parse_for_session`` would
        accept it): what a client checks before it adopts a cursor as its resume point."""
        try:
            self.parse_for_session(session_id)
        except SessionCursorError:
            return False
        return True

    def parse_for_session(self, expected_session_id: str) -> ParsedSessionCursor:
        parsed = self.parse()
        if parsed.session_id != expected_session_id:
            raise WrongSessionError(expected_session_id, parsed.session_id)
        return parsed


def format_cursor(revision: int, live_position: int, session_id: str) -> SessionCursor:
    """The one place the cursor format is written. No checks: for parts already validated (a
    store's hot path); everyone else calls ``SessionCursor.new``."""
    cursor = SessionCursor(f"{CURSOR_PREFIX}{int(revision)}:{live_position}:{session_id}")
    cursor._position = int(live_position)
    return cursor


def as_cursor(cursor: SessionCursor | str) -> SessionCursor:
    """Accept a cursor or its raw string (as clients store it); anything else is malformed."""
    if isinstance(cursor, SessionCursor):
        return cursor
    if isinstance(cursor, str):
        return SessionCursor(cursor)
    raise MalformedCursorError(
        f"a cursor must be a SessionCursor or str, not {type(cursor).__name__}"
    )
