"""KernelSource: follow a session whose runtime lives in another Jupyter kernel.

Notebook B attaches to kernel A by A's connection file and follows a handle that lives there::

    source = KernelSource("/path/to/kernel-A.json", "scenario.handle")
    await source.connect()                 # optional: reads the session id without blocking
    follower = SessionFollower(source, retry=RetryPolicy())  # or SessionMonitor(source)
    await follower.catch_up()              # anchors it at A's tail now (else at its first read)
    items = await follower.next_items()

Rules (read these before the code):

* **How B asks.** Every call is one ``execute_request`` on A's shell channel with empty code,
  ``silent=True, store_history=False, allow_stdin=False`` and one *user expression* (jupyter's
  ``user_expressions``): ``lash_nb.remote.serve_request((HANDLE_EXPR), 'REQUEST')``. So A's history,
  execution count and output are untouched (A's frontend may see its busy light flicker).
  ``HANDLE_EXPR`` is the caller's expression, checked to compile as one Python expression and
  re-written from its syntax tree (no comment or trailing text can escape the parentheses);
  ``REQUEST`` is a JSON document written as a Python string literal (``repr`` of ASCII JSON):
  cursors and other strings travel as data, never as code.
* **How A answers.** ``serve_request`` (which runs in A, so A must be able to import ``lash_nb``)
  calls the handle's synchronous ``current_session_observation`` / ``resume_session_observation``
  and answers one JSON document as the expression's ``text/plain`` value: the session id, and the
  observation document, or the stream rows of ``stream.md`` (``replay_cursor``, then
  ``observation`` rows or one ``replay_gap`` row), or an error by name. Never pickle: only the
  JSON documents of ``wire.md`` cross between kernels. The handle is any synchronous
  ``ObservationSource`` in A (``RuntimeHandle``, ``StoreSource``).
* **Bounded.** A pull carries at most ``MAX_PULL_EVENTS`` events and stops adding events once
  ``PULL_CHARS`` characters are used (one event always goes); ``more`` says that more remain, and
  readers then pull again at once. A single event over ``MAX_EVENT_CHARS`` is refused in A (an
  error, never a truncated event); B refuses a reply over ``MAX_REPLY_CHARS`` and decodes every
  document with lash_core's codec (``decode_json``, ``stream_row_from_dict``), so a bad answer is
  a ``KernelSourceError``, never a foreign exception.
* **Subscriptions poll.** ``subscribe_session_observation(cursor)`` pulls once: a gap is answered
  as ``GapResume`` at once; otherwise a ``KernelSubscription`` yields that replay part, then pulls
  from the cursor of the last event it handed out every ``poll_interval_s`` (at once while
  ``more``). A later pull that answers a gap ends the subscription with ``ReplayClosed``; the
  source keeps that ``GapResume`` and answers it to the next subscribe from the same cursor,
  so a ``SessionFollower`` (which records gaps from subscribe and resume answers only) records it
  by its own policy. Nothing here records, skips or retries a gap.
* **Errors at one boundary** (``KernelSource._call``). Kernel A down, the connection file missing
  or unreadable, no reply in ``timeout_s`` seconds, a dropped connection, an answer that is not a
  lash reply: ``KernelSourceError`` (a ``LiveReplayStoreFailure``: a follower treats the source
  as down and keeps its cursor). A subscription's read that fails raises it and stays usable:
  the next read pulls again from the same cursor. An error the handle raised in A comes back as
  the same lash_core class when it is one of the ``LiveReplayStoreError`` family
  (``MalformedCursorError``, ``WrongSessionError``, ``LiveReplayStoreFailure``, ...), with its
  fields; anything else as ``KernelSourceError`` with A's message. A ``handle_expr`` that does not
  compile, raises in A, or names something that is not a synchronous observation source is a
  ``KernelHandleError`` (not a store failure: retrying cannot help). Cursors are checked for this
  session in B first (``MalformedCursorError`` / ``WrongSessionError`` before A is asked).
* **Session.** ``session_id`` is read once from A (``await connect()``, or on first access of
  the property, which then blocks up to ``timeout_s`` on a private thread); every later answer
  must be of the same session, else ``KernelSourceError``.
* **Connection.** Channels (the shell channel only) open on demand, on the running event loop,
  re-reading the connection file each time (a restarted kernel A is found again); a call from
  another loop opens its own. One request is in flight at a time. ``drop_connection()`` closes
  the channels and makes every call raise ``KernelSourceError`` until ``restore_connection()``
  (to show an outage); ``close()`` / ``aclose()`` closes the channels and ends open subscriptions
  (``ReplayClosed``), and the source can be used again afterwards.
* **A must be idle.** Kernel A answers between cells: while one of A's cells runs (a blocking
  loop, a long ``await``), requests wait, and after ``timeout_s`` they fail. Drive A's runtime
  from tasks (``handle.run_queue_worker``, ``lash_nb.start_producer``) rather than long cells.
"""

from __future__ import annotations

import ast
import asyncio
import collections
import dataclasses
import inspect
import os
import threading
import weakref
from typing import TYPE_CHECKING, Any, Mapping

