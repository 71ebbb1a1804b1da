"""StoreSource: an ``ObservationSource`` on a bare ``LiveReplayStore``, for a process that follows a
session it does not run (a runtime in another kernel or service appends to a shared store, such as
``RedisLiveReplayStore``; this process reads the same session from it).

Rules:

* Replay, subscribe and gaps are the store's, answered exactly as ``RuntimeHandle`` answers them:
  a ``Gap`` becomes ``GapResume(LiveReplayGap(...), fresh observation)`` whose fresh cursor is
  the store's ``current_cursor`` for the session at that moment.
* This process has no runtime, so the fresh observation's read view is an empty
  ``ObservationSummary`` (the session id; turn index 0, no messages, usage zero): the store holds
  events, not the committed transcript, which a follower that needs it asks the runtime for. Revisions are carried, never used: the source's ``revision`` (0 by
  default) is what its fresh cursors carry.
* Cursor errors (``MalformedCursorError``, ``WrongSessionError``) are raised before the store is
  touched; a store that cannot serve raises ``LiveReplayStoreFailure``.
"""

from __future__ import annotations

from ._cursor import SessionCursor, SessionRevision, as_cursor
from ._errors import InvalidObservationError, LiveReplayStoreFailure
from ._gap import LiveReplayGapReason, ObservationSummary, SessionObservation
from ._handle import GapResume, gap_resume
from ._replay import Gap, LiveReplayStore, Replayed, Subscribed, _revision, _session_id

__all__ = ["StoreSource"]


class StoreSource:
    """``ObservationSource`` over ``store`` for ``session_id`` (see the module rules).

    ``StoreSource(store, session_id, *, revision=0)``; raises ``InvalidObservationError`` for a
    session id or revision the store would refuse."""

    def __init__(self, store: LiveReplayStore, session_id: str, *, revision: int = 0) -> None:
        if not isinstance(store, LiveReplayStore):
            raise InvalidObservationError(
                f"store must be a LiveReplayStore, not {type(store).__name__}"
            )
        self._store = store
        self._session_id = _session_id(session_id)
        self._revision = SessionRevision(_revision(revision))

    def __repr__(self) -> str:
        return f"StoreSource({self._store!r}, {self._session_id!r})"

    @property
    def session_id(self) -> str:
        return self._session_id

    @property
    def store(self) -> LiveReplayStore:
        return self._store

    def current_session_observation(self) -> SessionObservation:
        cursor = self._store.current_cursor(self._session_id, self._revision)
        if not isinstance(cursor, SessionCursor):
            raise LiveReplayStoreFailure(
                f"current_cursor returned {type(cursor).__name__}, not a SessionCursor"
            )
        summary = ObservationSummary(self._session_id, 0)
        return SessionObservation(summary, cursor)

    def resume_session_observation(self, cursor: SessionCursor | str) -> Replayed | GapResume:
        cursor = self._own(cursor)
        result = self._store.replay_after_cursor(cursor)
        if isinstance(result, Gap):
            return self._gap_resume(cursor, result.reason)
        if not isinstance(result, Replayed):
            raise LiveReplayStoreFailure(f"replay_after_cursor returned {type(result).__name__}")
        return result

    def subscribe_session_observation(self, cursor: SessionCursor | str) -> Subscribed | GapResume:
        cursor = self._own(cursor)
        result = self._store.subscribe_after_cursor(cursor)
        if isinstance(result, Gap):
            return self._gap_resume(cursor, result.reason)
        if not isinstance(result, Subscribed):
            raise LiveReplayStoreFailure(
                f"subscribe_after_cursor returned {type(result).__name__}"
            )
        return result

    def _own(self, cursor: SessionCursor | str) -> SessionCursor:
        cursor = as_cursor(cursor)
        cursor.parse_for_session(self._session_id)
        return cursor

    def _gap_resume(self, requested: SessionCursor, reason: LiveReplayGapReason) -> GapResume:
        fresh = self.current_session_observation()
        return gap_resume(self._session_id, requested, reason, fresh, self._revision)
