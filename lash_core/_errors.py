"""Every exception lash_core raises, in one place.

Where one class ends and the next begins:

* ``LiveReplayStoreError`` covers the observation stream: bad cursors (``SessionCursorError``),
  a store that cannot serve (``LiveReplayStoreFailure``), a subscriber that fell behind
  (``SubscriberLagged``) and a finished stream (``ReplayClosed``). A *gap* is not an error:
  it is a ``Gap`` result value.
* ``QueuedWorkError`` covers the queued-work store: a lease that is no longer held
  (``QueuedWorkClaimExpired``), input that the store will not accept (``InvalidQueuedWorkError``),
  a lifecycle move the state table forbids (``IllegalBatchTransition``).
* ``ProcessRegistryError`` covers the process registry.
* ``LashRuntimeError`` is what runtime-level operations raise, with a wire ``code``;
  ``IllegalTurnInput`` is a driver feeding the sans-IO turn machine an input its state forbids.
* ``JsonValueError`` is a value the JSON codec cannot carry; ``WireFormatError`` a decoded document
  that breaks a wire rule.

All of them derive from ``LashError`` so a notebook can catch the family in one clause.
"""

from __future__ import annotations

import enum

__all__ = [
    "LashError",
    "LiveReplayStoreError",
    "SessionCursorError",
    "MalformedCursorError",
    "WrongSessionError",
    "LiveReplayStoreFailure",
    "InvalidObservationError",
    "SubscriberLagged",
    "ReplayClosed",
    "QueuedWorkError",
    "QueuedWorkClaimExpired",
    "InvalidQueuedWorkError",
    "IllegalBatchTransition",
    "ProcessRegistryError",
    "UnknownProcessError",
    "InvalidProcessError",
    "RuntimeErrorCode",
    "LashRuntimeError",
    "InvalidTurnInputError",
    "IllegalTurnInput",
    "ForeignSessionError",
    "WireFormatError",
    "JsonValueError",
]


class LashError(Exception):
    """Root of every error raised by lash_core."""


# --- observation stream -------------------------------------------------------------------------


class LiveReplayStoreError(LashError):
    """Base for the live replay store and session cursors."""


class SessionCursorError(LiveReplayStoreError):
    """A cursor that cannot be used: malformed, or for another session."""


class MalformedCursorError(SessionCursorError):
    """The cursor string is not ``lashsc1:{revision}:{position}:{session_id}``."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"malformed session cursor: {self.message}"


class WrongSessionError(SessionCursorError):
    """A well-formed cursor that belongs to a different session than the one asked about."""

    def __init__(self, expected_session_id: str, actual_session_id: str) -> None:
        self.expected_session_id = expected_session_id
        self.actual_session_id = actual_session_id
        super().__init__(expected_session_id, actual_session_id)

    def __str__(self) -> str:
        return (
            f"session cursor belongs to `{self.actual_session_id}`, "
            f"not `{self.expected_session_id}`"
        )


class InvalidObservationError(LiveReplayStoreError, ValueError):
    """An argument the observation stream refuses, before anything changed: a bare string where a
    list of ids is expected, a payload or activity of the wrong type, a session id that is empty or
    not valid UTF-8, a read size that is not a positive int, a store setting out of range (config,
    ``reconfigure``, ``with_bounds``). A caller's mistake, raised (unlike a store failure, which
    the handle logs)."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"invalid observation argument: {self.message}"


class LiveReplayStoreFailure(LiveReplayStoreError):
    """The store itself is broken or closed; the runtime logs this and carries on."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)

    def __str__(self) -> str:
        return f"live replay store error: {self.message}"


class SubscriberLagged(LiveReplayStoreError):
    """The subscriber fell more than its backlog behind; ``count`` events were skipped.

    The subscription stays usable: the next read continues from the oldest event still held.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        super().__init__(count)

    def __str__(self) -> str:
        return f"live replay subscriber lagged by {self.count} events"


class ReplayClosed(LiveReplayStoreError):
    """The subscription or its store was closed; no further events will arrive."""

    def __str__(self) -> str:
        return "live replay channel closed"


# --- queued work ----------------------------------------------------------------------------------


class QueuedWorkError(LashError):
    """Base for the queued-work store."""


class QueuedWorkClaimExpired(QueuedWorkError):
    """The claim's batches are no longer all held under its claim id and lease token."""

    def __init__(self, session_id: str, claim_id: str) -> None:
        self.session_id = session_id
        self.claim_id = claim_id
        super().__init__(session_id, claim_id)

    def __str__(self) -> str:
        return f"queued work claim `{self.claim_id}` of session `{self.session_id}` is no longer held"


