"""A session's observation over HTTP: serve it as the NDJSON rows of ``shared/spec/stream.md``
(Starlette on uvicorn), and follow such a stream as an ``ObservationSource`` (httpx).

Needs the ``[http]`` extra: ``pip install 'lash-notebook[http]'``.

Server rules (``observation_app``, ``serve``):

* ``GET /sessions/{session_id}/events?cursor=C[&follow=0]`` answers ``application/x-ndjson``:
  first ``replay_cursor`` with the cursor the stream starts after (``C``; without ``cursor`` the
  session's current tail), then

  - for a replay: one ``observation`` row per replayed event, then live ``observation`` rows as
    they are appended;
  - for a gap: one ``replay_gap`` row (the gap and a fresh observation), then live rows after the
    fresh cursor.

  ``follow=0`` ends the response after the replay (or the gap row). The response header
  ``Lash-Stream-Start: replay | gap`` announces which of the two the stream is, so a client
  need not wait for a second row to know (a quiet stream sends nothing after ``replay_cursor``).
  Rows go out one chunk per batch, flushed as soon as the batch is read. A quiet stream gets an
  empty line (a keepalive) every ``keepalive_s`` seconds (``Lash-Keepalive`` header; 15 s by
  default), so a client that vanished without closing is found by a failing write.
* **No second copy of the gap or lag policy.** The server relays exactly one subscription per
  response and ends the response at anything else: a ``SubscriberLagged``, a closed store, a
  second gap when subscribing from the fresh cursor, a store failure mid-stream. The client
  resumes from the last cursor it saw and gets a replay or a gap (its ``SessionFollower``
  applies the policy). When the client goes away, or the server stops, the subscription is
  closed at once.
* ``GET /sessions/{session_id}/observation`` answers the observation document of ``wire.md``.
* Errors are JSON bodies ``{"type": "error", "code": ..., "message": ...}`` (plus fields), never
  a traceback: ``malformed_cursor`` 400, ``wrong_session`` 400 (with ``expected_session_id`` and
  ``actual_session_id``), ``bad_request`` 400, ``cursor_too_long`` 414 (over
  ``MAX_CURSOR_CHARS``), ``unknown_session`` 404 (with ``session_id``), ``not_found`` 404,
  ``method_not_allowed`` 405, ``store_failure`` 503, ``internal`` 500 (logged on the server).
* ``serve()`` runs uvicorn's ``Server.serve()`` as a task on the *running* event loop (so it works
  in a Jupyter kernel with top-level ``await``). uvicorn would install SIGINT/SIGTERM handlers
  from the main thread (``Server.capture_signals``); in a kernel SIGINT is the interrupt, so
  ``_EmbeddedServer`` overrides ``capture_signals`` with a no-op (uvicorn 0.29+ has no setting
  for it; earlier versions had ``install_signal_handlers``). The listening socket is bound here
  with ``SO_REUSEADDR`` (a restart on the same port works while old connections sit in
  TIME_WAIT) and handed to uvicorn; uvicorn's logging is left unconfigured (``log_config=None``)
  at ``log_level="warning"``. ``stop()`` first closes the app's open subscriptions, so every
  following response ends at once, and after ``STALLED_WRITE_S`` it closes the connections of
  clients that stopped reading (a response blocked in a write to one cannot see its subscription
  close); uvicorn's graceful-shutdown timeout (``GRACEFUL_SHUTDOWN_S``) is only a backstop for
  other apps. ``ObservationServer.start(app)`` serves any ASGI app the
  same way (the tests serve a foreign lash service with it); uvicorn's ``sys.exit`` on a failed
  start becomes a ``RuntimeError`` rather than leaving the host's loop.

Client rules (``HttpSource``):

* ``HttpSource(url)`` follows ``url``, a session's events URL; its session id comes from the path
  (``.../sessions/{id}/events``) or ``session_id=``, and every row is checked against it.
* ``subscribe_session_observation(cursor)`` opens the stream and reads the ``replay_cursor`` row.
  With our server's header it knows at once: ``gap`` -> it reads the ``replay_gap`` row and
  answers ``GapResume`` (closing the response), ``replay`` -> ``Subscribed``. A foreign service
  without the header: a ``replay_gap`` already received with the ``replay_cursor`` row answers
  ``GapResume``; otherwise ``Subscribed``, and a ``replay_gap`` that arrives later ends the
  subscription (``ReplayClosed``) and is *kept*: the next subscribe (or resume) from the cursor
  the subscription had reached answers that ``GapResume`` at once, with no request, so a
  ``SessionFollower`` (which resubscribes once after ``ReplayClosed``) records the gap by its
  usual policy.
* ``resume_session_observation(cursor)`` asks with ``follow=0`` and reads to the end. A foreign
  service that ignores ``follow=0`` (no ``Lash-Stream-Start`` header) is read until it has been
  quiet for ``resume_window_s`` seconds, then the response is closed.
* ``current_session_observation()`` reads ``observation_url`` (by default the sibling
  ``observation``, relative to the events URL). A service without one (``observation_url=None``,
  or a 404/405 that is not a lash error body) is asked for the stream without a cursor instead,
  and its ``replay_cursor`` row gives the cursor; the read view is then an empty
  ``ObservationSummary`` (turn index 0), as ``StoreSource`` gives.
* Application rows (``message``, ``done``, ...) are passed over and counted by type in
  ``skipped_rows``; a malformed line, or a row of another session, is logged with its line
  number, counted in ``stream_errors`` (the last ``MAX_KEPT_STREAM_ERRORS`` are kept in
  ``recent_stream_errors``), and the stream goes on (stream.md notes).
* Errors are mapped at one boundary (``_http_errors``, ``_status_error``): connection refused,
  reset, timeouts, a broken stream and any 5xx or unexpected status become ``HttpSourceError``
  (a ``LiveReplayStoreFailure``: a follower treats the source as down); 400 ``malformed_cursor``
  / ``wrong_session`` become ``MalformedCursorError`` / ``WrongSessionError``; 404
  ``unknown_session`` becomes ``UnknownSessionError`` (an ``HttpSourceError`` naming the session).
  A stream that ends (the server stopped, the connection dropped) is ``ReplayClosed`` from the
  subscription, with the transport error, if any, as its ``__cause__``.
* A stream that announced keepalives (``Lash-Keepalive: S``) and sends nothing for
  ``STALE_KEEPALIVES * S`` seconds is taken as broken (``ReplayClosed`` with an
  ``HttpSourceError`` cause), so a follower behind a dead connection resubscribes.
* Over HTTP a subscription never raises ``SubscriberLagged`` (a lagging server ends the response
  instead, which reads as ``ReplayClosed``), and where the replay part ends is not visible on the
  wire, so a batch may span both parts.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import inspect
import logging
import math
import re
import socket
import urllib.parse
import weakref
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Union

try:
    import httpx
    import uvicorn
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import Response, StreamingResponse
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send
except ImportError as _missing:  # pragma: no cover - exercised without the extra installed
    raise ImportError(
        f"lash_core.http needs the [http] extra (missing module {_missing.name!r}): "
        "pip install 'lash-notebook[http]'"
    ) from _missing

from ._cursor import SessionCursor, as_cursor
from ._errors import (
    InvalidObservationError,
    JsonValueError,
    LiveReplayStoreError,
    LiveReplayStoreFailure,
    MalformedCursorError,
    ReplayClosed,
    SubscriberLagged,
    WireFormatError,
    WrongSessionError,
)
from ._events import SessionObservationEvent
from ._follower import ObservationSource
from ._gap import ObservationSummary, SessionObservation
from ._handle import GapResume
from ._json import decode_json, encode_json, error_message, short_repr, truncate
from ._replay import LiveReplaySubscription, Replayed, Subscribed, SubscriptionIteration
from ._stream import (
    ObservationRow,
    OtherRow,
    ReplayCursorRow,
    ReplayGapRow,
    StreamRow,
    StreamRowDecoder,
    StreamRowError,
    encode_stream_row,
)
from ._wire import DEFAULT_PROTOCOL_VERSION

__all__ = [
    "NDJSON_MEDIA_TYPE",
    "STREAM_START_HEADER",
    "MAX_CURSOR_CHARS",
    "MAX_DOCUMENT_BYTES",
    "MAX_BUFFERED_ROWS",
    "MAX_BUFFERED_BYTES",
    "KEEPALIVE_HEADER",
    "DEFAULT_KEEPALIVE_S",
    "STALE_KEEPALIVES",
    "MAX_KEPT_STREAM_ERRORS",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_RESUME_WINDOW_S",
    "GRACEFUL_SHUTDOWN_S",
    "STALLED_WRITE_S",
    "SourceLookup",
    "Sources",
    "observation_app",
    "ObservationServer",
    "serve",
    "HttpSourceError",
    "UnknownSessionError",
    "HttpSource",
    "HttpSubscription",
]

logger = logging.getLogger("lash_core.http")

#: The media type of a stream of rows (newline-delimited JSON).
NDJSON_MEDIA_TYPE = "application/x-ndjson"
#: Response header of our server: ``replay`` or ``gap``, what the stream starts with.
STREAM_START_HEADER = "Lash-Stream-Start"
#: Response header of our server: the seconds between keepalives (empty lines) on a quiet stream.
KEEPALIVE_HEADER = "Lash-Keepalive"
#: Seconds between keepalives on a quiet stream: a write to a client that vanished (a half-open
#: connection) eventually fails and frees its subscription; the client sees its server is there.
DEFAULT_KEEPALIVE_S = 15.0
#: Keepalive periods of silence after which a client takes a stream as broken (one lost or
#: delayed keepalive is not enough).
STALE_KEEPALIVES = 3
#: Longest ``cursor`` query value the server reads (414 beyond): a cursor is ``lashsc1:`` + two
#: u64 + a session id, and this leaves long ids room while the request line stays far below
#: uvicorn's (h11's) 16 KiB header limit, which answers a plain 400 of its own.
MAX_CURSOR_CHARS = 4096
#: Largest JSON document (observation, error body) the client reads: an observation is a few
#: hundred bytes, and a peer must not make us buffer an endless body.
MAX_DOCUMENT_BYTES = 1024 * 1024
#: Rows, and bytes of rows, a client subscription buffers before it stops reading the socket
#: (TCP backpressure; a server that then lags ends the response, and the follower resumes from
#: its cursor). The bytes bound matters as a line may be up to ``MAX_STREAM_LINE_BYTES``.
MAX_BUFFERED_ROWS = 8192
MAX_BUFFERED_BYTES = 64 * 1024 * 1024
#: Malformed lines kept in ``HttpSource.recent_stream_errors`` (all are counted).
MAX_KEPT_STREAM_ERRORS = 64
#: Seconds the client waits to connect, for a response's head and for the stream's first row
#: (and for each row of a ``follow=0`` replay from our server).
DEFAULT_TIMEOUT_S = 10.0
#: Seconds of quiet after which a ``resume`` from a foreign service (one that may not honour
#: ``follow=0``) takes what it received as the whole replay.
DEFAULT_RESUME_WINDOW_S = 0.5
#: Seconds uvicorn waits for open responses at shutdown before it cancels them: a backstop, since
#: ``stop()`` closes our own streams first (uvicorn takes an int here).
GRACEFUL_SHUTDOWN_S = 1
#: Seconds ``stop()`` lets open responses end before it closes the connections of clients that
#: stopped reading (a response blocked writing to one would otherwise wait for the backstop).
STALLED_WRITE_S = 0.2
#: Events the server reads from a subscription per chunk.
SERVER_READ_BATCH = 1024

_FOLLOW_VALUES = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}
_EVENTS_PATH = re.compile(r"/sessions/([^/]+)/events/?$")

#: What ``observation_app`` calls to find a session's source (sync or async); ``None``: unknown.
SourceLookup = Callable[
    [str], Union[ObservationSource, None, Awaitable[Union[ObservationSource, None]]]
]
#: ``observation_app``'s argument: one source, a mapping by session id, or a lookup.
Sources = Union[ObservationSource, Mapping[str, ObservationSource], SourceLookup]


async def _resolve(value: Any) -> Any:
    """A source method's answer: sources may be synchronous or asynchronous (``_follower``)."""
    return await value if inspect.isawaitable(value) else value