from lash_core import (
    GapResume,
    InvalidObservationError,
    LashError,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    Replayed,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    Subscribed,
    SubscriberLagged,
    WrongSessionError,
)
from lash_core._cursor import as_cursor
from lash_core._json import decode_json, encode_json, error_message, short_repr, truncate
from lash_core._replay import SubscriptionIteration, _read_size
from lash_core._stream import (
    ObservationRow,
    ReplayCursorRow,
    ReplayGapRow,
    stream_row_from_dict,
    stream_row_to_dict,
)
from lash_core._validate import is_number, repair_text

if TYPE_CHECKING:
    from jupyter_client.asynchronous.client import AsyncKernelClient

__all__ = [
    "KernelSource",
    "KernelSubscription",
    "KernelSourceError",
    "KernelHandleError",
    "KernelSourceStatistics",
    "KernelReply",
    "serve_request",
    "REMOTE_PROTOCOL",
    "MAX_PULL_EVENTS",
    "PULL_CHARS",
    "MAX_EVENT_CHARS",
    "MAX_REPLY_CHARS",
    "MAX_RESUME_EVENTS",
    "MAX_HANDLE_EXPR_CHARS",
]

#: Version of the request and reply documents below; both sides check it.
REMOTE_PROTOCOL = 1
#: Events one pull carries at most (the follower's read batch): a reconnect after a long outage
#: comes back in several pulls instead of one huge message.
MAX_PULL_EVENTS = 1024
#: Characters of event rows after which a pull stops adding events (one event always goes): keeps
#: each reply a few MB however large the events are.
PULL_CHARS = 4 * 1024 * 1024
#: Largest single event row A sends (characters of ASCII JSON); a larger one is refused with an
#: error, never cut (a cut event would be a wrong one).
MAX_EVENT_CHARS = 32 * 1024 * 1024
#: Largest reply B accepts: a pull's rows plus one maximal event plus the envelope.
MAX_REPLY_CHARS = PULL_CHARS + MAX_EVENT_CHARS + 64 * 1024
#: Events one ``resume_session_observation`` gathers at most (in pulls); the rest come with the
#: next call (a follower's ``catch_up`` loop), so one call's memory stays bounded.
MAX_RESUME_EVENTS = 16 * MAX_PULL_EVENTS
#: Longest ``handle_expr`` accepted: a name or an attribute path, not a program.
MAX_HANDLE_EXPR_CHARS = 4096
#: Characters of kernel A's error messages kept in ours.
ERROR_CHARS = 2000
#: Timeouts and poll intervals accepted (seconds): long enough for any kernel, short enough that
#: a follower never looks stopped.
MAX_TIMEOUT_S = 3600.0
MIN_POLL_INTERVAL_S = 0.01
MAX_POLL_INTERVAL_S = 60.0

_EXPRESSION_KEY = "lash"
_SERVE = "__import__('lash_nb.remote', fromlist=['serve_request']).serve_request"
_HANDLE_METHODS = ("current_session_observation", "resume_session_observation")


# --- errors -----------------------------------------------------------------------------------------


class KernelSourceError(LiveReplayStoreFailure):
    """Kernel A cannot serve now: it is down or busy past ``timeout_s``, its connection file is
    missing or unreadable, the connection was dropped, or it answered something that is not a
    lash reply. A ``LiveReplayStoreFailure``: a follower treats the source as down, keeps its
    cursor and can try again. ``connection_file`` names kernel A; ``message`` says what failed."""

    def __init__(self, connection_file: str, message: str) -> None:
        self.connection_file = connection_file
        super().__init__(message)

    def __str__(self) -> str:
        return f"kernel source {self.connection_file}: {self.message}"


class KernelHandleError(LashError, ValueError):
    """``handle_expr`` cannot serve as a source: it does not compile as one expression, raises
    when kernel A evaluates it (a ``NameError`` after A restarted, say), kernel A cannot import
    ``lash_nb``, or it names something that is not a synchronous observation source. Not a store
    failure: retrying cannot help, the expression (or kernel A's state) must change."""

    def __init__(self, connection_file: str, handle_expr: str, reason: str) -> None:
        self.connection_file = connection_file
        self.handle_expr = handle_expr
        self.reason = reason
        super().__init__(connection_file, handle_expr, reason)

    def __str__(self) -> str:
        return (
            f"handle_expr {short_repr(self.handle_expr)} in kernel {self.connection_file}: "
            f"{self.reason}"
        )


# --- kernel A's side ----------------------------------------------------------------------------------


