"""SessionMonitor: a live view of one runtime's observation stream.

The monitor subscribes to the handle from the kernel's running loop and reads events in
batches. Widgets are created once and updated through their traits inside ``hold_sync``; the
event table is redrawn at most ``max_redraw_hz`` times a second, and a redraw is always scheduled
for the end of a throttle window, so the last batch shows even when the stream stops inside it.
Nothing here runs on a thread or writes to an ``Output`` from a background task.

One bad event never costs a batch: ``EventHistory`` turns an event it cannot show in full into a
fallback row (counted in ``fallback_rows`` and in the header) and ingests the rest, and the
monitor reads each event's effects on its own. Every view is bounded (``_render`` rules): a
2,000,000-character delta makes a table cell, not a 2 MB redraw; ``detail(position)`` shows one
event's whole wire document, bounded much higher, on demand.
"""

from __future__ import annotations

import asyncio
import collections
import time
from typing import Any, Callable, Iterable, Sequence

import ipywidgets as widgets
import traitlets

from lash_core import (
    Committed,
    GapResume,
    LiveReplayGap,
    LiveReplayStoreError,
    ProcessChanged,
    QueueChanged,
    ReplayClosed,
    SessionCursor,
    SessionObservation,
    SessionObservationEvent,
    SubscriberLagged,
    TurnActivityPayload,
    short_repr,
)
from lash_core import EventPayload, TurnEvent
from lash_core._cursor import U64_MAX

from ._controls import EnqueuePanel, QueuePanel, ReconnectSimulator, _hold
from ._frames import EventHistory
from ._loop import kernel_loop, spawn
from ._render import (
    ERROR_MAX_CHARS,
    ID_MAX_CHARS,
    clip_html,
    css,
    error_text,
    event_detail_html,
    events_table_html,
    gap_html,
    observation_html,
    processes_html,
)

__all__ = ["SessionMonitor", "PAYLOAD_TYPES", "EVENT_TYPES"]

#: Redraws per second at most: fast enough to feel live, slow enough not to flood the frontend.
DEFAULT_MAX_REDRAW_HZ = 10.0
#: Events read from the subscription per batch.
READ_BATCH = 1024
#: Rows kept in the monitor's history by default (older rows roll over, counted).
DEFAULT_HISTORY_ROWS = 10_000
#: Rows shown in the live table by default (newest first).
DEFAULT_VISIBLE_ROWS = 40
#: Gaps kept in ``monitor.gap_log`` (the newest; ``gaps`` counts them all): the header shows the
#: last one, and a monitor that follows a flaky store for days must not grow a list per gap.
GAP_LOG_KEPT = 20
#: Columns of the live table; the full set stays in ``monitor.frame()``.
LIVE_COLUMNS = ("position", "revision", "payload_type", "event_type", "text", "batch_ids", "process_ids")

PAYLOAD_TYPES: tuple[str, ...] = EventPayload.known_types()
EVENT_TYPES: tuple[str, ...] = TurnEvent.known_types()


