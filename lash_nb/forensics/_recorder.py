"""Recording a followed session to an observation log: ``Recorder``.

Rules (read these before the code)
----------------------------------
* **One reader, one writer.** A recorder reads its session through one ``SessionFollower`` (the
  gap, lag, resubscribe and retry policies are the follower's, never copied here) and is the
  only writer of its log: from ``start()`` to ``stop()`` it holds an exclusive ``fcntl.flock``
  on the file, so a second recorder on the same path, in this process or another, gets
  ``LogLockedError`` and writes nothing.
* **What it writes** (the line format is ``_records``'s; the rows are ``stream.md``'s, plus
  ``lagged``): a ``replay_cursor`` row each time it
  starts (the cursor the recording continues after) and each time the follower is back after
  an outage (``Reconnected``: its cursor); every event (its ``wire.md`` document); a
  ``replay_gap`` row for each ``GapResume`` (the gap with its requested and latest cursors, and
  the fresh observation); a ``lagged`` row for each ``Lagged``. Every line carries
  ``received_at``: when its batch was received (UTC, microseconds).
* **One write per batch.** The lines of one batch of follower items go to the file in one
  ``write`` on an unbuffered file (nothing waits in this process); ``fsync=True`` also syncs
  the file to disk after each batch (a blocking call of a few milliseconds on the loop).
* **Where it starts.** ``cursor`` given: after it (``"start"``, or ``Recorder.from_start``:
  after live position 0, so the retained history replays, or a ``trimmed`` gap is recorded).
  Else, when the log holds lines, after its last resume point (``LogTail``: the last line that
  carries one, read backwards from the end of the file a block at a time, so a 1 GB log costs a
  few kilobytes). Else the session's current tail: only new events. ``cursor`` applies to the
  first ``start()``; every later ``start()`` of the same recorder resumes from the log.
  ``start()`` asks the source once from there (what it replays, or its gap, is written), then
  returns when the follower is subscribed: every event after that is recorded.
* **No duplicates.** The follower resumes after the cursor of the last line written, so a
  stopped and restarted recording writes each event once: live positions in the log strictly
  increase (across a gap too: the fresh cursor is the store's tail). A given ``cursor`` that the
  log is already at or past (``from_start`` on a log recorded before) yields to the log's own
  resume point for the same reason: to record a stretch again, record to a new file.
* **A cut last line.** A log that does not end in ``\\n`` had a write cut short (a crash, a full
  disk). The recorder never appends onto it: ``start()`` ends it with ``\\n`` first, so the
  fragment stays one bad line (a row of ``LoadedLog.errors``), says so in a warning on the
  ``lash_nb.forensics`` logger and in ``statistics().terminated_line``, and resumes from the
  last complete line.
* **A log of another session is refused** (``LogSessionError``), as is a gzip-compressed log
  (recording appends plain JSON Lines) and a path that cannot be opened (``RecorderError``).
* **Errors.** ``start()`` raises what stops a recording from starting: ``RecorderError`` and its
  subclasses for the file, ``MalformedCursorError`` / ``WrongSessionError`` for ``cursor``, the
  source's own error when it cannot answer. Once started, an error inside the recording task
  (a write that fails: ``RecorderWriteError``; a source that gave up: its
  ``LiveReplayStoreFailure``; a stream that ended without a retry policy: ``ReplayClosed``)
  ends the recording, is kept as ``error`` and is raised by ``stop()``; the file keeps every
  line written before it.
* **An event the wire cannot carry** (a tool value that is NaN, say) is not lost silently and
  does not end the recording: it is written as an application row
  ``{"type":"unencodable","event_cursor":...,"event_type":...,"reason":...}`` (``load_log``
  counts it in ``skipped``), which is also a resume point.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as _dt
import inspect
import logging
import os
from typing import Any, Callable, Iterator

from lash_core import (
    DEFAULT_PROTOCOL_VERSION,
    GapResume,
    JsonValueError,
    LashError,
    Lagged,
    ObservationSource,
    Reconnected,
    RetryPolicy,
    SessionCursor,
    SessionCursorError,
    SessionFollower,
    SessionObservationEvent,
    WireFormatError,
    decode_json,
    encode_json,
    short_repr,
)
from lash_core._cursor import as_cursor
from lash_core._json import error_message

from .._loop import spawn
from ._records import (
    RECEIVED_AT,
    GapRecord,
    LagRecord,
    LineKind,
    LogLineError,
    decode_line,
    encode_line,
    format_received_at,
)

__all__ = [
    "Recorder",
    "RecorderStatistics",
    "RecorderError",
    "LogLockedError",
    "LogSessionError",
    "RecorderWriteError",
    "LogTail",
    "read_log_tail",
    "TAIL_BLOCK",
    "MAX_TAIL_LINE",
    "ROW_UNENCODABLE",
]

#: Seconds ``stop()`` waits by default for the recording to reach the session's tail.
DRAIN_S = 2.0

logger = logging.getLogger("lash_nb.forensics")

#: Bytes read per step when the tail of a log is read backwards: a few hundred typical lines.
TAIL_BLOCK = 64 * 1024
#: A line longer than this is passed over by the tail scan (as a bad line would be): it bounds
#: the memory a damaged log can make the scan hold. No lash document comes near it.
MAX_TAIL_LINE = 16 * 1024 * 1024
#: The application row a recorder writes for an event the wire cannot carry.
ROW_UNENCODABLE = "unencodable"

_START = "start"
#: the running recorders of this process, by the real path of their log (``Recorder.active``)
_ACTIVE: dict[str, Recorder] = {}
_GZIP_MAGIC = b"\x1f\x8b"


# --- errors ----------------------------------------------------------------------------------------


class RecorderError(LashError):
    """A recording cannot start or go on because of its log: ``path`` and ``reason``.

    The subclasses: ``LogLockedError`` (another recorder writes the log), ``LogSessionError``
    (the log records another session), ``RecorderWriteError`` (writing failed once recording).
    Cursor errors and a source that cannot answer are the source's own errors, not these."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(path, reason)

    def __str__(self) -> str:
        return f"cannot record to {self.path!r}: {self.reason}"