class KernelReply:
    """What ``serve_request`` returns in kernel A: its JSON ``text`` is both its ``repr`` and its
    IPython pretty form, so the expression's ``text/plain`` value is the reply, unquoted."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text)


def serve_request(handle: Any, request: str) -> KernelReply:
    """(Runs in kernel A.) Answer one ``KernelSource`` request about ``handle``.

    ``request`` is a JSON object ``{"v": 1, "op": ..., ...}``: ``op`` ``describe`` (the session id),
    ``current`` (the observation document) or ``resume`` (``cursor``, ``max_events``, ``max_chars``:
    the stream rows after the cursor, bounded). The reply is a JSON object with ``v``, ``kind``
    and ``session_id``; an error of the handle comes back as ``kind: "error"`` with the class
    names of its lash_core ancestry and its fields. Never raises: every failure is a reply."""
    try:
        text = _serve(handle, request)
    except Exception as err:  # the handle's own error (or a bug): sent back by name
        text = encode_json(_error_doc(err), ensure_ascii=True)
    if len(text) > MAX_REPLY_CHARS:
        text = encode_json(
            _error_doc(LiveReplayStoreFailure(f"the reply has {len(text)} characters")),
            ensure_ascii=True,
        )
    return KernelReply(text)


def _envelope(kind: str, session_id: str, **fields: Any) -> dict[str, Any]:
    return {"v": REMOTE_PROTOCOL, "kind": kind, "session_id": session_id, **fields}


def _not_a_handle(reason: str) -> str:
    return encode_json({"v": REMOTE_PROTOCOL, "kind": "not_a_handle", "reason": reason}, ensure_ascii=True)


def _serve(handle: Any, request: str) -> str:
    doc = decode_json(request)
    if not isinstance(doc, dict) or doc.get("v") != REMOTE_PROTOCOL:
        raise InvalidObservationError(
            f"this kernel's lash_nb speaks remote protocol {REMOTE_PROTOCOL}, "
            f"the request is {short_repr(doc, 200)}"
        )
    missing = [m for m in _HANDLE_METHODS if not callable(getattr(handle, m, None))]
    session_id = getattr(handle, "session_id", None)
    if missing or not isinstance(session_id, str) or not session_id:
        what = f"has no {', '.join(missing)}" if missing else "has no session id"
        return _not_a_handle(f"it is a {type(handle).__name__}, which {what}")
    op = doc.get("op")
    if op == "describe":
        return encode_json(
            _envelope("describe", session_id, source=type(handle).__name__), ensure_ascii=True
        )
    if op == "current":
        observation = _synchronous(handle.current_session_observation())
        if observation is None:
            return _not_a_handle("its methods are coroutines: serve a synchronous source")
        return encode_json(
            _envelope("observation", session_id, observation=observation.to_dict()),
            ensure_ascii=True,
        )
    if op == "resume":
        return _resume(handle, session_id, doc)
    raise InvalidObservationError(f"unknown request {short_repr(op)}")


def _synchronous(value: Any) -> Any:
    """``value``; ``None`` for an awaitable (closed, so Python does not warn)."""
    if inspect.isawaitable(value):
        close = getattr(value, "close", None)
        if callable(close):
            close()
        return None
    return value


def _resume(handle: Any, session_id: str, doc: Mapping[str, Any]) -> str:
    raw, max_events, max_chars = doc.get("cursor"), doc.get("max_events"), doc.get("max_chars")
    if not isinstance(raw, str):
        raise MalformedCursorError(f"a cursor must be a str, not {type(raw).__name__}")
    if not (isinstance(max_events, int) and 1 <= max_events <= MAX_PULL_EVENTS):
        max_events = MAX_PULL_EVENTS
    if not (isinstance(max_chars, int) and 1 <= max_chars <= PULL_CHARS):
        max_chars = PULL_CHARS
    cursor = SessionCursor(raw)
    result = _synchronous(handle.resume_session_observation(cursor))
    if result is None:
        return _not_a_handle("its methods are coroutines: serve a synchronous source")
    rows = [encode_json(stream_row_to_dict(ReplayCursorRow(cursor)), ensure_ascii=True)]
    more = False
    if isinstance(result, GapResume):
        gap_row = ReplayGapRow(result.gap, result.observation)
        rows.append(encode_json(stream_row_to_dict(gap_row), ensure_ascii=True))
    elif isinstance(result, Replayed):
        events = result.events
        used = 0
        for event in events[:max_events]:
            row = encode_json(stream_row_to_dict(ObservationRow(event)), ensure_ascii=True)
            if len(row) > MAX_EVENT_CHARS:
                raise LiveReplayStoreFailure(
                    f"the event at {short_repr(str(event.cursor))} has a {len(row)}-character "
                    f"wire document, over the {MAX_EVENT_CHARS} a kernel source carries"
                )
            if len(rows) > 1 and used + len(row) > max_chars:
                break
            rows.append(row)
            used += len(row)
        more = len(rows) - 1 < len(events)
    else:
        raise LiveReplayStoreFailure(
            f"resume_session_observation returned {type(result).__name__}, "
            "not Replayed or GapResume"
        )
    head = encode_json(_envelope("rows", session_id, more=more), ensure_ascii=True)
    return f'{head[:-1]},"rows":[{",".join(rows)}]}}'


#: Fields of lash_core errors that travel with them (each a str or an int).
_ERROR_FIELDS = ("message", "expected_session_id", "actual_session_id", "count", "reason")


def _error_doc(err: BaseException) -> dict[str, Any]:
    classes = [
        c.__name__ for c in type(err).__mro__ if c.__module__.split(".")[0] == "lash_core"
    ]
    fields: dict[str, Any] = {}
    for name in _ERROR_FIELDS:
        value = getattr(err, name, None)
        if isinstance(value, str):
            fields[name] = truncate(repair_text(value), ERROR_CHARS)
        elif isinstance(value, int) and not isinstance(value, bool):
            fields[name] = value
    return {
        "v": REMOTE_PROTOCOL,
        "kind": "error",
        "error": type(err).__name__,
        "classes": classes,
        "message": error_message(err, ERROR_CHARS, with_type=False),
        "fields": fields,
    }


# --- kernel B's side: the source -------------------------------------------------------------------


def _text_field(fields: Mapping[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str):
        raise TypeError(name)
    return value


def _count_field(fields: Mapping[str, Any], name: str) -> int:
    value = fields.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(name)
    return value


#: lash_core errors rebuilt in B from the name and fields A sent (the first of A's ancestry found).
_KNOWN_ERRORS: dict[str, Any] = {
    "MalformedCursorError": lambda f: MalformedCursorError(_text_field(f, "message")),
    "WrongSessionError": lambda f: WrongSessionError(
        _text_field(f, "expected_session_id"), _text_field(f, "actual_session_id")
    ),
    "InvalidObservationError": lambda f: InvalidObservationError(_text_field(f, "message")),
    "LiveReplayStoreFailure": lambda f: LiveReplayStoreFailure(_text_field(f, "message")),
    "SubscriberLagged": lambda f: SubscriberLagged(_count_field(f, "count")),
    "ReplayClosed": lambda f: ReplayClosed(),
}


@dataclasses.dataclass(frozen=True, slots=True)
class KernelSourceStatistics:
    """A cheap snapshot of a ``KernelSource``: ``requests`` sent to kernel A, ``failures`` among
    them (a ``KernelSourceError``), open ``subscriptions``, whether the connection is ``dropped``
    or ``open`` (channels up), whether a gap is ``kept`` for the next subscribe, and the last
    failure (bounded)."""

    requests: int
    failures: int
    subscriptions: int
    dropped: bool
    open: bool
    kept_gap: bool
    last_error: str


@dataclasses.dataclass(frozen=True, slots=True)
class _Pulled:
    """One pull's events (oldest first) and whether more remain after them."""

    events: tuple[SessionObservationEvent, ...]
    more: bool