class InvalidQueuedWorkError(QueuedWorkError, ValueError):
    """A draft or argument the store refuses (empty payloads, bad ttl, ...); nothing was stored."""


class IllegalBatchTransition(QueuedWorkError):
    """A batch lifecycle move that the transition table does not allow; state is unchanged."""

    def __init__(self, batch_id: str, state: str, event: str) -> None:
        self.batch_id = batch_id
        self.state = state
        self.event = event
        super().__init__(batch_id, state, event)

    def __str__(self) -> str:
        return f"batch `{self.batch_id}` cannot go from `{self.state}` by `{self.event}`"


# --- processes ------------------------------------------------------------------------------------


class ProcessRegistryError(LashError):
    """Base for the process registry."""


class InvalidProcessError(ProcessRegistryError, ValueError):
    """A process id, name, kind or scope the registry refuses (not valid UTF-8); nothing changed."""


class UnknownProcessError(ProcessRegistryError, KeyError):
    """No process with that id is registered."""

    def __init__(self, process_id: str) -> None:
        self.process_id = process_id
        super().__init__(process_id)

    def __str__(self) -> str:
        return f"unknown process `{self.process_id}`"


# --- runtime --------------------------------------------------------------------------------------


class RuntimeErrorCode(enum.StrEnum):
    STORE_COMMIT_FAILED = "store_commit_failed"
    INVALID_INPUT = "invalid_input"
    MODEL_FAILED = "model_failed"
    TOOL_FAILED = "tool_failed"
    INVALID_CONFIGURATION = "invalid_configuration"


class LashRuntimeError(LashError):
    """A runtime operation failed; ``code`` is the wire string clients switch on."""

    def __init__(self, code: RuntimeErrorCode, message: str) -> None:
        self.code = RuntimeErrorCode(code)
        self.message = message
        super().__init__(code, message)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


def store_commit_failed(err: BaseException) -> LashRuntimeError:
    """A queue store failure as callers see it: ``store_commit_failed`` (as in Rust), with the
    store's own error chained as ``__cause__`` by the caller's ``raise ... from err``."""
    if isinstance(err, LashRuntimeError):
        return err
    return LashRuntimeError(RuntimeErrorCode.STORE_COMMIT_FAILED, str(err) or type(err).__name__)


class ForeignSessionError(LashRuntimeError, ValueError):
    """A handle was asked to act on a session other than its own (code ``invalid_input``);
    nothing changed and nothing was recorded. Carries both ids. A *cursor* for another session is
    ``WrongSessionError`` instead (the spec's cursor error)."""

    def __init__(self, expected_session_id: str, actual_session_id: str) -> None:
        self.expected_session_id = expected_session_id
        self.actual_session_id = actual_session_id
        super().__init__(
            RuntimeErrorCode.INVALID_INPUT,
            f"this handle acts on session `{expected_session_id}`, not `{actual_session_id}`",
        )


class IllegalTurnInput(LashError):
    """An input the turn machine cannot take in its current state (a ``TurnState`` wire string);
    the machine is unchanged.

    This is a driver bug (a contract violation), not a model or tool failure: those are inputs.
    """

    def __init__(self, state: str, input_type: str, reason: str | None = None) -> None:
        self.state = state
        self.input_type = input_type
        self.reason = reason
        super().__init__(state, input_type, reason)

    def __str__(self) -> str:
        text = f"turn machine in state `{self.state}` cannot take `{self.input_type}`"
        return f"{text}: {self.reason}" if self.reason else text


class InvalidTurnInputError(LashRuntimeError, ValueError):
    """Turn input that cannot be stored faithfully (not valid UTF-8 text, or over the size limit)."""

    def __init__(self, message: str) -> None:
        super().__init__(RuntimeErrorCode.INVALID_INPUT, message)


# --- wire -----------------------------------------------------------------------------------------


class WireFormatError(LashError, ValueError):
    """A JSON document that is not a valid lash wire document; ``reason`` says which rule failed."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)

    def __str__(self) -> str:
        return f"invalid wire document: {self.reason}"


class JsonValueError(LashError, ValueError):
    """A value the JSON codec (``lash_core._json``) cannot encode, or text it cannot decode.

    ``kind`` is a ``JsonValueKind`` string: ``too_deep``, ``unsupported``, ``out_of_range``,
    ``malformed`` or ``not_utf8``; ``reason`` is the detail. Distinct from ``WireFormatError``, which
    is about a *decoded* document that breaks a lash wire rule.
    """

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(kind, reason)

    def __str__(self) -> str:
        return f"JSON value error ({self.kind}): {self.reason}"