# === server =======================================================================================


class _RequestError(Exception):
    """A request the server refuses before streaming: becomes one JSON error response."""

    def __init__(self, status: int, code: str, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = fields


def _error_body(status: int, code: str, message: str, **fields: Any) -> Response:
    document = {"type": "error", "code": code, "message": message, **fields}
    return Response(
        encode_json(document).encode("utf-8"),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def _error_response(err: BaseException, session_id: str) -> Response:
    """The one place server-side failures become responses (never a traceback)."""
    if isinstance(err, _RequestError):
        return _error_body(err.status, err.code, err.message, **err.fields)
    if isinstance(err, WrongSessionError):
        return _error_body(
            400,
            "wrong_session",
            str(err),
            expected_session_id=err.expected_session_id,
            actual_session_id=truncate(err.actual_session_id, 200),
        )
    if isinstance(err, MalformedCursorError):
        return _error_body(400, "malformed_cursor", str(err))
    if isinstance(err, InvalidObservationError):
        return _error_body(400, "bad_request", str(err))
    if isinstance(err, LiveReplayStoreError):  # a failing or closed store
        level = logging.DEBUG if isinstance(err, _ServerStopping) else logging.WARNING
        logger.log(level, "observation of session %s unavailable: %s", short_repr(session_id), err)
        return _error_body(503, "store_failure", f"the session's store cannot serve: {err}")
    logger.error(
        "internal error serving session %s", short_repr(session_id), exc_info=err
    )
    return _error_body(500, "internal", "internal server error (details are in the server log)")


class _ServerStopping(LiveReplayStoreFailure):
    """A request that arrived while ``stop()`` runs: answered 503, logged at debug level only
    (an expected end, not a failure worth a warning in a notebook cell)."""


class _Streams:
    """The open subscriptions of one app: ``close_all()`` (on stop) ends their responses."""

    def __init__(self) -> None:
        self.open: set[LiveReplaySubscription] = set()
        self.stopping = False

    def add(self, subscription: LiveReplaySubscription) -> bool:
        if self.stopping:
            subscription.close()
            return False
        self.open.add(subscription)
        return True

    def release(self, subscription: LiveReplaySubscription) -> None:
        self.open.discard(subscription)
        with contextlib.suppress(Exception):
            subscription.close()

    def close_all(self) -> None:
        self.stopping = True
        for subscription in list(self.open):
            self.release(subscription)


class _RowStreamResponse(StreamingResponse):
    """A streaming response that always watches for the client going away (whatever ASGI spec
    version the server speaks: Starlette's own watch is skipped for 2.4) and runs ``cleanup``
    however it ends, even when the body never started."""

    def __init__(
        self,
        content: AsyncIterator[bytes],
        cleanup: Callable[[], None],
        headers: Mapping[str, str],
    ) -> None:
        super().__init__(content, media_type=NDJSON_MEDIA_TYPE, headers=headers)
        self._cleanup = cleanup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        streamer = asyncio.ensure_future(self.stream_response(send))
        watcher = asyncio.ensure_future(self.listen_for_disconnect(receive))
        try:
            await asyncio.wait({streamer, watcher}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (streamer, watcher):
                task.cancel()
            await asyncio.gather(streamer, watcher, return_exceptions=True)
            self._cleanup()
        if streamer.done() and not streamer.cancelled():
            failure = streamer.exception()
            if failure is not None and not isinstance(failure, OSError):
                logger.error("stream response failed", exc_info=failure)


def _cursor_param(request: Request, session_id: str) -> SessionCursor | None:
    values = request.query_params.getlist("cursor")
    if not values:
        return None
    if len(values) > 1:
        raise _RequestError(400, "bad_request", "give `cursor` at most once")
    raw = values[0]
    if len(raw) > MAX_CURSOR_CHARS:
        raise _RequestError(
            414,
            "cursor_too_long",
            f"the cursor has {len(raw)} characters; at most {MAX_CURSOR_CHARS} are read",
        )
    cursor = SessionCursor(raw)
    cursor.parse_for_session(session_id)  # MalformedCursorError / WrongSessionError
    return cursor


def _follow_param(request: Request) -> bool:
    values = request.query_params.getlist("follow")
    if not values:
        return True
    follow = _FOLLOW_VALUES.get(values[-1].lower()) if len(values) == 1 else None
    if follow is None:
        raise _RequestError(
            400, "bad_request", "`follow` must be given once, as 1 or 0 (true/false, yes/no)"
        )
    return follow


def _rows(rows: list[StreamRow], version: int) -> bytes:
    return b"".join(encode_stream_row(row, version) for row in rows)


def _event_rows(events: Any, version: int, session_id: str) -> bytes:
    """Observation rows for ``events``; an event the codec refuses is logged and left out (ending
    the response would make the client ask for it again, forever)."""
    out: list[bytes] = []
    for event in events:
        try:
            out.append(encode_stream_row(ObservationRow(event), version))
        except (WireFormatError, JsonValueError) as err:
            logger.warning(
                "left out an event of session %s that cannot be encoded: %s",
                short_repr(session_id),
                err,
            )
    return b"".join(out)


async def _relay(
    first: Subscribed | GapResume,
    source: ObservationSource,
    cursor: SessionCursor,
    version: int,
    streams: _Streams,
    held: list[LiveReplaySubscription],
    keepalive_s: float | None,
) -> AsyncIterator[bytes]:
    """The body of a following stream (see the module rules): one subscription relayed, and the
    response ended at anything else; an empty line every ``keepalive_s`` seconds of quiet.
    ``held`` names the subscription for the response's cleanup."""
    session_id = source.session_id
    if isinstance(first, GapResume):
        yield _rows([ReplayCursorRow(cursor), ReplayGapRow(first.gap, first.observation)], version)
        try:
            again = await _resolve(
                source.subscribe_session_observation(first.observation.cursor)
            )
        except Exception as err:
            logger.warning(
                "ending the stream of session %s: resubscribing after a gap failed: %s",
                short_repr(session_id),
                err,
            )
            return
        if not isinstance(again, Subscribed):
            return  # a second gap: the client resumes from the fresh cursor and is told itself
        if not streams.add(again.subscription):
            return
        held.append(again.subscription)
    else:
        yield _rows([ReplayCursorRow(cursor)], version)
    subscription = held[0]
    while True:
        try:
            async with asyncio.timeout(keepalive_s):
                batch = await subscription.next_batch(SERVER_READ_BATCH)
        except TimeoutError:  # a read cancelled while it waits takes no event
            yield b"\n"
            continue
        except (ReplayClosed, SubscriberLagged):
            return  # closed (stop, or the store) or lagged: the client resumes from its cursor
        except Exception as err:
            logger.warning(
                "ending the stream of session %s: %s", short_repr(session_id), error_message(err)
            )
            return
        chunk = _event_rows(batch, version, session_id)
        if chunk:
            yield chunk


def observation_app(
    sources: Sources,
    *,
    protocol_version: int = DEFAULT_PROTOCOL_VERSION,
    keepalive_s: float | None = DEFAULT_KEEPALIVE_S,
) -> Starlette:
    """A Starlette app serving the sessions of ``sources`` (see the module rules for the routes).

    ``sources`` is one ``ObservationSource`` (a ``RuntimeHandle``, a ``StoreSource``; its methods
    may be sync or async) serving only its own session, a mapping ``session_id -> source``
    (read at each request, so sessions may be added later), or a callable ``session_id ->
    source | None`` (sync or async). Rows and documents are written at ``protocol_version``.
    A quiet following stream gets an empty line (a keepalive, stream.md's decoder passes over
    it) every ``keepalive_s`` seconds, announced in the ``Lash-Keepalive`` header (``None``:
    none). Raises ``TypeError`` for anything else, ``ValueError`` for a bad ``keepalive_s``."""
    if keepalive_s is not None and (
        isinstance(keepalive_s, bool)
        or not isinstance(keepalive_s, (int, float))
        or not (math.isfinite(keepalive_s) and keepalive_s > 0)
    ):
        raise ValueError(
            f"keepalive_s must be None or a positive number of seconds, not {keepalive_s!r}"
        )
    lookup = _lookup(sources)
    streams = _Streams()

    async def find(session_id: str) -> ObservationSource:
        try:
            source: ObservationSource | None = await _resolve(lookup(session_id))
        except Exception as err:
            raise LiveReplayStoreFailure(
                f"looking the session up failed: {error_message(err)}"
            ) from err
        if source is None:
            raise _RequestError(
                404,
                "unknown_session",
                f"no session {short_repr(session_id)} is served here",
                session_id=truncate(session_id, 200),
            )
        if source.session_id != session_id:
            raise RuntimeError(
                f"the source found for session {short_repr(session_id)} serves "
                f"{short_repr(source.session_id)}"
            )
        return source

    async def events(request: Request) -> Response:
        session_id: str = request.path_params["session_id"]
        held: list[LiveReplaySubscription] = []
        try:
            source = await find(session_id)
            cursor = _cursor_param(request, session_id)
            follow = _follow_param(request)
            if cursor is None:
                fresh = await _resolve(source.current_session_observation())
                if not isinstance(fresh, SessionObservation):
                    raise LiveReplayStoreFailure(
                        f"current_session_observation answered {type(fresh).__name__}"
                    )
                cursor = fresh.cursor
            if not follow:
                done = await _resolve(source.resume_session_observation(cursor))
                if isinstance(done, GapResume):
                    body = _rows(
                        [ReplayCursorRow(cursor), ReplayGapRow(done.gap, done.observation)],
                        protocol_version,
                    )
                    start = "gap"
                elif isinstance(done, Replayed):
                    body = _rows([ReplayCursorRow(cursor)], protocol_version)
                    body += _event_rows(done.events, protocol_version, session_id)
                    start = "replay"
                else:
                    raise LiveReplayStoreFailure(
                        f"resume_session_observation answered {type(done).__name__}"
                    )
                return Response(
                    body,
                    media_type=NDJSON_MEDIA_TYPE,
                    headers={STREAM_START_HEADER: start, "Cache-Control": "no-store"},
                )
            first = await _resolve(source.subscribe_session_observation(cursor))
            if isinstance(first, Subscribed):
                if not streams.add(first.subscription):
                    raise _ServerStopping("the server is stopping")
                held.append(first.subscription)
                start = "replay"
            elif isinstance(first, GapResume):
                start = "gap"
            else:
                raise LiveReplayStoreFailure(
                    f"subscribe_session_observation answered {type(first).__name__}"
                )
        except Exception as err:
            for subscription in held:
                streams.release(subscription)
            return _error_response(err, session_id)

        def cleanup() -> None:
            for subscription in held:
                streams.release(subscription)

        headers = {
            STREAM_START_HEADER: start,
            "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # a proxy in front must not buffer a live stream
        }
        if keepalive_s is not None:
            headers[KEEPALIVE_HEADER] = f"{keepalive_s:g}"
        rows = _relay(first, source, cursor, protocol_version, streams, held, keepalive_s)
        return _RowStreamResponse(rows, cleanup, headers)

    async def observation(request: Request) -> Response:
        session_id: str = request.path_params["session_id"]
        try:
            source = await find(session_id)
            fresh = await _resolve(source.current_session_observation())
            if not isinstance(fresh, SessionObservation):
                raise LiveReplayStoreFailure(
                    f"current_session_observation answered {type(fresh).__name__}"
                )
            document = fresh.to_dict(protocol_version)
            body = encode_json(document).encode("utf-8")
        except Exception as err:
            return _error_response(err, session_id)
        return Response(
            body, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "bad_request")
        detail = exc.detail if isinstance(exc, HTTPException) else "error"
        return _error_body(status, code, str(detail))

    app = Starlette(
        routes=[
            Route("/sessions/{session_id:path}/events", events, methods=["GET"]),
            Route("/sessions/{session_id:path}/observation", observation, methods=["GET"]),
        ],
        exception_handlers={404: http_error, 405: http_error},
    )
    app.state.lash_streams = streams
    return app


def _lookup(sources: Any) -> SourceLookup:
    if isinstance(sources, ObservationSource):
        only = sources
        return lambda session_id: only if session_id == only.session_id else None
    if isinstance(sources, Mapping):
        table = sources
        return lambda session_id: table.get(session_id)
    if callable(sources):
        lookup: SourceLookup = sources
        return lookup
    raise TypeError(
        "sources must be an ObservationSource (a RuntimeHandle, ...), a mapping of session id "
        f"to source, or a callable session id -> source | None; not {type(sources).__name__}"
    )


#: Running server tasks: the event loop keeps only weak references to tasks, and a server whose
#: ``ObservationServer`` was dropped must go on serving until stopped.
_RUNNING: set[asyncio.Task[None]] = set()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn's server without its signal handlers: it runs inside a host's event loop (a
    Jupyter kernel, whose SIGINT is the interrupt), and the host stops it with ``stop()``."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class ObservationServer:
    """An ASGI app served by uvicorn on the running event loop; ``await serve(...)`` or
    ``await ObservationServer.start(app, ...)`` makes one. ``url`` is ``http://host:port``;
    ``stop()`` (or leaving ``async with``) ends it, first closing the app's open streams."""

    def __init__(
        self,
        server: uvicorn.Server,
        task: asyncio.Task[None],
        host: str,
        port: int,
        streams: _Streams | None,
    ) -> None:
        self._server = server
        self._task = task
        self.host = host
        self.port = port
        self._streams = streams

    @classmethod
    async def start(
        cls,
        app: Any,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str | int = "warning",
        startup_timeout_s: float = 10.0,
    ) -> ObservationServer:
        """Serve the ASGI ``app`` on ``host:port`` (``port=0``: a free port) from a task on the
        running loop. Raises ``OSError`` when the address cannot be bound (in use, say) and
        ``RuntimeError`` when uvicorn does not start within ``startup_timeout_s`` seconds."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
        except BaseException:
            sock.close()
            raise
        bound_port: int = sock.getsockname()[1]
        streams = getattr(getattr(app, "state", None), "lash_streams", None)
        if isinstance(streams, _Streams):
            streams.stopping = False
        else:
            streams = None
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            http="h11",
            ws="none",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
        )
        server = _EmbeddedServer(config)

        async def run() -> None:
            try:
                await server.serve(sockets=[sock])
            except SystemExit as err:  # uvicorn exits on startup failures: never in our loop
                raise RuntimeError(f"uvicorn could not start (exit status {err.code})") from None
            finally:
                sock.close()

        task = asyncio.get_running_loop().create_task(run(), name=f"lash-http:{bound_port}")
        _RUNNING.add(task)
        task.add_done_callback(_RUNNING.discard)
        deadline = asyncio.get_running_loop().time() + startup_timeout_s
        while not server.started:
            if task.done():
                task.result()  # raises why it ended
                raise RuntimeError("uvicorn ended before it started")
            if asyncio.get_running_loop().time() > deadline:
                server.should_exit = server.force_exit = True
                task.cancel()
                raise RuntimeError(f"uvicorn did not start within {startup_timeout_s} s")
            await asyncio.sleep(0.005)
        return cls(server, task, host, bound_port, streams)

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<ObservationServer {self.url} {state} open_streams={self.open_streams}>"

    @property
    def url(self) -> str:
        """``http://host:port`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def events_url(self, session_id: str) -> str:
        """The events URL of ``session_id`` (what ``HttpSource`` takes)."""
        return f"{self.url}/sessions/{urllib.parse.quote(session_id, safe='')}/events"

    def observation_url(self, session_id: str) -> str:
        return f"{self.url}/sessions/{urllib.parse.quote(session_id, safe='')}/observation"

    @property
    def running(self) -> bool:
        return not self._task.done()

    @property
    def open_streams(self) -> int:
        """Following responses open now (their subscriptions); 0 for a foreign app."""
        return len(self._streams.open) if self._streams is not None else 0

    async def stop(self, timeout_s: float = 10.0) -> None:
        """End the server: close our open streams (their responses end at once), stop
        accepting, and wait for uvicorn to finish (forced after ``timeout_s`` seconds).
        Idempotent; a failure of the server task is raised."""
        if self._streams is not None:
            self._streams.close_all()
        self._server.should_exit = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            while True:
                left = deadline - loop.time()
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), min(STALLED_WRITE_S, left))
                    return
                except asyncio.TimeoutError:
                    if left <= STALLED_WRITE_S:
                        raise
                self._drop_stalled_clients()
        except asyncio.TimeoutError:
            self._server.force_exit = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _drop_stalled_clients(self) -> None:
        """Close the connections whose client stopped reading (uvicorn's flow control paused
        their writes): a response blocked in such a write does not end when its subscription
        closes, and uvicorn would cancel it at its graceful-shutdown timeout with an error. Here
        the response sees a disconnect and ends quietly; the client resumes from its cursor."""
        for connection in list(self._server.server_state.connections):
            flow = getattr(connection, "flow", None)
            transport = getattr(connection, "transport", None)
            if getattr(flow, "write_paused", False) and isinstance(transport, asyncio.Transport):
                transport.abort()

    async def __aenter__(self) -> ObservationServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()


async def serve(
    sources: Sources,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    protocol_version: int = DEFAULT_PROTOCOL_VERSION,
    keepalive_s: float | None = DEFAULT_KEEPALIVE_S,
    log_level: str | int = "warning",
) -> ObservationServer:
    """Serve ``sources`` (as ``observation_app`` takes them, with ``protocol_version`` and
    ``keepalive_s``) on ``host:port`` from a task on the running event loop (``port=0``: a free
    port; read it from ``.port`` / ``.url``). uvicorn installs no signal handlers and logs at
    ``log_level``. ``await server.stop()`` or ``async with`` ends it. Raises ``OSError`` when the
    address cannot be bound."""
    app = observation_app(sources, protocol_version=protocol_version, keepalive_s=keepalive_s)
    return await ObservationServer.start(app, host=host, port=port, log_level=log_level)


# === client =======================================================================================


class HttpSourceError(LiveReplayStoreFailure):
    """An HTTP source cannot serve: the service is down, refused the connection, timed out,
    broke a stream, answered a 5xx or another status it should not, or sent a document that is
    not one. ``status`` is the HTTP status (``None`` when no response came). A
    ``LiveReplayStoreFailure``, so a ``SessionFollower`` treats the source as down. Cursor errors
    the service reports are ``MalformedCursorError`` / ``WrongSessionError`` instead."""

    def __init__(self, url: str, status: int | None, message: str) -> None:
        self.url = url
        self.status = status
        super().__init__(message)

    def __str__(self) -> str:
        status = f" (HTTP {self.status})" if self.status is not None else ""
        return f"HTTP source {self.url}{status}: {self.message}"


class UnknownSessionError(HttpSourceError):
    """The service does not serve ``session_id`` (a 404 ``unknown_session``)."""

    def __init__(self, url: str, session_id: str, message: str | None = None) -> None:
        self.session_id = session_id
        super().__init__(url, 404, message or f"no session `{session_id}` is served here")


@contextlib.contextmanager
def _http_errors(url: str, status: int | None = None) -> Iterator[None]:
    """The client's one boundary for transport errors (httpcore's ``map_exceptions``)."""
    try:
        yield
    except (httpx.TimeoutException, TimeoutError) as err:
        raise HttpSourceError(url, status, f"timed out ({type(err).__name__})") from err
    except httpx.HTTPError as err:
        raise HttpSourceError(url, status, error_message(err, 300)) from err
    except OSError as err:
        raise HttpSourceError(url, status, error_message(err, 300)) from err


def _status_error(url: str, status: int, body: bytes, session_id: str) -> LiveReplayStoreError:
    """The error for a non-200 answer, from our JSON error body when there is one."""
    document: Any = None
    with contextlib.suppress(JsonValueError):
        document = decode_json(body) if body else None
    code = message = None
    if isinstance(document, Mapping) and document.get("type") == "error":
        code = document.get("code")
        raw_message = document.get("message")
        message = raw_message if isinstance(raw_message, str) else None
    if status == 400 and code == "malformed_cursor":
        text = message or "the service refused the cursor"
        return MalformedCursorError(text.removeprefix("malformed session cursor: "))
    if status == 400 and code == "wrong_session":
        assert isinstance(document, Mapping)
        expected = document.get("expected_session_id")
        actual = document.get("actual_session_id")
        return WrongSessionError(
            expected if isinstance(expected, str) else session_id,
            actual if isinstance(actual, str) else "?",
        )
    if status == 404 and code == "unknown_session":
        return UnknownSessionError(url, session_id, message)
    if message is None:
        text = body[:200].decode("utf-8", "replace").strip()
        message = f"unexpected answer: {short_repr(text, 200)}" if text else "unexpected answer"
    return HttpSourceError(url, status, message)


def _is_lash_error(body: bytes) -> bool:
    with contextlib.suppress(JsonValueError):
        document = decode_json(body)
        return isinstance(document, Mapping) and document.get("type") == "error"
    return False


async def _read_document(response: httpx.Response, url: str) -> bytes:
    """A response body of at most ``MAX_DOCUMENT_BYTES`` (``HttpSourceError`` beyond)."""
    body = bytearray()
    with _http_errors(url, response.status_code):
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_DOCUMENT_BYTES:
                raise HttpSourceError(
                    url, response.status_code, f"body larger than {MAX_DOCUMENT_BYTES} bytes"
                )
    return bytes(body)


_LashRow = Union[ReplayCursorRow, ObservationRow, ReplayGapRow]
_QUIET = object()


class _RowStream:
    """One open NDJSON response. A reader task decodes it into a buffer of lash rows (the source
    counts application rows and errors), at most ``MAX_BUFFERED_ROWS`` rows or
    ``MAX_BUFFERED_BYTES`` ahead of the consumer; ``ended`` once the response is over, with
    ``cause`` the transport error if any. A stream whose server announces keepalives
    (``Lash-Keepalive: S``) and then sends nothing for ``STALE_KEEPALIVES * S`` seconds is
    ended as broken (a half-open connection, a partitioned network)."""

    def __init__(self, source: HttpSource, response: httpx.Response, url: str) -> None:
        self.source = source
        self.response = response
        self.url = url
        announced = response.headers.get(STREAM_START_HEADER, "").strip().lower()
        self.announced: str | None = announced if announced in ("replay", "gap") else None
        self.stale_after_s = _stale_after(response.headers.get(KEEPALIVE_HEADER))
        self._rows: collections.deque[tuple[_LashRow, int]] = collections.deque()
        self._buffered_bytes = 0
        self.ended = False
        self.cause: HttpSourceError | None = None
        self.changed = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        source._streams.add(self)
        self._task = asyncio.get_running_loop().create_task(
            self._pump(), name=f"lash-http-source:{url}"
        )

    # -- the reader task ---------------------------------------------------------------------------

    async def _pump(self) -> None:
        decoder = StreamRowDecoder()
        chunks = self.response.aiter_bytes().__aiter__()
        status = self.response.status_code
        try:
            while True:
                try:
                    async with asyncio.timeout(self.stale_after_s):
                        chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    self.cause = HttpSourceError(
                        self.url,
                        status,
                        f"the stream sent nothing for {self.stale_after_s:g} s, not even a "
                        "keepalive: taken as broken",
                    )
                    return
                self._feed(decoder, chunk)
                self.changed.set()
                while self._full() and not self.ended:
                    self._space.clear()
                    await self._space.wait()
            for item in decoder.close():
                self._take(item, decoder.lines, b"")
        except httpx.HTTPError as err:
            self.cause = HttpSourceError(
                self.url, status, f"the stream broke: {error_message(err, 300)}"
            )
        except Exception as err:  # a bug in a row handler must not leave the stream hanging
            self.cause = HttpSourceError(self.url, status, f"reading the stream failed: {err!r}")
        finally:
            self.ended = True
            self.changed.set()
            self.source._streams.discard(self)
            with contextlib.suppress(Exception):
                await self.response.aclose()

    def _full(self) -> bool:
        return len(self._rows) >= MAX_BUFFERED_ROWS or self._buffered_bytes >= MAX_BUFFERED_BYTES

    def _feed(self, decoder: StreamRowDecoder, chunk: bytes) -> None:
        # line by line, so each row and error knows its line number (and its size)
        start, size = 0, len(chunk)
        while start < size:
            end = chunk.find(b"\n", start)
            stop = size if end < 0 else end + 1
            piece = chunk[start:stop]
            for item in decoder.feed(piece):
                self._take(item, decoder.lines, piece)
            start = stop

    def _take(self, item: StreamRow | StreamRowError, line: int, raw: bytes) -> None:
        source = self.source
        if isinstance(item, StreamRowError):
            source._stream_error(item, self.url)
        elif isinstance(item, OtherRow):
            source.skipped_rows[item.type] += 1
        else:
            other = _row_session(item)
            if other is not None and other != source.session_id:
                reason = (
                    f"a row of session {short_repr(other)}, "
                    f"not {short_repr(source.session_id)}"
                )
                source._stream_error(StreamRowError(line, reason, raw[:512]), self.url)
                return
            self._rows.append((item, len(raw)))
            self._buffered_bytes += len(raw)

    # -- the consumer (one at a time: the handshake, then the subscription) ---------------------

    def peek(self) -> _LashRow | None:
        return self._rows[0][0] if self._rows else None

    def pop(self) -> _LashRow:
        row, size = self._rows.popleft()
        self._buffered_bytes -= size
        self._space.set()
        return row

    def push_front(self, row: _LashRow) -> None:
        self._rows.appendleft((row, 0))

    async def next_row(self, timeout_s: float) -> _LashRow | None | object:
        """The next lash row; ``None`` once the stream ended; ``_QUIET`` after ``timeout_s``
        seconds without one."""
        try:
            async with asyncio.timeout(timeout_s):
                while True:
                    self.changed.clear()
                    if self._rows:
                        return self.pop()
                    if self.ended:
                        return None
                    await self.changed.wait()
        except TimeoutError:
            return _QUIET

    def close(self) -> None:
        """Stop reading and close the response (its reader task does, as it ends). Idempotent."""
        if not self.ended:
            self.ended = True
            self.changed.set()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nothing left to close
                self._task.cancel()

    async def wait_closed(self) -> None:
        with contextlib.suppress(BaseException):
            await self._task


def _stale_after(value: str | None) -> float | None:
    """Seconds of silence after which a stream announcing ``Lash-Keepalive: value`` is broken."""
    try:
        keepalive = float(value) if value is not None else math.nan
    except ValueError:
        return None
    if not (math.isfinite(keepalive) and keepalive > 0):
        return None
    return STALE_KEEPALIVES * keepalive


def _row_session(row: _LashRow) -> str | None:
    """The session a lash row names (a cursor that does not parse names none)."""
    if isinstance(row, ObservationRow):
        return row.event.session_id
    if isinstance(row, ReplayGapRow):
        return row.gap.session_id
    try:
        return row.cursor.parse().session_id
    except LiveReplayStoreError:
        return None


def _check_max(max_events: Any) -> int:
    if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1:
        raise InvalidObservationError(
            f"max_events must be a positive int, not {short_repr(max_events)}"
        )
    return max_events


class HttpSubscription(SubscriptionIteration):
    """A ``LiveReplaySubscription`` over one open NDJSON response of an ``HttpSource`` (see
    ``lash_core._replay.LiveReplaySubscription`` for the reads). Reads raise
    ``ReplayClosed`` once the response ended (the transport error, if any, as ``__cause__``),
    or a late ``replay_gap`` row arrived (kept by the source for the next subscribe), or after
    ``close()``; ``InvalidObservationError`` for a bad ``max_events``. Never ``SubscriberLagged``:
    a lagging server ends the response instead. ``close()`` closes the response."""

    def __init__(self, source: HttpSource, stream: _RowStream, start: SessionCursor) -> None:
        self._source = source
        self._stream = stream
        self._last = start
        self._closed = False
        self._ended = False
        self._cause: BaseException | None = None
        self._finalizer = weakref.finalize(self, stream.close)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "ended" if self._ended else "open"
        return f"<HttpSubscription {self._stream.url} {state}>"

    @property
    def session_id(self) -> str:
        return self._source.session_id

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def cursor(self) -> SessionCursor:
        """The cursor of the last event read (the start cursor before the first)."""
        return self._last

    def next_batch_nowait(self, max_events: int = 256) -> list[SessionObservationEvent]:
        _check_max(max_events)
        if self._closed:
            raise ReplayClosed()
        if self._ended:
            raise ReplayClosed() from self._cause
        stream = self._stream
        out: list[SessionObservationEvent] = []
        while len(out) < max_events:
            row = stream.peek()
            if row is None:
                break
            if isinstance(row, ObservationRow):
                stream.pop()
                out.append(row.event)
            elif isinstance(row, ReplayGapRow):
                if out:
                    break  # a batch that took events never raises: the gap is the next read's
                stream.pop()
                self._source._keep_gap(self._last, GapResume(row.gap, row.observation))
                self._end(None)
                raise ReplayClosed()
            else:  # a second replay_cursor: not a row a stream sends mid-way; passed over
                stream.pop()
                logger.info("passed over a replay_cursor row in the middle of %s", stream.url)
        if out:
            self._last = out[-1].cursor
            return out
        if stream.ended:
            self._end(stream.cause)
            raise ReplayClosed() from self._cause
        return out

    def next_nowait(self) -> SessionObservationEvent | None:
        batch = self.next_batch_nowait(1)
        return batch[0] if batch else None

    async def next_batch(self, max_events: int = 256) -> list[SessionObservationEvent]:
        _check_max(max_events)
        while True:
            self._stream.changed.clear()
            batch = self.next_batch_nowait(max_events)
            if batch:
                return batch
            await self._stream.changed.wait()

    async def next_event(self) -> SessionObservationEvent:
        return (await self.next_batch(1))[0]

    def _end(self, cause: BaseException | None) -> None:
        self._ended = True
        self._cause = cause
        self._finalizer()

    def close(self) -> None:
        """Close the response; reads raise ``ReplayClosed`` from now on. Idempotent."""
        self._closed = True
        self._finalizer()



@dataclasses.dataclass(frozen=True, slots=True)
class _KeptGap:
    """A late ``replay_gap`` (see the module rules): answered by the next call from ``cursor``."""

    cursor: SessionCursor
    resume: GapResume


class HttpSource:
    """An ``ObservationSource`` that follows a session's NDJSON stream over HTTP (see the module
    rules). Its methods are coroutines, so a ``SessionFollower`` on it uses its ``async`` API.

    ``HttpSource(url, *, timeout_s=10.0, client=None, session_id=None,
    observation_url="observation", resume_window_s=0.5)``:

    * ``url``: the session's events URL, ``http://host:port/sessions/{id}/events``; the session
      id comes from the path unless ``session_id`` is given (needed when the path has another
      shape);
    * ``timeout_s``: seconds to connect, for a response's head and for a stream's first row;
    * ``client``: an ``httpx.AsyncClient`` to use (and leave open); by default the source makes
      one and ``aclose()`` closes it;
    * ``observation_url``: the observation document's URL, relative to ``url`` (by default the
      sibling ``observation``), or ``None`` when the service has none;
    * ``resume_window_s``: seconds of quiet that end a ``resume`` from a foreign service.

    Counters: ``skipped_rows`` (application rows passed over, by type), ``stream_errors``
    (malformed lines and rows of other sessions), ``recent_stream_errors`` (the last few, as
    ``StreamRowError``). Raises ``InvalidObservationError`` for a URL it cannot follow."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        client: httpx.AsyncClient | None = None,
        session_id: str | None = None,
        observation_url: str | None = "observation",
        resume_window_s: float = DEFAULT_RESUME_WINDOW_S,
    ) -> None:
        try:
            events_url = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as err:
            raise InvalidObservationError(f"not a URL: {short_repr(url)} ({err})") from None
        if events_url.scheme not in ("http", "https") or not events_url.host:
            raise InvalidObservationError(
                f"an HttpSource needs an http:// or https:// URL with a host, not {short_repr(url)}"
            )
        if session_id is None:
            match = _EVENTS_PATH.search(events_url.raw_path.split(b"?", 1)[0].decode("ascii"))
            if match is None:
                raise InvalidObservationError(
                    f"cannot read a session id from {short_repr(url)}: expected "
                    ".../sessions/{id}/events, or give session_id="
                )
            try:
                session_id = urllib.parse.unquote(match.group(1), errors="strict")
            except UnicodeDecodeError:
                raise InvalidObservationError(
                    f"the session id in {short_repr(url)} is not UTF-8"
                ) from None
        if not isinstance(session_id, str) or not session_id:
            raise InvalidObservationError(
                f"session id must be a non-empty str, not {short_repr(session_id)}"
            )
        for name, value in (("timeout_s", timeout_s), ("resume_window_s", resume_window_s)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise InvalidObservationError(
                    f"{name} must be a positive number of seconds, not {value!r}"
                )
        self._url = events_url
        self._session_id = session_id
        self._observation_url = events_url.join(observation_url) if observation_url else None
        self.timeout_s = float(timeout_s)
        self.resume_window_s = float(resume_window_s)
        self._client = client if client is not None else httpx.AsyncClient()
        self._owns_client = client is None
        self._streams: set[_RowStream] = set()
        self._kept: _KeptGap | None = None
        self._closed = False
        self.skipped_rows: collections.Counter[str] = collections.Counter()
        self.stream_errors = 0
        self.recent_stream_errors: collections.deque[StreamRowError] = collections.deque(
            maxlen=MAX_KEPT_STREAM_ERRORS
        )

    def __repr__(self) -> str:
        return f"HttpSource({str(self._url)!r})"

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def url(self) -> str:
        return str(self._url)

    @property
    def observation_url(self) -> str | None:
        """Where the observation document is read (``None``: derived from the stream)."""
        return str(self._observation_url) if self._observation_url is not None else None

    @property
    def open_streams(self) -> int:
        """Responses this source has open now (subscriptions, a handshake under way)."""
        return len(self._streams)

    # -- ObservationSource -------------------------------------------------------------------------

    async def current_session_observation(self) -> SessionObservation:
        """The observation document from ``observation_url``, else the stream's ``replay_cursor``
        with an empty read view (see the module rules). Raises ``HttpSourceError``."""
        self._check_open()
        target = self._observation_url
        if target is not None:
            url = str(target)
            with _http_errors(url):
                async with asyncio.timeout(self.timeout_s):
                    async with self._client.stream(
                        "GET",
                        target,
                        headers={"Accept": "application/json"},
                        timeout=self.timeout_s,
                    ) as response:
                        body = await _read_document(response, url)
            status = response.status_code
            if status == 200:
                return self._observation_document(url, body)
            if status in (404, 405) and not _is_lash_error(body):
                logger.info("%s has no observation document: reading it from the stream", url)
                self._observation_url = None
            else:
                raise _status_error(url, status, body, self._session_id)
        stream = await self._open(None, follow=False)
        try:
            row = await self._first_row(stream)
        finally:
            stream.close()
        if not isinstance(row, ReplayCursorRow):
            raise HttpSourceError(
                stream.url, 200, "the stream did not start with a replay_cursor row"
            )
        return SessionObservation(ObservationSummary(self._session_id, 0), row.cursor)

    async def resume_session_observation(self, cursor: SessionCursor | str) -> Replayed | GapResume:
        """The events after ``cursor`` (``follow=0``), or ``GapResume``. Raises
        ``MalformedCursorError`` / ``WrongSessionError`` (before any request, or as the service
        reports them) and ``HttpSourceError``."""
        cursor = self._own(cursor)
        kept = self._take_kept(cursor)
        if kept is not None:
            return kept
        stream = await self._open(cursor, follow=False)
        try:
            events: list[SessionObservationEvent] = []
            row: Any = await self._first_row(stream)
            ours = stream.announced is not None
            while True:
                if isinstance(row, ReplayGapRow):
                    return GapResume(row.gap, row.observation)
                if isinstance(row, ObservationRow):
                    events.append(row.event)
                row = await stream.next_row(self.timeout_s if ours else self.resume_window_s)
                if row is None:
                    if stream.cause is not None:
                        raise stream.cause
                    return Replayed(tuple(events))
                if row is _QUIET:
                    if ours:
                        raise HttpSourceError(
                            stream.url, 200, f"the replay stalled for {self.timeout_s} s"
                        )
                    return Replayed(tuple(events))
        finally:
            stream.close()

    async def subscribe_session_observation(
        self, cursor: SessionCursor | str
    ) -> Subscribed | GapResume:
        """``Subscribed(HttpSubscription)`` from ``cursor``, or ``GapResume`` (see the module
        rules for how a gap is known). Raises like ``resume_session_observation``."""
        cursor = self._own(cursor)
        kept = self._take_kept(cursor)
        if kept is not None:
            return kept
        stream = await self._open(cursor, follow=True)
        handed = False
        try:
            row = await self._first_row(stream)
            if isinstance(row, ReplayGapRow):
                return GapResume(row.gap, row.observation)
            if isinstance(row, ObservationRow):
                stream.push_front(row)  # no replay_cursor row: the stream starts at once
            if stream.announced == "gap":
                row = await self._first_row(stream)
                if not isinstance(row, ReplayGapRow):
                    raise HttpSourceError(
                        stream.url, 200, "the stream announced a gap but sent no replay_gap row"
                    )
                return GapResume(row.gap, row.observation)
            if stream.announced is None:
                await asyncio.sleep(0)  # let rows already on the socket in
                gap = stream.peek()
                if isinstance(gap, ReplayGapRow):
                    return GapResume(gap.gap, gap.observation)
            handed = True
            return Subscribed(HttpSubscription(self, stream, cursor))
        finally:
            if not handed:
                stream.close()

    # -- lifecycle ---------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close every open response and, when the source made it, the HTTP client. Further
        calls raise ``HttpSourceError``. Idempotent."""
        self._closed = True
        streams = list(self._streams)
        for stream in streams:
            stream.close()
        for stream in streams:
            await stream.wait_closed()
        if self._owns_client:
            await self._client.aclose()

    async def __aenter__(self) -> HttpSource:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- internals ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise HttpSourceError(str(self._url), None, "the source was closed")

    def _own(self, cursor: SessionCursor | str) -> SessionCursor:
        self._check_open()
        cursor = as_cursor(cursor)
        cursor.parse_for_session(self._session_id)
        return cursor

    def _keep_gap(self, cursor: SessionCursor, resume: GapResume) -> None:
        self._kept = _KeptGap(cursor, resume)

    def _take_kept(self, cursor: SessionCursor) -> GapResume | None:
        kept, self._kept = self._kept, None
        if kept is not None and kept.cursor == cursor:
            return kept.resume
        return None  # a kept gap for another cursor is stale: the service is asked again

    def _stream_error(self, error: StreamRowError, url: str) -> None:
        self.stream_errors += 1
        self.recent_stream_errors.append(error)
        logger.warning("passed over line %d of %s: %s", error.line, url, error.reason)

    async def _open(self, cursor: SessionCursor | None, *, follow: bool) -> _RowStream:
        params = {"follow": "1" if follow else "0"}
        if cursor is not None:
            params["cursor"] = str(cursor)
        target = self._url.copy_merge_params(params)
        url = str(self._url)
        timeout = httpx.Timeout(self.timeout_s, read=None)  # a quiet stream sends nothing
        request = self._client.build_request(
            "GET", target, headers={"Accept": NDJSON_MEDIA_TYPE}, timeout=timeout
        )
        with _http_errors(url):
            async with asyncio.timeout(self.timeout_s):
                response = await self._client.send(request, stream=True)
        if response.status_code != 200:
            try:  # the stream's read timeout is off: an error body must not trickle forever
                with _http_errors(url, response.status_code):
                    async with asyncio.timeout(self.timeout_s):
                        body = await _read_document(response, url)
            finally:
                await response.aclose()
            raise _status_error(url, response.status_code, body, self._session_id)
        return _RowStream(self, response, url)

    async def _first_row(self, stream: _RowStream) -> _LashRow:
        row = await stream.next_row(self.timeout_s)
        if row is None:
            if stream.cause is not None:
                raise stream.cause
            raise HttpSourceError(stream.url, 200, "the stream ended before its first row")
        if row is _QUIET:
            raise HttpSourceError(stream.url, 200, f"no row within {self.timeout_s} s")
        assert isinstance(row, (ReplayCursorRow, ObservationRow, ReplayGapRow))
        return row

    def _observation_document(self, url: str, body: bytes) -> SessionObservation:
        try:
            fresh = SessionObservation.from_dict(decode_json(body))
        except (JsonValueError, WireFormatError) as err:
            raise HttpSourceError(url, 200, f"not an observation document: {err}") from None
        if fresh.read_view.session_id != self._session_id:
            raise HttpSourceError(
                url,
                200,
                f"the observation is of session {short_repr(fresh.read_view.session_id)}, "
                f"not {short_repr(self._session_id)}",
            )
        return fresh