def _check_seconds(name: str, value: Any, low: float, high: float, *, open_low: bool) -> float:
    ok = is_number(value) and (low < value if open_low else low <= value) and value <= high
    if not ok:
        bound = f"above {low:g}" if open_low else f"at least {low:g}"
        raise InvalidObservationError(
            f"{name} must be a number of seconds {bound} and at most {high:g}, "
            f"not {short_repr(value)}"
        )
    return float(value)


def _handle_code(connection_file: str, handle_expr: Any) -> str:
    """``handle_expr`` as canonical code for one expression (from its syntax tree), or
    ``KernelHandleError``."""
    if not isinstance(handle_expr, str) or not handle_expr.strip():
        raise KernelHandleError(
            connection_file, str(handle_expr), "must be a non-empty str naming the handle in kernel A"
        )
    if len(handle_expr) > MAX_HANDLE_EXPR_CHARS:
        raise KernelHandleError(
            connection_file,
            handle_expr,
            f"has {len(handle_expr)} characters; at most {MAX_HANDLE_EXPR_CHARS}",
        )
    try:
        tree = ast.parse(handle_expr.strip(), "<handle_expr>", mode="eval")
        code = ast.unparse(tree)
        compile(code, "<handle_expr>", "eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise KernelHandleError(
            connection_file, handle_expr, f"is not one Python expression ({error_message(err, 200)})"
        ) from None
    return code