class LogLockedError(RecorderError):
    """Another recorder (in this process or another) holds the log's exclusive lock."""

    def __init__(self, path: str) -> None:
        super().__init__(
            path,
            "another recorder is writing to it (the file is locked; one of this process is "
            "`Recorder.active(path)`, which you can stop())",
        )


class LogSessionError(RecorderError):
    """The log records ``log_session_id``, not the source's ``expected_session_id``."""

    def __init__(self, path: str, expected_session_id: str, log_session_id: str) -> None:
        self.expected_session_id = expected_session_id
        self.log_session_id = log_session_id
        super().__init__(
            path,
            f"the log records session `{log_session_id}`, not `{expected_session_id}`: "
            "record each session to its own file",
        )


class RecorderWriteError(RecorderError):
    """Writing to the log failed (a full disk, a file size limit, an I/O error); the ``OSError``
    is chained. ``lines`` complete lines had been written by this recorder before it."""

    def __init__(self, path: str, reason: str, lines: int) -> None:
        self.lines = lines
        super().__init__(path, reason)

    def __str__(self) -> str:
        return (
            f"writing to {self.path!r} failed after {self.lines} lines: {self.reason} "
            "(the lines before it are kept)"
        )


# --- the tail of a log ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class LogTail:
    """Where a log leaves off, read from its end (``read_log_tail``).

    ``size``: bytes in the file. ``cursor``: the last resume point, i.e. the cursor of the last
    line that carries one (an event's cursor, a gap's fresh observation cursor (its
    ``latest_cursor`` for a bare gap document), a ``replay_cursor`` row's cursor, a ``lagged``
    row's ``resumed_from``, an ``unencodable`` row's ``event_cursor``), ``None`` when no line
    has one; ``kind`` that line's kind and ``offset`` its byte offset. ``session_id``: the
    session that cursor names (``None`` if it does not parse). ``unterminated``: the file does
    not end with ``\\n``; ``cut``: nor does its last line read as a line (a write cut short;
    a last line whole but for its ``\\n`` is not cut). ``bytes_read``: how much of the file
    the scan read."""

    size: int
    cursor: SessionCursor | None
    kind: LineKind | None
    offset: int | None
    session_id: str | None
    unterminated: bool
    cut: bool
    bytes_read: int