class SessionMonitor(widgets.VBox):
    """Live event table, cursor and revision, read view, usage, processes and controls."""

    cursor = traitlets.Unicode(
        "", help="raw cursor of the last event applied (resume point; whole, the header cuts it)"
    )
    revision = traitlets.Int(0, help="revision of the last event applied")
    event_count = traitlets.Int(0, help="events received since the monitor started")
    dropped_rows = traitlets.Int(0, help="rows rolled out of the bounded history")
    redraws = traitlets.Int(0, help="event-table redraws so far (throttled)")
    connected = traitlets.Bool(False, help="whether the monitor's own subscription is open")
    lagged = traitlets.Int(0, help="events the monitor missed because it fell behind")
    gaps = traitlets.Int(0, help="gaps the monitor itself hit when resubscribing")
    payload_types = traitlets.List(traitlets.Unicode(), help="payload types shown; empty = all")
    event_types = traitlets.List(traitlets.Unicode(), help="turn event types shown; empty = all")
    visible_rows = traitlets.Int(DEFAULT_VISIBLE_ROWS, help="rows shown in the table (newest first)")
    max_redraw_hz = traitlets.Float(DEFAULT_MAX_REDRAW_HZ, help="upper bound on redraws per second")
    last_error = traitlets.Unicode(
        "", help="the last background failure, bounded (render.ERROR_MAX_CHARS), shown in the header"
    )
    fallback_rows = traitlets.Int(0, help="events shown with a fallback summary (not in full)")

    @traitlets.validate("max_redraw_hz")
    def _valid_hz(self, proposal: dict[str, Any]) -> float:
        value = proposal["value"]
        if not value > 0 or value == float("inf"):
            raise traitlets.TraitError(
                f"max_redraw_hz must be a positive finite number, not {short_repr(value)}"
            )
        return value

    @traitlets.validate("visible_rows")
    def _valid_rows(self, proposal: dict[str, Any]) -> int:
        if proposal["value"] < 1:
            raise traitlets.TraitError(f"visible_rows must be at least 1, not {short_repr(proposal['value'])}")
        return proposal["value"]

    @traitlets.validate("payload_types", "event_types")
    def _valid_types(self, proposal: dict[str, Any]) -> list[str]:
        known = PAYLOAD_TYPES if proposal["trait"].name == "payload_types" else EVENT_TYPES
        unknown = [t for t in proposal["value"] if t not in known]
        if unknown:
            raise traitlets.TraitError(f"unknown type(s) {short_repr(unknown)}; known: {list(known)}")
        return proposal["value"]

    def __init__(
        self,
        handle: Any,
        *,
        clock: Any = None,
        max_rows: int = DEFAULT_HISTORY_ROWS,
        visible_rows: int = DEFAULT_VISIBLE_ROWS,
        max_redraw_hz: float = DEFAULT_MAX_REDRAW_HZ,
        controls: bool = True,
        clients: Sequence[str] = ("A", "B"),
        time_source: Callable[[], float] = time.monotonic,
        start: bool = True,
    ) -> None:
        if max_redraw_hz <= 0:
            raise ValueError("max_redraw_hz must be positive")
        self._handle = handle
        self._time = time_source
        self.history = EventHistory(max_rows=max_rows)
        self.gap_log: collections.deque[LiveReplayGap] = collections.deque(maxlen=GAP_LOG_KEPT)
        self._subscription: Any = None
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_redraw = -float("inf")
        self._view_dirty = True
        self._queue_dirty = False
        self._queue_refreshing = False
        self._resume_cursor: SessionCursor = handle.current_session_observation().cursor

        self.header = widgets.HTML()
        self.table = widgets.HTML()
        self.table.add_class("lash-events")
        self.session_view = widgets.HTML()
        self.processes_view = widgets.HTML()
        self.detail_view = widgets.HTML()
        self.detail_view.add_class("lash-event-detail")
        self.detail_position = widgets.IntText(description="event #", layout={"width": "180px"})
        self.detail_button = widgets.Button(description="Show event", icon="search")
        self.detail_button.add_class("lash-detail")
        self.detail_button.on_click(lambda _b: self._detail_from_form())
        self.payload_filter = widgets.SelectMultiple(
            options=PAYLOAD_TYPES, rows=len(PAYLOAD_TYPES), description="payload"
        )
        self.event_filter = widgets.SelectMultiple(options=EVENT_TYPES, rows=5, description="event")
        self.payload_filter.observe(lambda ch: setattr(self, "payload_types", list(ch["new"])), "value")
        self.event_filter.observe(lambda ch: setattr(self, "event_types", list(ch["new"])), "value")

        self.enqueue_panel = (
            EnqueuePanel(handle, on_change=self._refresh_queue_soon, style=False) if controls else None
        )
        self.queue_panel = QueuePanel(handle, style=False) if controls else None
        self.simulator = (
            ReconnectSimulator(handle, clock=clock, clients=clients, style=False) if controls else None
        )
        children: list[widgets.Widget] = [
            widgets.HTML(f"<style>{css()}</style>"),
            self.header,
            widgets.HBox([self.payload_filter, self.event_filter]),
            widgets.HBox(
                [
                    widgets.VBox(
                        [
                            self.table,
                            widgets.HBox([self.detail_position, self.detail_button]),
                            self.detail_view,
                        ],
                        layout={"flex": "3 1 0%", "overflow": "auto"},
                    ),
                    widgets.VBox([self.session_view, self.processes_view], layout={"flex": "2 1 0%"}),
                ]
            ),
        ]
        if controls:
            assert self.enqueue_panel and self.queue_panel and self.simulator
            children += [widgets.HBox([self.enqueue_panel, self.queue_panel]), self.simulator]
        super().__init__(children)
        self.add_class("lash-monitor")
        self.visible_rows = visible_rows
        self.max_redraw_hz = max_redraw_hz
        self.observe(self._filters_changed, ["payload_types", "event_types"])
        self.observe(lambda _ch: self.redraw(), ["visible_rows"])
        self.redraw()
        if start:
            self.start()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "stopped"
        return (
            f"<SessionMonitor session={short_repr(self._handle.session_id)} {state} "
            f"events={self.event_count}>"
        )

    # -- subscription ------------------------------------------------------------------------------

    def _filters_changed(self, _change: dict[str, Any]) -> None:
        # keep the selection widgets in step when code sets the traits (the link is two-way)
        self.payload_filter.value = tuple(self.payload_types)
        self.event_filter.value = tuple(self.event_types)
        self.redraw()

    def start(self) -> None:
        """Subscribe from the last applied cursor on the kernel's running loop."""
        if self._task is not None and not self._task.done():
            return
        loop = kernel_loop()
        self._subscribe()
        self._task = spawn(self._run(), on_error=self._task_failed, loop=loop)
        if self.queue_panel is not None:
            self._refresh_queue_soon()
        self._refresh_processes_soon()

    def stop(self) -> None:
        """Close the subscription and stop the background task; the cursor is kept."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.connected = False
        self.redraw()

    def _subscribe(self) -> None:
        if self._subscription is not None:
            self._subscription.close()  # never two subscriptions for one monitor
            self._subscription = None
        result = self._handle.subscribe_session_observation(self._resume_cursor)
        if isinstance(result, GapResume):
            self._apply_gap(result.gap, result.observation)
            result = self._handle.subscribe_session_observation(self._resume_cursor)
            if isinstance(result, GapResume):
                raise RuntimeError("the replay store gapped twice in a row")
        self._subscription = result.subscription
        self.connected = True

    def _apply_gap(self, gap: LiveReplayGap, observation: SessionObservation) -> None:
        self.gap_log.append(gap)
        self.gaps += 1
        self._resume_cursor = observation.cursor
        self.cursor = str(observation.cursor)
        self.revision = int(gap.latest_revision)
        self._read_view = observation.read_view
        self._view_dirty = True

    async def _run(self) -> None:
        while True:
            subscription = self._subscription
            if subscription is None:
                return
            try:
                batch = await subscription.next_batch(READ_BATCH)
            except SubscriberLagged as lag:
                self.lagged += lag.count
                self._subscribe()
                continue
            except ReplayClosed:
                # the store was closed: if the handle now has another (a restart), follow it
                self._subscription = None
                try:
                    self._subscribe()
                except LiveReplayStoreError as err:
                    self._stopped(err)
                    return
                self.redraw()
                continue
            try:
                self.ingest(batch)
            except Exception as err:  # one bad batch must not end the live view
                self._show_error(err)

    def _task_failed(self, err: BaseException) -> None:
        self._stopped(err)

    def _stopped(self, err: BaseException | None) -> None:
        if self._subscription is not None:
            self._subscription.close()
            self._subscription = None
        self.connected = False
        if err is not None:
            self._show_error(err)
        else:
            self.redraw()

    def ingest(self, batch: Iterable[SessionObservationEvent]) -> None:
        """Apply a batch of events (the subscription task calls this; tests may too).

        Every event goes in: one that cannot be shown in full becomes a fallback row (counted in
        ``fallback_rows``), and one whose effects cannot be read is skipped for them alone."""
        batch = list(batch)
        if not batch:
            return
        self.history.append(batch)
        queue_changed = processes_changed = False
        for event in batch:
            try:
                queue, processes = self._effects(event)
            except Exception:  # odd fields (an event built in code): its row says so already
                continue
            queue_changed |= queue
            processes_changed |= processes
        for last in reversed(batch):  # the newest event that carries a real resume point
            cursor = getattr(last, "cursor", None)
            if isinstance(cursor, SessionCursor):
                self._resume_cursor = cursor
                self.cursor = cursor.as_str()
                revision = getattr(last, "revision", None)
                if isinstance(revision, int) and not isinstance(revision, bool) and 0 <= revision <= U64_MAX:
                    self.revision = int(revision)
                break
        self.event_count += len(batch)
        self.dropped_rows = self.history.dropped_rows
        self.fallback_rows = self.history.fallback_rows
        if self.simulator is not None:
            self.simulator.pump(render=False)
        if queue_changed and self.queue_panel is not None:
            self._queue_dirty = True  # refreshed with the next (throttled) redraw
        if processes_changed:
            self._refresh_processes_soon()
        self.request_redraw()

    def _effects(self, event: SessionObservationEvent) -> tuple[bool, bool]:
        """(queue changed, processes changed) for one event; a commit also updates the view."""
        payload = event.payload
        if isinstance(payload, Committed):
            if payload.read_view is not None:
                self._read_view = payload.read_view
            self._view_dirty = True
            return True, True
        if isinstance(payload, QueueChanged):
            return True, False
        if isinstance(payload, ProcessChanged):
            return False, True
        if isinstance(payload, TurnActivityPayload):
            event_type = payload.activity.event.type
            return isinstance(event_type, str) and event_type == "queued_work_started", False
        return False, False

    # -- one event in full -------------------------------------------------------------------------

    def event(self, position: int) -> SessionObservationEvent:
        """The newest kept event at live replay ``position`` (``KeyError`` when none is kept)."""
        event = self.history.find(position)
        if event is None:
            raise KeyError(f"no kept event at position {short_repr(position)}")
        return event

    def detail(self, position: int) -> str:
        """Show one event in full in ``detail_view`` (what the Show event button does): its card
        and its whole wire document, bounded at ``render.DETAIL_MAX_CHARS`` with a note. Returns
        the HTML; ``KeyError`` when no kept event has that position (rolled out, or never seen)."""
        markup = event_detail_html(self.event(position), with_style=False)
        self.detail_view.value = markup
        return markup

    def _detail_from_form(self) -> None:
        try:
            self.detail(self.detail_position.value)
        except KeyError as err:
            self.detail_view.value = (
                f'<div class="lash-muted">{clip_html(err.args[0], ERROR_MAX_CHARS)}</div>'
            )

    # -- throttled drawing -------------------------------------------------------------------------

    def request_redraw(self) -> None:
        """Redraw now if the last redraw is old enough, else once at the end of the window."""
        if self._timer is not None:
            return  # the scheduled redraw will draw this batch too (never two inside a window)
        interval = 1.0 / self.max_redraw_hz
        wait = self._last_redraw + interval - self._time()
        if wait <= 0:
            self.redraw()
        elif self._timer is None:
            self._timer = kernel_loop().call_later(wait, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self.redraw()

    @property
    def redraw_pending(self) -> bool:
        return self._timer is not None

    def redraw(self) -> None:
        """Redraw every view from the current state, as one synced batch."""
        self._last_redraw = self._time()
        frame = self.history.tail(
            self.visible_rows,
            payload_types=self.payload_types or None,
            event_types=self.event_types or None,
        )
        if self._queue_dirty:
            self._refresh_queue_soon()
        with _hold(self.table, self.header, self.session_view):
            self.table.value = events_table_html(
                frame.iloc[::-1], max_rows=self.visible_rows, columns=LIVE_COLUMNS, with_style=False
            )
            self.header.value = self._header_html()
            if self._view_dirty:
                view = getattr(self, "_read_view", None)
                if view is None:
                    view = self._handle.observe().read_view
                self.session_view.value = observation_html(
                    SessionObservation(view, self._resume_cursor), with_style=False
                )
                self._view_dirty = False
            if self.simulator is not None:
                self.simulator.refresh()
            self.redraws += 1

    def _header_html(self) -> str:
        state = "live" if self.connected else "stopped"
        last_gap = gap_html(self.gap_log[-1], with_style=False) if self.gap_log else ""
        error = (
            # already bounded by error_text; the clip guards a value set on the trait directly
            f'<div class="lash-error">{clip_html(self.last_error, 2 * ERROR_MAX_CHARS)}</div>'
            if self.last_error
            else ""
        )
        cursor = self.cursor or self._resume_cursor.as_str()
        fallback = (
            f' · <span class="lash-bad">{self.fallback_rows} fallback rows</span>'
            if self.fallback_rows
            else ""
        )
        return (
            '<div class="lash-header">'
            f'<span class="lash-badge lash-{state}">{state}</span> '
            f"session <code>{clip_html(self._handle.session_id, ID_MAX_CHARS)}</code> · "
            f"revision <b>{self.revision}</b> · cursor <code>{clip_html(cursor, ID_MAX_CHARS)}</code>"
            f"<br>{self.event_count} events · {len(self.history)} rows kept · "
            f"{self.dropped_rows} rolled over · {self.lagged} lagged · {self.gaps} gaps · "
            f"{self.redraws} redraws{fallback}</div>" + error + last_gap
        )

    def flush(self) -> None:
        """Draw now and drop any pending throttled redraw (for scripts and tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.redraw()

    # -- async side panels -------------------------------------------------------------------------

    def _refresh_queue_soon(self) -> None:
        """One queue refresh at a time; changes during it trigger one more afterwards."""
        if self.queue_panel is None:
            return
        self._queue_dirty = True
        if self._queue_refreshing:
            return
        self._queue_dirty = False
        self._queue_refreshing = True

        async def refresh() -> None:
            try:
                await self.queue_panel.refresh()  # type: ignore[union-attr]
            finally:
                self._queue_refreshing = False
            if self._queue_dirty:
                self._refresh_queue_soon()

        spawn(refresh(), on_error=self._show_error)

    def _refresh_processes_soon(self) -> None:
        spawn(self.refresh_processes(), on_error=self._show_error)

    async def refresh_processes(self) -> list[Any]:
        handles = list(await self._handle.observe().list_process_handles())
        self.processes_view.value = processes_html(handles)
        return handles

    def _show_error(self, err: BaseException) -> None:
        """Keep the failure in ``last_error``: every later redraw shows it until the next one."""
        self.last_error = error_text(err)
        self.header.value = self._header_html()

    # -- the buttons' methods, forwarded -----------------------------------------------------------

    async def enqueue(self, text: str, delivery_policy: Any = None, slot_policy: Any = None, source_key: str | None = None) -> Any:
        return await self._panel("enqueue_panel").enqueue(text, delivery_policy, slot_policy, source_key)

    async def cancel(self, batch_id: str) -> Any:
        return await self._panel("queue_panel").cancel(batch_id)

    def disconnect(self, client: str | None = None) -> None:
        self._panel("simulator").disconnect(client)

    def reconnect(self, client: str | None = None) -> Any:
        return self._panel("simulator").reconnect(client)

    def set_filter(
        self, *, payload_types: Sequence[str] | str = (), event_types: Sequence[str] | str = ()
    ) -> None:
        payload_types = (payload_types,) if isinstance(payload_types, str) else tuple(payload_types)
        event_types = (event_types,) if isinstance(event_types, str) else tuple(event_types)
        unknown = [t for t in payload_types if t not in PAYLOAD_TYPES] + [
            t for t in event_types if t not in EVENT_TYPES
        ]
        if unknown:
            raise ValueError(f"unknown type(s) {short_repr(unknown)}; payload types: {PAYLOAD_TYPES}")
        with self.hold_trait_notifications():
            self.payload_filter.value = tuple(payload_types)
            self.event_filter.value = tuple(event_types)

    def frame(self) -> Any:
        """The whole kept history as a pandas DataFrame."""
        return self.history.frame()

    def _panel(self, name: str) -> Any:
        panel = getattr(self, name)
        if panel is None:
            raise RuntimeError("this monitor was created with controls=False")
        return panel
