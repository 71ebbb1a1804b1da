"""The tool registry: named Python callables the model may call, and their output shape.

Rules:

* Every ``register`` and every ``unregister`` that removes something bumps ``generation``; nothing
  else does. Observers reuse their ``ToolState`` snapshot while the generation is unchanged.
* A tool is called with the model's arguments as keyword arguments when they are a JSON object,
  else with the value as its one positional argument. Sync and async callables both work; a sync
  tool runs on the event loop, so a slow one should be ``async`` or hand off to a thread itself.
* A tool never crashes a turn: an exception, an unknown tool name or a non-JSON return value
  becomes a *failure output* that the model sees and the observation shows.
* Output JSON follows lash's ``ToolCallOutput``: ``{"outcome": {"status": "success", "payload": v}}``
  or ``{"outcome": {"status": "failure", "payload": {class, code, message, source, retry}}}``.
* Schemas are kept as given and checked when the catalog is built: a broken schema makes
  ``catalog()`` raise ``LashRuntimeError(invalid_configuration)``, which the observation shows as an
  empty catalog plus the message, and which fails a turn before its next model request.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from typing import Any

from .._errors import JsonValueError, LashRuntimeError, RuntimeErrorCode
from .._json import encode_json, error_message, short_repr, summary_fallback, to_plain_json
from ._state import ToolSpec, ToolState

__all__ = [
    "ToolRegistry",
    "ToolFunction",
    "tool_success",
    "tool_failure",
    "render_tool_output",
    "DEFAULT_INPUT_SCHEMA",
]

ToolFunction = Callable[..., Any]

#: A tool exception's message is cut to this many characters in its failure output: enough for any
#: real message, small enough that a tool raising with a megabyte of text cannot flood the stream.
MAX_TOOL_ERROR_CHARS = 4000

#: The schema of a tool registered without one: any JSON object.
DEFAULT_INPUT_SCHEMA: Mapping[str, Any] = {"type": "object", "properties": {}}


def tool_success(value: Any) -> dict[str, Any]:
    return {"outcome": {"status": "success", "payload": value}}


def tool_failure(
    message: str,
    *,
    code: str = "tool_error",
    failure_class: str = "execution",
    source: str = "tool",
) -> dict[str, Any]:
    return {
        "outcome": {
            "status": "failure",
            "payload": {
                "class": failure_class,
                "code": code,
                "message": message,
                "source": source,
                "retry": {"type": "never"},
            },
        }
    }


def render_tool_output(output: Any) -> str:
    """The text the model reads back for a tool output."""
    outcome = output.get("outcome") if isinstance(output, Mapping) else None
    if isinstance(outcome, Mapping):
        payload = outcome.get("payload")
        if outcome.get("status") == "success":
            return payload if isinstance(payload, str) else _encoded(payload)
        if isinstance(payload, Mapping) and isinstance(payload.get("message"), str):
            return f"error: {payload['message']}"
    return _encoded(output, default=str)


def _encoded(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """JSON text for the model; a value the codec refuses reads as its fallback, never raises."""
    try:
        return encode_json(value, allow_nan=True, default=default, separators=(", ", ": "))
    except JsonValueError as err:
        return summary_fallback(err)


def _config_error(message: str) -> LashRuntimeError:
    return LashRuntimeError(RuntimeErrorCode.INVALID_CONFIGURATION, message)


def _schema_problem(schema: Any) -> str | None:
    if not isinstance(schema, Mapping):
        return f"expected a JSON object, got {type(schema).__name__}"
    try:
        encode_json(schema)
    except JsonValueError as err:
        return f"not JSON-serialisable ({err.kind}: {err.reason})"
    if schema.get("type", "object") != "object":
        return f"top-level `type` must be \"object\", got {short_repr(schema.get('type'))}"
    properties = schema.get("properties", {})
    if not isinstance(properties, Mapping):
        return "`properties` must be an object"
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return "`required` must be a list of strings"
    return None


@dataclasses.dataclass(frozen=True, slots=True)
class _Registered:
    spec: ToolSpec
    fn: ToolFunction


class ToolRegistry:
    """Named tools plus a generation counter; see the module rules."""

    def __init__(self) -> None:
        self._tools: dict[str, _Registered] = {}
        self._generation = 0

    @property
    def generation(self) -> int:
        return self._generation

    def register(
        self,
        name: str,
        fn: ToolFunction,
        *,
        description: str | None = None,
        schema: Any = None,
        replace: bool = False,
    ) -> ToolSpec:
        """Add a tool. ``description`` defaults to the first line of ``fn``'s docstring; an existing
        name raises unless ``replace``."""
        if not isinstance(name, str) or not name.strip() or name != name.strip():
            raise _config_error(f"tool name must be a non-empty string without surrounding spaces: {short_repr(name)}")
        if not callable(fn):
            raise _config_error(f"tool `{name}` must be callable, not {type(fn).__name__}")
        if name in self._tools and not replace:
            raise _config_error(f"tool `{name}` is already registered")
        if description is None:
            doc = inspect.getdoc(fn) or ""
            description = doc.strip().splitlines()[0] if doc.strip() else ""
        if not isinstance(description, str):
            raise _config_error(f"tool `{name}` description must be a str")
        spec = ToolSpec(name, description, dict(DEFAULT_INPUT_SCHEMA) if schema is None else schema)
        self._tools[name] = _Registered(spec, fn)
        self._generation += 1
        return spec

    def unregister(self, name: str) -> bool:
        """Remove a tool; ``False`` (and no generation bump) when it was not registered."""
        if self._tools.pop(name, None) is None:
            return False
        self._generation += 1
        return True

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._tools))

    def state(self) -> ToolState:
        return ToolState(self._generation, tuple(self._tools[name].spec for name in sorted(self._tools)))

    def catalog(self) -> tuple[dict[str, Any], ...]:
        """What the model is offered: ``{"name", "description", "input_schema"}`` per tool, by name.

        Raises ``LashRuntimeError(invalid_configuration)`` naming the first tool whose schema is broken.
        """
        entries = []
        for name in sorted(self._tools):
            spec = self._tools[name].spec
            problem = _schema_problem(spec.input_schema)
            if problem is not None:
                raise _config_error(f"tool `{name}` has an invalid input schema: {problem}")
            entries.append(
                {"name": name, "description": spec.description, "input_schema": spec.input_schema}
            )
        return tuple(entries)

    async def invoke(self, name: str, args: Any) -> dict[str, Any]:
        """Call a tool and return its output JSON; never raises for tool-side problems."""
        registered = self._tools.get(name)
        if registered is None:
            return tool_failure(
                f"unknown tool `{name}`",
                code="unknown_tool",
                failure_class="unavailable",
                source="runtime",
            )
        try:
            if isinstance(args, Mapping):
                result = registered.fn(**args)
            else:
                result = registered.fn(args)
            if inspect.isawaitable(result):
                result = await result
        except Exception as err:  # a tool's failure is data for the model, never a crash
            return tool_failure(error_message(err, MAX_TOOL_ERROR_CHARS))
        try:
            result = to_plain_json(result)  # plain JSON from here on
        except JsonValueError as err:  # too deep, not JSON, NaN, an int past the digit limit
            return tool_failure(
                f"tool `{name}` returned a value that is not JSON ({err.kind}: {err.reason})",
                code="invalid_output",
                source="runtime",
            )
        return tool_success(result)

    def __repr__(self) -> str:
        return f"<ToolRegistry generation={self._generation} tools={list(self.names())}>"