def _resume_point(raw: bytes) -> tuple[LineKind, SessionCursor] | None:
    """The resume cursor a log line carries (see ``LogTail``), or ``None`` (a bad line, a
    snapshot, an application row)."""
    try:
        kind, value, _ = decode_line(raw)
    except LogLineError:
        return None
    if kind is LineKind.EVENT:
        return kind, value.cursor
    if kind is LineKind.GAP:
        record: GapRecord = value
        fresh = record.observation
        return kind, (record.gap.latest_cursor if fresh is None else fresh.cursor)
    if kind is LineKind.CURSOR:
        return kind, value
    if kind is LineKind.LAGGED:
        lag: LagRecord = value
        return kind, lag.resumed_from
    if kind is LineKind.OTHER and value == ROW_UNENCODABLE:
        doc = decode_json(raw)
        cursor = doc.get("event_cursor")
        if isinstance(cursor, str) and cursor:
            return kind, SessionCursor(cursor)
    return None


def _lines_backwards(
    read: Callable[[int, int], bytes], size: int, block: int, max_line: int, counter: list[int]
) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for the lines of a file of ``size`` bytes, last first, read ``block``
    bytes at a time through ``read(offset, length)`` (``counter[0]`` adds up the bytes read).
    The empty tail after a final ``\\n`` is not a line; a line over ``max_line`` bytes is passed
    over without being held."""
    pos = size
    carry = b""  # the bytes from ``pos`` to the end of the line that continues past it
    skipping = False  # that line is over ``max_line``: passed over, not held
    at_end = True  # the next whole line is the file's last
    while pos > 0:
        start = max(0, pos - block)
        chunk = read(start, pos - start)
        counter[0] += len(chunk)
        pieces = chunk.split(b"\n")
        if len(pieces) > 1:
            # the line after the chunk's last ``\n`` is whole now; so is every piece but the first
            offset = start + len(chunk) - len(pieces[-1])
            lines = [(offset, pieces[-1] + carry, skipping)]
            for piece in reversed(pieces[1:-1]):
                offset -= len(piece) + 1
                lines.append((offset, piece, False))
            for offset, line, skipped in lines:
                if at_end:
                    at_end = False
                    if offset == size:
                        continue  # after the final ``\n``: not a line
                if not skipped and len(line) <= max_line:
                    yield offset, line
            carry, skipping = pieces[0], False
        elif not skipping:
            carry = chunk + carry
        if len(carry) > max_line:
            carry, skipping = b"", True
        pos = start
    if not skipping and len(carry) <= max_line:
        yield 0, carry


def _scan_tail(
    read: Callable[[int, int], bytes],
    size: int,
    *,
    block: int = TAIL_BLOCK,
    max_line: int = MAX_TAIL_LINE,
) -> LogTail:
    """``LogTail`` of a file of ``size`` bytes read through ``read(offset, length)``."""
    if size <= 0:
        return LogTail(0, None, None, None, None, False, False, 0)
    counter = [1]
    unterminated = read(size - 1, 1) != b"\n"
    cut = unterminated  # until its last line is seen whole
    for offset, line in _lines_backwards(read, size, block, max_line, counter):
        point = _resume_point(line)
        if unterminated and offset + len(line) == size:
            cut = point is None and not _decodes(line)
        if point is None:
            continue
        kind, cursor = point
        try:
            session_id: str | None = cursor.parse().session_id
        except SessionCursorError:
            session_id = None
        return LogTail(size, cursor, kind, offset, session_id, unterminated, cut, counter[0])
    return LogTail(size, None, None, None, None, unterminated, cut, counter[0])


def _decodes(line: bytes) -> bool:
    try:
        decode_line(line)
    except LogLineError:
        return False
    return True


def _fd_reader(fd: int) -> Callable[[int, int], bytes]:
    def read(offset: int, length: int) -> bytes:
        parts = []
        while length > 0:
            part = os.pread(fd, length, offset)
            if not part:
                break  # the file shrank under us: read what is there
            parts.append(part)
            offset += len(part)
            length -= len(part)
        return b"".join(parts)

    return read


def read_log_tail(path: str | os.PathLike[str]) -> LogTail:
    """Where the log at ``path`` leaves off (``LogTail``), reading it backwards from its end a
    block (``TAIL_BLOCK``) at a time: the last resume point costs one block for any ordinary
    log, however long. ``RecorderError`` when the file cannot be read or is gzip-compressed."""
    name = os.fspath(path)
    try:
        with open(name, "rb") as f:
            return _tail_of(name, f.fileno())
    except OSError as err:
        raise RecorderError(str(name), error_message(err, 300)) from err


def _tail_of(path: str, fd: int) -> LogTail:
    size = os.fstat(fd).st_size
    if size >= 2 and os.pread(fd, 2, 0) == _GZIP_MAGIC:
        raise RecorderError(
            path, "it is gzip-compressed: a recording appends plain JSON Lines (record to a new file)"
        )
    return _scan_tail(_fd_reader(fd), size)



# --- statistics ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class RecorderStatistics:
    """A recorder's counts over all its runs (``Recorder.statistics()``, ``stop()``).

    ``lines``: complete lines it wrote (cursor, event, gap, lagged and unencodable rows);
    ``events`` / ``gaps`` / ``lags`` / ``reconnects`` / ``unencodable``: the lines of each kind
    (``reconnects``: cursor rows after an outage, not those of ``start()``); ``lagged_events``:
    live events the lags skipped (replayed, or covered by a gap, after); ``bytes``: bytes it
    wrote (a ``\\n`` ending a cut line included); ``last_cursor``: the resume point of its last
    line (``None`` before the first); ``started_from``: the cursor the last ``start()``
    continued after; ``terminated_line``: a ``start()`` found the log's last line without its
    ``\\n`` and ended it; ``runs``: how many times it started; ``running``: recording now."""

    path: str
    session_id: str
    running: bool
    runs: int
    lines: int
    events: int
    gaps: int
    lags: int
    lagged_events: int
    reconnects: int
    unencodable: int
    bytes: int
    last_cursor: SessionCursor | None
    started_from: SessionCursor | None
    terminated_line: bool


# --- the recorder ----------------------------------------------------------------------------------


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


async def _later(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _later_of(given: SessionCursor | None, logged: SessionCursor | None) -> SessionCursor | None:
    """Where a run starts: ``given`` unless the log already holds lines at or past it (then the
    log's cursor: a recording never writes an event twice); either when the other is ``None``."""
    if given is None or logged is None:
        return given if logged is None else logged
    given_at, logged_at = given.live_position(), logged.live_position()
    if given_at is not None and logged_at is not None and given_at > logged_at:
        return given
    return logged


def _cursor_of(item: Any) -> SessionCursor:
    """The resume point after the line of a follower item (see ``LogTail``)."""
    if isinstance(item, SessionCursor):
        return item
    if isinstance(item, GapResume):
        return item.observation.cursor
    if isinstance(item, Lagged):
        return item.resumed_from
    cursor: SessionCursor = item.cursor  # an event, or Reconnected
    return cursor


class _PartialWrite(Exception):
    """``written`` bytes of a write went in before ``error``."""

    def __init__(self, written: int, error: OSError) -> None:
        self.written = written
        self.error = error
        super().__init__(written, error)


class Recorder:
    """Follow ``source`` and append what arrives to the JSON Lines log at ``path`` (see the
    module rules).

    ``Recorder(source, path, *, cursor=None, protocol_version=3, retry=RetryPolicy(),
    fsync=False)``: ``source`` any ``ObservationSource`` (a ``RuntimeHandle``, a
    ``StoreSource``, a remote source); ``cursor`` a ``SessionCursor`` or cursor string to record
    after, ``"start"`` for position 0, ``None`` to resume the log (or, for an empty log, start at
    the session's tail) (a log already past ``cursor`` resumes from its own: module rules); ``protocol_version`` the ``wire.md`` version written; ``retry`` the
    follower's ``RetryPolicy`` (``None``: the first outage ends the recording); ``fsync`` sync
    each batch to disk. ``TypeError`` / ``ValueError`` for arguments of the wrong kind (the
    cursor itself is checked by ``start()``).

    ``await rec.start()`` and ``await rec.stop()`` (-> ``RecorderStatistics``), or
    ``async with Recorder(...) as rec:``; ``rec.statistics()`` at any time. A stopped recorder
    can start again: it resumes from its log."""

    def __init__(
        self,
        source: ObservationSource,
        path: str | os.PathLike[str],
        *,
        cursor: SessionCursor | str | None = None,
        protocol_version: int = DEFAULT_PROTOCOL_VERSION,
        retry: RetryPolicy | None = RetryPolicy(),
        fsync: bool = False,
    ) -> None:
        session_id = getattr(source, "session_id", None)
        if not isinstance(session_id, str) or not session_id:
            raise TypeError(
                f"source must be an ObservationSource with a session_id, not {short_repr(source)}"
            )
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, not {type(path).__name__}")
        name = os.fspath(path)
        if not isinstance(name, str) or not name:
            raise ValueError(f"path must be a non-empty file name, not {short_repr(name)}")
        if cursor is not None and not isinstance(cursor, (SessionCursor, str)):
            raise TypeError(
                "cursor must be a SessionCursor, a cursor string, 'start' or None, "
                f"not {type(cursor).__name__}"
            )
        if (
            isinstance(protocol_version, bool)
            or not isinstance(protocol_version, int)
            or protocol_version < 1
        ):
            raise ValueError(
                f"protocol_version must be a positive int, not {short_repr(protocol_version)}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise TypeError(f"retry must be a RetryPolicy or None, not {short_repr(retry)}")
        if not isinstance(fsync, bool):
            raise TypeError(f"fsync must be a bool, not {short_repr(fsync)}")
        self._source = source
        self._session_id: str = session_id
        self._path = name
        self._key = os.path.realpath(name)
        self._cursor_arg = cursor
        self._protocol_version = protocol_version
        self._retry = retry
        self._fsync = fsync
        self._file: Any = None  # the unbuffered, locked log file while recording
        self._follower: SessionFollower | None = None
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None
        self._runs = 0
        self._lines = 0
        self._counts = dict.fromkeys(
            ("events", "gaps", "lags", "lagged_events", "reconnects", "unencodable"), 0
        )
        self._bytes = 0
        self._last_cursor: SessionCursor | None = None
        self._started_from: SessionCursor | None = None
        self._terminated_line = False

    @classmethod
    def from_start(
        cls, source: ObservationSource, path: str | os.PathLike[str], **options: Any
    ) -> Recorder:
        """A recorder from position 0 of the session (``cursor="start"``): the retained history
        is recorded first, or a ``trimmed`` gap when retention dropped its beginning."""
        return cls(source, path, cursor=_START, **options)

    @classmethod
    def active(cls, path: str | os.PathLike[str]) -> Recorder | None:
        """The recorder of this process that holds the log at ``path`` now, if any: the way to
        ``stop()`` one whose variable a notebook has lost (re-running a cell makes a new
        recorder, which gets ``LogLockedError`` while the old one records)."""
        return _ACTIVE.get(os.path.realpath(os.fspath(path)))

    # -- state -------------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return self._path

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def running(self) -> bool:
        """Recording now: started, and neither stopped nor ended by an error."""
        return self._task is not None and not self._task.done()

    @property
    def error(self) -> BaseException | None:
        """What ended the last run (``stop()`` raises it), or ``None``."""
        return self._error

    @property
    def follower(self) -> SessionFollower | None:
        """The ``SessionFollower`` of the current (or last) run: its gap log and counts."""
        return self._follower

    def statistics(self) -> RecorderStatistics:
        """The counts now (no I/O)."""
        counts = self._counts
        return RecorderStatistics(
            path=self._path,
            session_id=self._session_id,
            running=self.running,
            runs=self._runs,
            lines=self._lines,
            events=counts["events"],
            gaps=counts["gaps"],
            lags=counts["lags"],
            lagged_events=counts["lagged_events"],
            reconnects=counts["reconnects"],
            unencodable=counts["unencodable"],
            bytes=self._bytes,
            last_cursor=self._last_cursor,
            started_from=self._started_from,
            terminated_line=self._terminated_line,
        )

    def __repr__(self) -> str:
        state = "running" if self.running else "failed" if self._error is not None else "stopped"
        counts = self._counts
        return (
            f"<Recorder {self._path!r} session={self._session_id!r} {state} lines={self._lines} "
            f"events={counts['events']} gaps={counts['gaps']} lags={counts['lags']} "
            f"reconnects={counts['reconnects']}>"
        )

    # -- start and stop ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open and lock the log, read where it leaves off, check it against the source, and
        record on the running loop; returns once the follower is subscribed (the lines of what
        the source replayed after the start cursor, or of its gap, are written by then).

        Raises ``RecorderError`` (running already, or a last run that failed and was not
        stopped; a file that cannot be opened, or is gzip), ``LogLockedError``,
        ``LogSessionError``, ``RecorderWriteError``, ``MalformedCursorError`` /
        ``WrongSessionError`` (``cursor``), or the source's own error when it cannot answer
        (``LiveReplayStoreFailure``, ...). Nothing is left open or locked then."""
        if self._task is not None:
            if not self._task.done():
                raise RecorderError(self._path, "this recorder is running already")
            raise RecorderError(
                self._path, f"its last run failed ({self._error}); call stop() before start()"
            )
        self._error = None  # stop() raised it
        requested = self._requested_cursor() if self._runs == 0 else None
        loop = asyncio.get_running_loop()
        self._file = self._open_locked()
        try:
            tail = self._check_log()
            start = _later_of(requested, tail.cursor)
            if start is None:
                fresh = await _later(self._source.current_session_observation())
                start = fresh.cursor
            follower = SessionFollower(self._source, start, retry=self._retry)
            self._follower = follower
            result = await follower.catch_up()  # the source answers now, or start() fails
            if tail.unterminated:
                self._terminate_line(tail)
            items: list[Any] = [start]
            items.extend((result,) if isinstance(result, GapResume) else result.events)
            self._write_batch(items)
            await follower.subscribe()  # every event after this is recorded (its gaps: by the task)
            self._started_from = start
            self._runs += 1
        except BaseException:
            self._close()
            raise
        _ACTIVE[self._key] = self
        task = spawn(self._record(follower), loop=loop)
        self._task = task

    async def stop(self, *, drain_s: float = DRAIN_S) -> RecorderStatistics:
        """Stop recording, close the follower and the file (which releases the lock), and
        return the statistics. First, for up to ``drain_s`` seconds, the recording catches up
        with the session's tail as the source reports it now, so what was appended before
        ``stop()`` is in the log (``0``: stop at once; what is left is recorded by the next
        ``start()``). A batch being written is finished first (writes happen between awaits).
        Raises the error that ended the last run, if one did (see ``error``), on every call
        until the next ``start()``. Safe to call twice, or before ``start()``."""
        if isinstance(drain_s, bool) or not isinstance(drain_s, (int, float)) or not drain_s >= 0:
            raise ValueError(f"drain_s must be a number of seconds >= 0, not {drain_s!r}")
        if self._task is not None and not self._task.done() and drain_s > 0:
            await self._drain(self._task, float(drain_s))
        task, self._task = self._task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    current = asyncio.current_task()
                    if current is not None and current.cancelling():
                        raise  # stop() itself is being cancelled
        finally:
            self._close()
        if self._error is not None:
            raise self._error
        return self.statistics()

    async def _drain(self, task: asyncio.Task[None], limit_s: float) -> None:
        """Wait (at most ``limit_s``) until the follower's cursor reaches the source's tail as
        read now; best effort: a source that cannot say, or cursors that do not parse, skip it."""
        follower = self._follower
        if follower is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        try:
            fresh = await asyncio.wait_for(
                _later(self._source.current_session_observation()), limit_s
            )
            target = fresh.cursor.parse().live_position
        except (Exception, asyncio.TimeoutError):
            return
        while not task.done() and loop.time() < deadline:
            cursor = follower.cursor
            try:
                if cursor is not None and cursor.parse().live_position >= target:
                    return
            except Exception:
                return
            await asyncio.sleep(0.005)

    async def __aenter__(self) -> Recorder:
        await self.start()
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        if exc is None:
            await self.stop()
            return
        try:
            await self.stop()
        except Exception as err:  # the body's error goes on; the recorder's stays in ``error``
            exc.add_note(f"the recorder of {self._path!r} failed too: {err}")

    # -- the file ----------------------------------------------------------------------------------

    def _requested_cursor(self) -> SessionCursor | None:
        cursor = self._cursor_arg
        if cursor is None:
            return None
        if isinstance(cursor, str) and cursor == _START:
            return SessionCursor.new(self._session_id, 0, 0)
        cursor = as_cursor(cursor)
        cursor.parse_for_session(self._session_id)  # MalformedCursorError, WrongSessionError
        return cursor

    def _open_locked(self) -> Any:
        try:
            import fcntl  # POSIX only: imported here so that the module itself imports anywhere
        except ImportError:
            raise RecorderError(
                self._path, "this platform has no fcntl.flock, so one writer cannot be ensured"
            ) from None
        try:
            file = open(self._path, "a+b", buffering=0)  # O_APPEND: every write goes at the end
        except OSError as err:
            raise RecorderError(self._path, error_message(err, 300)) from err
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.close()
            raise LogLockedError(self._path) from None
        except OSError as err:
            file.close()
            raise RecorderError(self._path, f"cannot lock it: {error_message(err, 300)}") from err
        return file

    def _check_log(self) -> LogTail:
        """The log's tail, read under the lock: ``LogSessionError`` for another session's log,
        ``RecorderError`` for a last cursor that does not parse (its session is unknown)."""
        try:
            tail = _tail_of(self._path, self._file.fileno())
        except OSError as err:
            raise RecorderError(self._path, error_message(err, 300)) from err
        if tail.cursor is not None:
            if tail.session_id is None:
                raise RecorderError(
                    self._path,
                    f"the cursor of its last line with one (at byte {tail.offset}) is malformed: "
                    "its session cannot be checked",
                )
            if tail.session_id != self._session_id:
                raise LogSessionError(self._path, self._session_id, tail.session_id)
        return tail

    def _terminate_line(self, tail: LogTail) -> None:
        try:
            self._write(b"\n")
        except _PartialWrite as failure:
            raise RecorderWriteError(
                self._path, error_message(failure.error, 300), self._lines
            ) from failure.error
        self._terminated_line = True
        logger.warning(
            "observation log %r did not end with a newline; the recorder ended its last line "
            "before appending: %s",
            self._path,
            "a line cut short, which loads as one bad line (LoadedLog.errors)"
            if tail.cut
            else "a whole line that only missed its newline",
        )

    def _write(self, data: bytes) -> None:
        """All of ``data`` into the file: one ``write`` unless the OS takes less; then an
        ``fsync`` when asked. ``_PartialWrite`` says how much went in before an ``OSError``."""
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                n = self._file.write(view[written:])
                if not n:
                    raise OSError("the file took no bytes")
                written += n
            if self._fsync:
                os.fsync(self._file.fileno())
        except OSError as err:
            self._bytes += written
            raise _PartialWrite(written, err) from err
        self._bytes += written

    def _encode(self, item: Any, received_at: _dt.datetime) -> tuple[bytes, bool]:
        """``(line, unencodable)`` for a follower item (or the start cursor): an item the wire
        cannot carry becomes an ``unencodable`` row."""
        if isinstance(item, Reconnected):
            item = item.cursor
        try:
            line = encode_line(
                item, received_at=received_at, protocol_version=self._protocol_version
            )
        except (WireFormatError, JsonValueError) as err:
            payload = getattr(item, "payload", None)
            kind = (
                "replay_gap" if isinstance(item, GapResume)
                else str(getattr(payload, "TYPE", None) or type(payload).__name__)
            )
            doc = {
                "type": ROW_UNENCODABLE,
                "event_cursor": str(_cursor_of(item)),
                "event_type": kind,
                "reason": error_message(err, 500),
                RECEIVED_AT: format_received_at(received_at),
            }
            try:
                text = encode_json(doc, separators=(",", ":"))
            except JsonValueError:  # a cursor or reason text the codec refuses: the bare facts
                doc.update(event_cursor=str(_cursor_of(item)).encode("utf-8", "replace").decode())
                doc.update(reason=type(err).__name__, event_type="unknown")
                text = encode_json(doc, separators=(",", ":"))
            return text.encode("utf-8") + b"\n", True
        return line, False

    def _write_batch(self, items: list[Any]) -> None:
        """The lines of ``items`` in one write; the counts count the lines that went in whole.
        ``RecorderWriteError`` when the write fails."""
        if not items:
            return
        received_at = _utc_now()
        encoded = [self._encode(item, received_at) for item in items]
        data = b"".join(line for line, _ in encoded)
        try:
            self._write(data)
        except _PartialWrite as failure:
            self._count(items, encoded, failure.written)
            raise RecorderWriteError(
                self._path, error_message(failure.error, 300), self._lines
            ) from failure.error
        self._count(items, encoded, len(data))

    def _count(self, items: list[Any], encoded: list[tuple[bytes, bool]], written: int) -> None:
        counts = self._counts
        end = 0
        for item, (line, unencodable) in zip(items, encoded):
            end += len(line)
            if end > written:
                return
            self._lines += 1
            if unencodable:
                counts["unencodable"] += 1
            elif isinstance(item, SessionObservationEvent):
                counts["events"] += 1
            elif isinstance(item, GapResume):
                counts["gaps"] += 1
            elif isinstance(item, Lagged):
                counts["lags"] += 1
                counts["lagged_events"] += item.count
            elif isinstance(item, Reconnected):
                counts["reconnects"] += 1
            self._last_cursor = _cursor_of(item)

    def _close(self) -> None:
        """Close the follower (kept for inspection) and the file, which releases the lock."""
        if _ACTIVE.get(self._key) is self:
            del _ACTIVE[self._key]
        if self._follower is not None:
            self._follower.close()
        file, self._file = self._file, None
        if file is not None:
            file.close()

    # -- the recording task ------------------------------------------------------------------------

    async def _record(self, follower: SessionFollower) -> None:
        """Until cancelled: each batch of follower items in one write. An error ends the run and
        is kept for ``stop()``: lash errors as they are, a write as ``RecorderWriteError``,
        anything else a source raised as ``RecorderError`` (chained)."""
        try:
            while True:
                items = await follower.next_items()
                self._write_batch(list(items))
        except asyncio.CancelledError:
            raise
        except LashError as err:
            self._error = err
        except Exception as err:
            failure = RecorderError(self._path, f"the source failed: {error_message(err, 300)}")
            failure.__cause__ = err
            self._error = failure