class KernelSource:
    """An ``ObservationSource`` over a handle in another kernel (see the module rules).

    ``KernelSource(connection_file, handle_expr, *, timeout_s=10.0, poll_interval_s=0.25)``:
    ``connection_file`` is kernel A's connection file (``jupyter --runtime-dir``, or
    ``%connect_info`` in A); ``handle_expr`` a Python expression naming the handle in A
    (``"handle"``, ``"scenario.handle"``); ``timeout_s`` how long one request may wait for A's
    reply (seconds); ``poll_interval_s`` how long a caught-up subscription waits between pulls.

    Raises ``KernelHandleError`` for a ``handle_expr`` that is not one expression and
    ``InvalidObservationError`` for other bad arguments, here, before kernel A is contacted.
    Methods are coroutines: ``current_session_observation()``, ``resume_session_observation(cursor)``
    and ``subscribe_session_observation(cursor)``; they raise what the module rules say."""

    def __init__(
        self,
        connection_file: str | os.PathLike[str],
        handle_expr: str,
        *,
        timeout_s: float = 10.0,
        poll_interval_s: float = 0.25,
    ) -> None:
        try:
            path = os.fspath(connection_file)
        except TypeError:
            raise InvalidObservationError(
                f"connection_file must be a path, not {type(connection_file).__name__}"
            ) from None
        if not isinstance(path, str) or not path:
            raise InvalidObservationError(
                f"connection_file must be a non-empty path, not {short_repr(connection_file)}"
            )
        self._file = path
        self._handle_expr = handle_expr
        self._handle_code = _handle_code(path, handle_expr)
        self.timeout_s = _check_seconds("timeout_s", timeout_s, 0.0, MAX_TIMEOUT_S, open_low=True)
        self.poll_interval_s = _check_seconds(
            "poll_interval_s", poll_interval_s, MIN_POLL_INTERVAL_S, MAX_POLL_INTERVAL_S, open_low=False
        )
        self._session_id: str | None = None
        #: the open client and its loop; stopped when this source is collected (a zmq context
        #: left to the garbage collector with open sockets can hang the interpreter)
        self._channels = _Channels()
        weakref.finalize(self, self._channels.close)
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None
        self._dropped = False
        #: (cursor, answer): a gap a subscription met, for the next subscribe from that cursor
        self._kept: tuple[SessionCursor, GapResume] | None = None
        self._subscriptions: weakref.WeakSet[KernelSubscription] = weakref.WeakSet()
        self.requests = 0
        self.failures = 0
        self.last_error = ""

    def __repr__(self) -> str:
        state = "dropped" if self._dropped else "open" if self._channels.client is not None else "idle"
        session = f" session={self._session_id!r}" if self._session_id is not None else ""
        return f"<KernelSource {self._file!r} handle={self._handle_code!r}{session} {state}>"

    @property
    def connection_file(self) -> str:
        return self._file

    @property
    def handle_expr(self) -> str:
        return self._handle_expr

    @property
    def dropped(self) -> bool:
        """Whether ``drop_connection()`` is in force (every call raises ``KernelSourceError``)."""
        return self._dropped

    @property
    def session_id(self) -> str:
        """The handle's session id, read from kernel A once. The first access before
        ``await connect()`` blocks this thread up to ``timeout_s`` seconds (on a private thread
        with its own loop, so it also works inside a running loop); raises ``KernelSourceError``
        / ``KernelHandleError`` when A cannot say."""
        if self._session_id is None:
            self._adopt_session(self._describe_blocking())
        assert self._session_id is not None
        return self._session_id

    def statistics(self) -> KernelSourceStatistics:
        return KernelSourceStatistics(
            requests=self.requests,
            failures=self.failures,
            subscriptions=sum(1 for s in list(self._subscriptions) if not s.closed),
            dropped=self._dropped,
            open=self._channels.client is not None,
            kept_gap=self._kept is not None,
            last_error=self.last_error,
        )

    # -- the connection --------------------------------------------------------------------------

    async def connect(self) -> str:
        """Open the channels on this loop and read the session id (once); returns it."""
        if self._session_id is None:
            self._adopt_session(await self._call({"op": "describe"}))
        assert self._session_id is not None
        return self._session_id

    def drop_connection(self) -> None:
        """Close the channels and refuse every call (``KernelSourceError``) until
        ``restore_connection()``: an outage on demand. Subscriptions stay open; their reads
        fail meanwhile and go on from their cursors afterwards."""
        self._dropped = True
        self._close_channels()

    def restore_connection(self) -> None:
        """End ``drop_connection()``: the next call opens the channels again (re-reading the
        connection file)."""
        self._dropped = False

    def close(self) -> None:
        """Close the channels and end every open subscription (its reads raise ``ReplayClosed``).
        The source stays usable: the next call opens the channels again. Idempotent."""
        for subscription in list(self._subscriptions):
            subscription.close()
        self._kept = None
        self._close_channels()

    async def aclose(self) -> None:
        self.close()

    async def __aenter__(self) -> KernelSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _close_channels(self) -> None:
        self._channels.close()

    def _fail(self, message: str) -> KernelSourceError:
        self.failures += 1
        error = KernelSourceError(self._file, message)
        self.last_error = truncate(str(error), ERROR_CHARS)
        return error

    def _check_not_dropped(self) -> None:
        if self._dropped:
            raise self._fail("the connection is dropped (drop_connection()); restore_connection() reopens it")

    def _open_client(self) -> AsyncKernelClient:
        """A client with its shell channel open, from the connection file as it is now."""
        from jupyter_client.asynchronous.client import AsyncKernelClient

        if not os.path.exists(self._file):
            raise self._fail("the connection file does not exist (is kernel A running?)")
        client = AsyncKernelClient()
        try:
            client.load_connection_file(self._file)
        except Exception as err:  # unreadable, not JSON, fields missing
            _stop(client)
            raise self._fail(f"cannot read the connection file: {error_message(err, 300)}") from err
        try:
            client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
        except Exception as err:
            _stop(client)
            raise self._fail(f"cannot open kernel A's shell channel: {error_message(err, 300)}") from err
        return client

    def _loop_lock(self, loop: asyncio.AbstractEventLoop) -> asyncio.Lock:
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        """The one boundary: send ``request`` to kernel A and return its reply document, or raise
        (see the module rules). One request in flight at a time per loop."""
        self._check_not_dropped()
        loop = asyncio.get_running_loop()
        async with self._loop_lock(loop):
            self._check_not_dropped()
            channels = self._channels
            client = channels.client
            if client is None or channels.loop is not loop:
                channels.close()
                client = channels.client = self._open_client()
                channels.loop = loop
            reply = await self._exchange(client, request)
        return self._reply_doc(reply)

    async def _exchange(self, client: AsyncKernelClient, request: dict[str, Any]) -> Any:
        """One request and its reply message; transport failures close the channels (so a
        late reply or a queued request never meets the next call) and raise."""
        self.requests += 1
        try:
            return await client.execute(
                "",
                silent=True,
                store_history=False,
                user_expressions={_EXPRESSION_KEY: self._expression(request)},
                allow_stdin=False,
                stop_on_error=False,
                reply=True,
                timeout=self.timeout_s,
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task is being cancelled: nothing to map
            # pyzmq cancels a read on a socket closed under it (drop_connection(), close())
            raise self._fail("the connection was closed while a request waited") from None
        except TimeoutError:
            if client is self._channels.client:
                self._close_channels()
            if self._dropped:
                raise self._fail("the connection was dropped while a request waited") from None
            raise self._fail(
                f"kernel A did not answer in {self.timeout_s:g} s (is it running, and idle "
                "between cells?)"
            ) from None
        except Exception as err:  # a closed socket (dropped meanwhile), a zmq error
            if client is self._channels.client:
                self._close_channels()
            raise self._fail(f"the request failed: {error_message(err, 300)}") from err

    def _expression(self, request: dict[str, Any]) -> str:
        literal = repr(encode_json({"v": REMOTE_PROTOCOL, **request}, ensure_ascii=True))
        return f"{_SERVE}(({self._handle_code}), {literal})"

    def _reply_doc(self, reply: Any) -> dict[str, Any]:
        content = reply.get("content") if isinstance(reply, Mapping) else None
        if not isinstance(content, Mapping):
            raise self._fail("kernel A's reply has no content")
        status = content.get("status")
        if status != "ok":
            detail = f": {content.get('ename')}: {content.get('evalue')}" if status == "error" else ""
            raise self._fail(f"kernel A answered status {short_repr(status)}{truncate(detail, 300)}")
        expressions = content.get("user_expressions")
        result = expressions.get(_EXPRESSION_KEY) if isinstance(expressions, Mapping) else None
        if not isinstance(result, Mapping):
            raise self._fail("kernel A did not evaluate the request (not an IPython kernel?)")
        if result.get("status") != "ok":
            ename, evalue = str(result.get("ename", "")), str(result.get("evalue", ""))
            if ename in ("ModuleNotFoundError", "ImportError") and "lash_nb" in evalue:
                reason = f"kernel A cannot import lash_nb.remote ({truncate(evalue, 300)})"
            else:
                reason = f"evaluating it in kernel A raised {truncate(ename, 100)}: {truncate(evalue, 500)}"
            raise KernelHandleError(self._file, self._handle_expr, reason)
        data = result.get("data")
        text = data.get("text/plain") if isinstance(data, Mapping) else None
        if not isinstance(text, str):
            raise self._fail("kernel A's answer has no text/plain value")
        if len(text) > MAX_REPLY_CHARS:
            raise self._fail(f"kernel A's answer has {len(text)} characters, over {MAX_REPLY_CHARS}")
        try:
            doc = decode_json(text)
        except LashError:
            doc = None
        if not isinstance(doc, dict) or doc.get("v") != REMOTE_PROTOCOL:
            raise self._fail(
                f"kernel A answered {short_repr(text, 120)}, not a lash remote reply of protocol "
                f"{REMOTE_PROTOCOL} (is the same lash_nb installed there?)"
            )
        kind = doc.get("kind")
        if kind == "not_a_handle":
            raise KernelHandleError(
                self._file,
                self._handle_expr,
                f"{truncate(str(doc.get('reason')), 300)}; it must name a synchronous "
                "ObservationSource (a RuntimeHandle, a StoreSource)",
            )
        if kind == "error":
            raise self._remote_error(doc)
        session_id = doc.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise self._fail("kernel A's answer names no session")
        if self._session_id is not None and session_id != self._session_id:
            raise self._fail(
                f"the handle in kernel A is now of session {short_repr(session_id)}, not "
                f"{short_repr(self._session_id)}: make a new KernelSource to follow it"
            )
        return doc

    def _remote_error(self, doc: Mapping[str, Any]) -> LashError:
        classes, fields = doc.get("classes"), doc.get("fields")
        message = truncate(str(doc.get("message", "")), ERROR_CHARS)
        if isinstance(classes, list) and isinstance(fields, Mapping):
            for name in classes:
                build = _KNOWN_ERRORS.get(name) if isinstance(name, str) else None
                if build is None:
                    continue
                try:
                    error: LashError = build(fields)
                except TypeError:  # fields missing: reported by name below
                    break
                return error
        name = truncate(str(doc.get("error", "an error")), 100)
        return self._fail(f"kernel A raised {name}: {message}")

    def _adopt_session(self, doc: Mapping[str, Any]) -> None:
        if self._session_id is None:
            self._session_id = str(doc["session_id"])

    def _describe_blocking(self) -> dict[str, Any]:
        """``describe`` on a private thread and loop, with a client of its own."""
        self._check_not_dropped()
        box: dict[str, Any] = {}

        async def once() -> dict[str, Any]:
            client = self._open_client()
            try:
                return self._reply_doc(await self._exchange(client, {"op": "describe"}))
            finally:
                _stop(client)

        def run() -> None:
            try:
                box["doc"] = asyncio.run(once())
            except BaseException as err:  # handed to the caller's thread
                box["error"] = err

        thread = threading.Thread(target=run, name="lash-kernel-source", daemon=True)
        thread.start()
        thread.join(self.timeout_s + 5.0)
        if "error" in box:
            raise box["error"]
        if "doc" not in box:
            raise self._fail(f"kernel A did not answer in {self.timeout_s:g} s")
        doc: dict[str, Any] = box["doc"]
        return doc

    # -- reading ---------------------------------------------------------------------------------

    async def _own(self, cursor: SessionCursor | str) -> SessionCursor:
        """``cursor`` checked for this session, before kernel A is asked."""
        cursor = as_cursor(cursor)
        cursor.parse_for_session(await self.connect())
        return cursor

    def _decode(self, what: str, build: Any, *args: Any) -> Any:
        try:
            return build(*args)
        except LashError as err:
            raise self._fail(f"kernel A sent an invalid {what}: {error_message(err, 300)}") from err

    async def current_session_observation(self) -> SessionObservation:
        """The handle's current observation: a summary view (the wire carries no transcript:
        session, turn index, usage) and the tail cursor."""
        await self.connect()
        doc = await self._call({"op": "current"})
        observation = doc.get("observation")
        if not isinstance(observation, Mapping):
            raise self._fail("kernel A's observation answer has no observation")
        fresh: SessionObservation = self._decode(
            "observation", SessionObservation.from_dict, observation
        )
        self._check_cursor(fresh.cursor)
        return fresh

    def _check_cursor(self, cursor: SessionCursor) -> None:
        assert self._session_id is not None
        if not cursor.belongs_to(self._session_id):
            raise self._fail(
                f"kernel A sent the cursor {short_repr(str(cursor))}, not one of session "
                f"{short_repr(self._session_id)}"
            )

    async def _pull(self, cursor: SessionCursor, max_events: int = MAX_PULL_EVENTS) -> _Pulled | GapResume:
        """One bounded resume in kernel A from ``cursor``."""
        doc = await self._call(
            {"op": "resume", "cursor": cursor.as_str(), "max_events": max_events, "max_chars": PULL_CHARS}
        )
        rows = doc.get("rows")
        if not isinstance(rows, list) or not rows or len(rows) > max_events + 1:
            raise self._fail("kernel A's resume answer has no valid rows")
        decoded = [self._decode("stream row", stream_row_from_dict, row) for row in rows]
        first = decoded[0]
        if not isinstance(first, ReplayCursorRow) or first.cursor != cursor:
            raise self._fail("kernel A's resume answer does not start at the cursor asked for")
        rest = decoded[1:]
        if len(rest) == 1 and isinstance(rest[0], ReplayGapRow):
            gap, observation = rest[0].gap, rest[0].observation
            if gap.session_id != self._session_id or gap.requested_cursor != cursor:
                raise self._fail("kernel A's gap is not about the cursor asked for")
            self._check_cursor(observation.cursor)
            return GapResume(gap, observation)
        events: list[SessionObservationEvent] = []
        for row in rest:
            if not isinstance(row, ObservationRow):
                raise self._fail("kernel A's resume answer mixes events with other rows")
            event = row.event
            if event.session_id != self._session_id:
                raise self._fail(f"kernel A sent an event of session {short_repr(event.session_id)}")
            self._check_cursor(event.cursor)
            events.append(event)
        return _Pulled(tuple(events), doc.get("more") is True and bool(events))

    async def resume_session_observation(self, cursor: SessionCursor | str) -> Replayed | GapResume:
        """The events after ``cursor`` (``Replayed``), gathered in bounded pulls (at most
        ``MAX_RESUME_EVENTS``; the rest come with the next call), or the gap and a fresh
        observation (``GapResume``). When a later pull of the same call meets a gap, the events
        gathered so far are returned and the next call from their end meets the gap. Raises
        ``MalformedCursorError`` / ``WrongSessionError`` (in B, before A is asked),
        ``KernelSourceError``, and A's lash errors."""
        at = await self._own(cursor)
        gathered: list[SessionObservationEvent] = []
        while True:
            answer = await self._pull(at)
            if isinstance(answer, GapResume):
                return Replayed(tuple(gathered)) if gathered else answer
            gathered.extend(answer.events)
            if not answer.more or len(gathered) >= MAX_RESUME_EVENTS:
                return Replayed(tuple(gathered))
            at = answer.events[-1].cursor

    async def subscribe_session_observation(
        self, cursor: SessionCursor | str
    ) -> Subscribed | GapResume:
        """A ``KernelSubscription`` from ``cursor`` (its replay part pulled now), or the gap: a
        kept one when a subscription from this very cursor met it (see the module rules), else
        the one kernel A answers now. Raises like ``resume_session_observation``."""
        at = await self._own(cursor)
        kept, self._kept = self._kept, None
        if kept is not None and kept[0] == at:
            return kept[1]
        answer = await self._pull(at)
        if isinstance(answer, GapResume):
            return answer
        subscription = KernelSubscription(self, at, answer)
        self._subscriptions.add(subscription)
        return Subscribed(subscription)

    def _keep_gap(self, cursor: SessionCursor, answer: GapResume) -> None:
        self._kept = (cursor, answer)


def _stop(client: Any) -> None:
    """Close a client's sockets (linger 0: queued requests are dropped) and its context."""
    try:
        client.stop_channels()
    except Exception:  # a socket of a closed loop: dropped all the same
        pass


class _Channels:
    """A source's open client and the loop it serves (``None`` when closed)."""

    __slots__ = ("client", "loop")

    def __init__(self) -> None:
        self.client: AsyncKernelClient | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        client, self.client, self.loop = self.client, None, None
        if client is not None:
            _stop(client)


# --- kernel B's side: the subscription ----------------------------------------------------------------


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class KernelSubscription(SubscriptionIteration):
    """The ``LiveReplaySubscription`` of a ``KernelSource``: the replay part pulled at subscribe,
    then pulls from the cursor of the last event read, every ``poll_interval_s`` once caught up
    (at once while kernel A said ``more``).

    Reads follow the protocol in ``lash_core._replay``: ``await next_event()``,
    ``next_nowait()``, ``await next_batch(n)``, ``next_batch_nowait(n)`` (what was already
    pulled; never asks kernel A), ``async for`` and ``async with``. Errors that can escape a read:
    ``ReplayClosed`` after ``close()`` or the source's ``close()`` (a read waiting between pulls
    wakes with it) and once a pull met a gap (the source keeps that gap for the next subscribe
    from this cursor); ``KernelSourceError`` (or A's ``LiveReplayStoreFailure``) when a pull
    fails: the subscription stays open and the next read pulls again from the same cursor;
    ``InvalidObservationError`` for a ``max_events`` that is not a positive int. It never lags:
    a pull reads what kernel A still retains, and what A no longer holds is a gap."""

    __slots__ = ("_source", "_at", "_buffer", "_more", "_closed", "_ended", "_waiter", "__weakref__")

    def __init__(self, source: KernelSource, cursor: SessionCursor, first: _Pulled) -> None:
        self._source = source
        #: the cursor the next pull starts after: the newest event pulled, else the subscribe's
        self._at = first.events[-1].cursor if first.events else cursor
        self._buffer: collections.deque[SessionObservationEvent] = collections.deque(first.events)
        self._more = first.more
        self._closed = False
        self._ended = False
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return (
            f"<KernelSubscription session={self.session_id!r} buffered={len(self._buffer)} "
            f"closed={self._closed} ended={self._ended}>"
        )

    @property
    def session_id(self) -> str:
        return self._source.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cursor(self) -> SessionCursor:
        """Where the next pull starts: the newest event pulled (read or buffered)."""
        return self._at

    def _take(self, max_events: int) -> list[SessionObservationEvent]:
        if self._closed:
            raise ReplayClosed()
        buffer = self._buffer
        if not buffer:
            if self._ended:
                raise ReplayClosed()
            return []
        count = min(max_events, len(buffer))
        return [buffer.popleft() for _ in range(count)]

    def next_nowait(self) -> SessionObservationEvent | None:
        batch = self._take(1)
        return batch[0] if batch else None

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        return self._take(max_events)

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        if type(max_events) is not int or max_events < 1:
            max_events = _read_size(max_events)
        while True:
            batch = self._take(max_events)
            if batch:
                return batch
            await self._fill()

    async def next_event(self) -> SessionObservationEvent:
        return (await self.next_batch(1))[0]

    async def _fill(self) -> None:
        """Pull once (after ``poll_interval_s`` when caught up); a gap ends the subscription."""
        if not self._more:
            await self._pause(self._source.poll_interval_s)
        if self._closed:
            raise ReplayClosed()
        answer = await self._source._pull(self._at)
        if self._closed:  # closed while the pull was in flight: nothing is taken
            raise ReplayClosed()
        if isinstance(answer, GapResume):
            self._ended = True
            self._source._keep_gap(self._at, answer)
            return
        self._more = answer.more
        if answer.events:
            self._buffer.extend(answer.events)
            self._at = answer.events[-1].cursor

    async def _pause(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        timer = loop.call_later(seconds, _wake, waiter)
        self._waiter = waiter
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    def close(self) -> None:
        """End the subscription: reads raise ``ReplayClosed``; a read waiting between pulls
        wakes with it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        self._source._subscriptions.discard(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            try:
                waiter.get_loop().call_soon_threadsafe(_wake, waiter)
            except RuntimeError:  # its loop is closed: nobody waits any more
                pass
