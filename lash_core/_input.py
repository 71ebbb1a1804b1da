"""Turn input: what a user (or a queued batch) hands the runtime to start or join a turn."""

from __future__ import annotations

import dataclasses
from typing import Any

from ._errors import InvalidTurnInputError
from ._json import short_repr

__all__ = ["TurnInput", "MAX_TURN_INPUT_BYTES"]

#: Upper bound for one text input, in UTF-8 bytes. Large enough for any prompt a person types or
#: pastes, small enough that a runaway producer cannot fill a queue store or a notebook's memory.
MAX_TURN_INPUT_BYTES = 1 << 20


@dataclasses.dataclass(frozen=True, slots=True)
class TurnInput:
    """One text input. Build it with ``TurnInput.text(s)``: that is where validation happens."""

    content: str
    kind: str = "text"

    def __post_init__(self) -> None:
        if self.kind != "text":
            raise InvalidTurnInputError(f"unsupported turn input kind: {short_repr(self.kind)}")
        if not isinstance(self.content, str):
            raise InvalidTurnInputError(
                f"turn input text must be str, not {type(self.content).__name__}"
            )
        try:
            size = len(self.content.encode("utf-8"))
        except UnicodeEncodeError as err:
            raise InvalidTurnInputError(
                f"turn input is not valid UTF-8 text (position {err.start}: {err.reason})"
            ) from None
        if size > MAX_TURN_INPUT_BYTES:
            raise InvalidTurnInputError(
                f"turn input is {size} bytes; the limit is {MAX_TURN_INPUT_BYTES} bytes"
            )

    @classmethod
    def text(cls, text: str | bytes) -> TurnInput:
        """Text input; ``bytes`` are accepted when they are strict UTF-8."""
        if isinstance(text, (bytes, bytearray, memoryview)):
            raw = bytes(text)
            if len(raw) > MAX_TURN_INPUT_BYTES:
                raise InvalidTurnInputError(
                    f"turn input is {len(raw)} bytes; the limit is {MAX_TURN_INPUT_BYTES} bytes"
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise InvalidTurnInputError(
                    f"turn input is not valid UTF-8 (byte {err.start}: {err.reason})"
                ) from None
        return cls(content=text)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "text": self.content}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TurnInput:
        if not isinstance(data, dict) or data.get("type", "text") != "text":
            raise InvalidTurnInputError(f"not a text turn input: {short_repr(data, 200)}")
        return cls.text(data.get("text"))  # type: ignore[arg-type]
