"""SessionMonitor: a live widget view over a ``MonitorState``.

The state (``_state``) holds everything the monitor knows and the follower that reads the session;
this module only runs the follower on the kernel's loop, hands what it yields to the state, copies
the state's counters into traits and draws it through ``_render`` (all markup lives there). Widgets
are created once and updated through their traits inside ``hold_sync``; the event table is redrawn
at most ``max_redraw_hz`` times a second, and a redraw is always scheduled for the end of a
throttle window, so the last batch shows even when the stream stops inside it. Nothing here runs
on a thread or writes to an ``Output`` from a background task.

One bad event never costs a batch, one bad batch never ends the live view (its error stays in the
header), and every view is bounded (``_render`` rules): a 2,000,000-character delta makes a table
cell, not a 2 MB redraw; ``detail(position)`` shows one event's whole wire document on demand.

A store that is down never raises out of the monitor's own methods: ``start()`` (so creating a
monitor) leaves it disconnected with the error in ``last_error``; ``stop()`` always completes;
``flush()``, ``redraw()`` and ``ingest()`` draw what they can (the simulator shows what it could
not read). Foreign exceptions become lash errors at ``_boundary`` first. ``max_redraw_hz`` is
bounded (``MIN_REDRAW_HZ``..``MAX_REDRAW_HZ``), and changing it reschedules a pending redraw.

Any source. A monitor follows any ``ObservationSource``. Over a ``RuntimeHandle`` of this kernel
it has its controls (enqueue, cancel and the queue panel, the process list, the clock, retention
and simulated clients); over a source that reads a session running elsewhere
(``lash_nb.remote.KernelSource``, ``lash_core.http.HttpSource``, a ``StoreSource``) it is
read-only: those controls are not built, a plain note says why (``read_only_note``), and their
methods raise ``RuntimeError`` with the same explanation. The events table, the observation
pane and the gap log work the same. An asynchronous source is followed by the same task, with
``await``; by default a read-only monitor's follower rides out outages (``RetryPolicy()``), so it
keeps following when the connection drops and comes back.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any, Callable, Iterable, Literal, Sequence

import ipywidgets as widgets
import traitlets

from lash_core import (
    LiveReplayStoreError,
    Replayed,
    ReplayClosed,
    RetryPolicy,
    SessionObservationEvent,
    short_repr,
)

from . import _render as render
from ._boundary import PROCESS_REGISTRY, QUEUE_STORE, REPLAY_STORE, as_lash_error, translated
from ._controls import EnqueuePanel, QueuePanel, ReconnectSimulator, _hold, _wrap
from ._loop import kernel_loop, logger, spawn
from ._pictures import event_kind
from ._state import (
    MARKERS_KEPT,
    DEFAULT_HISTORY_ROWS,
    DEFAULT_MAX_REDRAW_HZ,
    DEFAULT_VISIBLE_ROWS,
    EVENT_TYPES,
    PAYLOAD_TYPES,
    READ_BATCH,
    CancelOutcome,
    MonitorState,
    acts_on_runtime,
    check_names,
    check_redraw_hz,
    check_types,
    check_visible_rows,
    follow_runs,
    read_only_reason,
)

__all__ = ["SessionMonitor", "PAYLOAD_TYPES", "EVENT_TYPES"]

#: The static copy of a displayed monitor (for saved notebooks) is refreshed at most this often
#: (seconds): it is a whole HTML document sent over the kernel's channel, not a delta.
SNAPSHOT_EVERY_S = 1.0
#: The events-per-second chart is redrawn at most this often (seconds): its buckets are 1 s wide.
CHART_EVERY_S = 0.5
#: Rows of the event table in that copy (the newest).
SNAPSHOT_ROWS = 20


def _grid_kind(grid: Any) -> str:
    """``"perspective"`` or ``"html"`` for the ``grid`` argument (``ValueError`` otherwise;
    ``ImportError`` naming the extra when ``"perspective"`` is asked for and not installed)."""
    if grid not in ("auto", "perspective", "html"):
        raise ValueError(f'grid must be "auto", "perspective" or "html", not {short_repr(grid)}')
    if grid == "html":
        return "html"
    from ._grid import grid_available

    if grid_available():
        return "perspective"
    if grid == "perspective":
        from ._grid import EventGrid

        EventGrid()  # raises the ImportError that says what to install
    return "html"


def _check_time_source(time_source: Any) -> None:
    """``time_source`` must be a callable returning finite seconds (read once here, so a bad one
    is named at once, not deep inside a redraw)."""
    if not callable(time_source):
        raise TypeError(f"time_source must be a callable returning seconds, not {short_repr(time_source)}")
    now = time_source()
    if isinstance(now, bool) or not isinstance(now, (int, float)) or not math.isfinite(now):
        raise ValueError(f"time_source must return a finite number of seconds, returned {short_repr(now)}")


def _progress_bar(total: int, desc: str, unit: str) -> Any:
    """A ``tqdm`` bar as a widget to place in the monitor (``tqdm.notebook``, not displayed by
    itself: its ``container`` goes in the layout), or ``tqdm.auto``'s text bar where the widget
    one cannot be built."""
    try:
        from tqdm.notebook import tqdm as notebook_tqdm

        return notebook_tqdm(total=total, desc=desc, unit=unit, display=False, leave=True)
    except Exception:  # no widgets frontend support in tqdm: a text bar
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, unit=unit)


def _trait_value(check: Callable[..., Any], *args: Any) -> Any:
    try:
        return check(*args)
    except ValueError as err:
        raise traitlets.TraitError(str(err)) from None


class SessionMonitor(widgets.VBox):
    """Live event table, cursor and revision, read view, usage, processes and controls: a view
    over ``monitor.state`` (a ``MonitorState``). Read-only over a source that is not a
    ``RuntimeHandle`` (module docstring)."""

    cursor = traitlets.Unicode(
        "", help="raw cursor of the last event applied (resume point; whole, the header cuts it)"
    )
    revision = traitlets.Int(0, help="revision of the last event applied")
    event_count = traitlets.Int(0, help="events received since the monitor started")
    dropped_rows = traitlets.Int(0, help="rows rolled out of the bounded history")
    redraws = traitlets.Int(0, help="event-table redraws so far (throttled)")
    connected = traitlets.Bool(False, help="whether the monitor's follower holds a subscription")
    lagged = traitlets.Int(0, help="events the monitor missed because it fell behind")
    gaps = traitlets.Int(0, help="gaps the monitor's follower met (each one reloaded the view)")
    payload_types = traitlets.List(traitlets.Unicode(), help="payload types shown; empty = all")
    event_types = traitlets.List(traitlets.Unicode(), help="turn event types shown; empty = all")
    visible_rows = traitlets.Int(DEFAULT_VISIBLE_ROWS, help="rows shown in the table (newest first)")
    max_redraw_hz = traitlets.Float(DEFAULT_MAX_REDRAW_HZ, help="upper bound on redraws per second")
    last_error = traitlets.Unicode(
        "", help="the last background failure, bounded (render.ERROR_MAX_CHARS), shown in the header"
    )
    fallback_rows = traitlets.Int(0, help="events shown with a fallback summary (not in full)")
    paused = traitlets.Bool(
        False, help="the event view is paused (events still arrive and are kept; follow() shows them)"
    )
    turn_running = traitlets.Bool(
        False, help="a turn is running: turn activity seen since the last commit, or Run turn in flight"
    )

    @traitlets.validate("max_redraw_hz")
    def _valid_hz(self, proposal: dict[str, Any]) -> float:
        return _trait_value(check_redraw_hz, proposal["value"])

    @traitlets.validate("visible_rows")
    def _valid_rows(self, proposal: dict[str, Any]) -> int:
        return _trait_value(check_visible_rows, proposal["value"])

    @traitlets.validate("payload_types", "event_types")
    def _valid_types(self, proposal: dict[str, Any]) -> list[str]:
        return list(_trait_value(check_types, proposal["trait"].name, proposal["value"]))

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
        state: MonitorState | None = None,
        retry: RetryPolicy | None | Literal["auto"] = "auto",
        grid: Literal["auto", "perspective", "html"] = "auto",
    ) -> None:
        """``handle`` is the session's ``RuntimeHandle`` (the controls act on it too), or any
        other ``ObservationSource`` (the monitor is then read-only: module docstring); ``state``
        a ``MonitorState`` of that session to show (default: a new one following ``handle`` from
        its current observation, with ``max_rows``, ``visible_rows``, ``max_redraw_hz`` and
        ``retry``: the follower's ``RetryPolicy``; ``"auto"`` is ``RetryPolicy()`` for a
        read-only source and none for a ``RuntimeHandle``, whose store failures stop the
        monitor as before; a given ``state``'s follower keeps its own). ``clients`` names the simulated clients (a list: a bare string is
        refused). ``grid`` picks the event view: ``"perspective"`` a live Perspective grid over
        the whole kept history (sort, filter, group, columns, CSV export in the grid itself),
        ``"html"`` the HTML table of the newest ``visible_rows`` rows (filtered by the payload
        and event selections), ``"auto"`` the grid when ``perspective-python`` is installed."""
        clients = check_names("clients", clients)
        _check_time_source(time_source)
        read_only = not acts_on_runtime(handle)
        if isinstance(retry, str) and retry == "auto":
            retry = RetryPolicy() if read_only else None
        if state is None:
            state = MonitorState(
                handle,
                max_rows=max_rows,
                visible_rows=visible_rows,
                max_redraw_hz=max_redraw_hz,
                retry=retry,
            )
        elif state.session_id != handle.session_id:
            raise ValueError(
                f"the state follows session {short_repr(state.session_id)}, "
                f"the handle is of {short_repr(handle.session_id)}"
            )
        self.state = state
        self._handle = handle
        #: whether the controls are hidden because ``handle`` is not a ``RuntimeHandle``
        self.read_only = read_only
        self.read_only_reason = read_only_reason(handle) if read_only else ""
        controls = controls and not read_only
        self._time = time_source
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._queue_refreshing = False

        grid_kind = _grid_kind(grid)
        self.header = widgets.HTML()
        self.header.add_class("lash-monitor-header")
        #: the live event grid (``EventGrid``, Perspective) or ``None`` with ``grid="html"``
        self.grid: Any = None
        #: the HTML table of the newest rows, with ``grid="html"`` (else ``None``)
        self.table: widgets.HTML | None = None
        if grid_kind == "perspective":
            from ._grid import EventGrid

            self.grid = EventGrid(limit=state.history.max_rows)
            self.grid.widget.title = f"events of session {short_repr(state.session_id, 60)}"
        else:
            self.table = widgets.HTML()
            self.table.add_class("lash-events")
        self._grid_rows = 0  # history rows (ever appended) handed to the grid so far
        self._grid_markers = 0  # stream markers (ever made) handed to the grid so far
        self._grid_epoch = 0
        self._table_total = 0  # history rows (ever appended) when the HTML table last drew
        self.session_view = widgets.HTML()
        self.session_view.add_class("lash-session-view")
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
        self.pause_button = widgets.ToggleButton(
            value=False, description="Pause", icon="pause",
            tooltip="stop updating the event view (nothing is lost: Follow shows what came meanwhile)",
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.pause_button.add_class("lash-pause")
        #: where a drain's progress bar shows (``drain``)
        self.progress_box = widgets.HBox()
        self.pause_button.observe(self._pause_toggled, "value")

        self.enqueue_panel = (
            EnqueuePanel(handle, on_change=self._refresh_queue_soon, style=False) if controls else None
        )
        if self.enqueue_panel is not None:
            self.enqueue_panel.observe(self._run_state_changed, "running")
        self.queue_panel = QueuePanel(handle, style=False) if controls else None
        self.simulator = (
            ReconnectSimulator(handle, clock=clock, clients=clients, style=False) if controls else None
        )
        #: the plain explanation a read-only monitor shows instead of its controls (else ``None``)
        self.read_only_note = (
            widgets.HTML(render.note_html(self.read_only_reason)) if read_only else None
        )
        if read_only:
            self.processes_view.value = render.note_html(
                "processes: not shown (they are listed from a RuntimeHandle in this kernel)"
            )
        #: the static copy shown where the live widget cannot be (a saved notebook reopened
        #: without its kernel, or converted to HTML): see ``_ipython_display_``
        self._snapshot_id = f"lash-monitor-snapshot-{id(self):x}-{int(time.time() * 1e6):x}"
        self._snapshot_displayed = False
        self._snapshot_at = -math.inf
        hide_snapshot = widgets.HTML(render.hide_snapshot_style(self._snapshot_id))
        hide_snapshot.layout.display = "none"

        from ._pictures import RateChart, RateCounter

        #: events per second by kind over the last minute (``RateCounter``), drawn in ``rate_chart``
        self.rates = RateCounter()
        self.rate_chart = RateChart()
        self._chart_at = -math.inf
        self.grid_note = widgets.HTML()
        self.grid_note.add_class("lash-grid-note")
        events_children: list[widgets.Widget] = [
            widgets.HBox([self.pause_button, self.grid_note], layout=_wrap())
        ]
        if self.grid is not None:
            self.grid.widget.layout.width = "100%"
            events_children.append(self.grid.widget)
        else:
            assert self.table is not None
            events_children += [
                widgets.Accordion(
                    [widgets.HBox([self.payload_filter, self.event_filter], layout=_wrap())],
                    titles=("Filters",),
                    selected_index=None,
                ),
                widgets.Box([self.table], layout=widgets.Layout(max_height="480px", overflow="auto")),
            ]
        events_children.append(self.rate_chart)
        tabs: list[tuple[str, widgets.Widget]] = [
            ("Events", widgets.VBox(events_children, layout=widgets.Layout(width="100%"))),
            (
                "Session",
                widgets.VBox(
                    [self.session_view, self.processes_view],
                    layout=widgets.Layout(max_height="520px", overflow="auto", width="100%"),
                ),
            ),
        ]
        if controls:
            assert self.enqueue_panel and self.queue_panel and self.simulator
            self.drain_button = widgets.Button(
                description="Drain now", icon="forward",
                tooltip="run the ready queued work now, a turn per claim, with a progress bar",
                layout=widgets.Layout(width="auto"),
            )
            self.drain_button.add_class("lash-drain")
            self.drain_button.on_click(lambda _b: spawn(self.drain(), on_error=self._show_error))
            tabs.append(
                ("Queue", widgets.VBox([widgets.HBox([self.drain_button, self.progress_box], layout=_wrap()), self.queue_panel]))
            )
            tabs.append(("Reconnect lab", self.simulator))
        tabs.append(
            (
                "Event detail",
                widgets.VBox(
                    [widgets.HBox([self.detail_position, self.detail_button], layout=_wrap()), self.detail_view],
                    layout=widgets.Layout(max_height="520px", overflow="auto", width="100%"),
                ),
            )
        )
        self.tabs = widgets.Tab([w for _, w in tabs], titles=[t for t, _ in tabs])
        self.tabs.layout.width = "100%"
        self.tabs.add_class("lash-monitor-tabs")
        children: list[widgets.Widget] = [
            widgets.HTML(render.style_element()),
            hide_snapshot,
            self.header,
            *([self.read_only_note] if self.read_only_note is not None else []),
        ]
        if self.enqueue_panel is not None:
            children.append(self.enqueue_panel)
        children.append(self.tabs)
        super().__init__(children, layout=widgets.Layout(width="100%", max_width="100%"))
        self.add_class("lash-monitor")
        with self.hold_trait_notifications():
            self.visible_rows = state.visible_rows
            self.max_redraw_hz = state.throttle.max_hz
            self.payload_types = list(state.payload_types)
            self.event_types = list(state.event_types)
            self.last_error = state.last_error
        self.payload_filter.value = state.payload_types
        self.event_filter.value = state.event_types
        self._sync_all()
        self.observe(self._filters_changed, ["payload_types", "event_types"])
        self.observe(self._rows_changed, ["visible_rows"])
        self.observe(self._hz_changed, ["max_redraw_hz"])
        self.observe(self._error_changed, ["last_error"])
        self._built = True
        self.redraw()
        if start:
            self.start()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "stopped"
        return (
            f"<SessionMonitor session={short_repr(self.state.session_id)} {state} "
            f"events={self.event_count}>"
        )

    @property
    def history(self) -> Any:
        """The state's ``EventHistory``."""
        return self.state.history

    @property
    def gap_log(self) -> Any:
        """The state's bounded log of the newest gaps (``gaps`` counts them all)."""
        return self.state.gap_log

    # -- traits <-> state --------------------------------------------------------------------------

    def _filters_changed(self, _change: dict[str, Any]) -> None:
        self.state.set_filter(payload_types=self.payload_types, event_types=self.event_types)
        # keep the selection widgets in step when code sets the traits (the link is two-way)
        self.payload_filter.value = tuple(self.payload_types)
        self.event_filter.value = tuple(self.event_types)
        if self.grid is not None:
            self.grid.set_filter(payload_types=self.payload_types, event_types=self.event_types)
        self.redraw()

    def _rows_changed(self, change: dict[str, Any]) -> None:
        self.state.visible_rows = change["new"]
        self.redraw()

    def _hz_changed(self, change: dict[str, Any]) -> None:
        self.state.throttle.max_hz = change["new"]
        if self._timer is not None:  # scheduled at the old rate: schedule it at the new one
            self._timer.cancel()
            self._timer = None
            self.request_redraw()

    def _error_changed(self, change: dict[str, Any]) -> None:
        self.state.last_error = change["new"]

    def _sync_counters(self) -> None:
        """The traits an ingest may change."""
        state = self.state
        if state.cursor is not None:
            self.cursor = state.cursor.as_str()
        self.revision = state.revision
        self.event_count = state.event_count
        self.dropped_rows = state.history.dropped_rows
        self.fallback_rows = state.history.fallback_rows

    def _sync_all(self) -> None:
        self._sync_counters()
        state = self.state
        self.lagged = state.lagged
        self.gaps = state.gaps
        self.connected = state.connected

    # -- following ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Follow from the state's resume point on the kernel's running loop: subscribe now,
        apply what is ready, then keep reading in a task."""
        if self._task is not None and not self._task.done():
            return
        loop = kernel_loop()
        follower = self.state.follower
        try:  # a synchronous source (a RuntimeHandle): subscribed, and what is ready shown, now
            items = follower.poll(READ_BATCH) if follower.cursor is not None else []
        except TypeError:  # an asynchronous source: the task subscribes at its first read
            items = []
        except Exception as err:  # the store is down: stay stopped and say why (start() retries)
            self._stopped(as_lash_error(REPLAY_STORE, "subscribing to the session", err))
            return
        self._apply(items)
        self.connected = self.state.connected
        self._task = spawn(self._run(), on_error=self._task_failed, loop=loop)
        if self.queue_panel is not None:
            self._refresh_queue_soon()
        if not self.read_only:
            self._refresh_processes_soon()

    def stop(self) -> None:
        """Stop the task and drop the subscription; the cursor is kept for ``start()``. Always
        completes: a subscription that fails to close is dropped all the same, its error shown."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        try:
            self.state.disconnect()
        except Exception as err:
            self._show_error(err)
        self.connected = False
        self._redraw_showing_errors()
        self._snapshot_soon(self._time(), force=True)

    async def _run(self) -> None:
        follower = self.state.follower
        if follower.read_view is None:  # an asynchronous source not read yet: show it now
            try:
                first = await follower.catch_up()
            except Exception:  # down at the start: the loop below retries or says why
                pass
            else:
                self._apply(first.events if isinstance(first, Replayed) else [first])
                try:
                    await follower.subscribe()  # shown live now, not at the first new event
                except Exception:
                    pass  # the loop below retries or says why
                self._apply([])
                self.request_redraw()
        while True:
            try:
                items = await follower.next_items(READ_BATCH)
            except ReplayClosed as err:  # the stream ended for good: say why
                self._stopped(err.__cause__ if err.__cause__ is not None else err)
                return
            except LiveReplayStoreError as err:  # the source cannot serve
                self._stopped(err)
                return
            except Exception as err:  # the source's own failure, as a lash error
                self._stopped(as_lash_error(REPLAY_STORE, "reading the session", err))
                return
            try:
                self._apply(items)
            except Exception as err:  # one bad batch must not end the live view
                self._show_error(err)

    def _apply(self, items: Iterable[Any]) -> None:
        """Hand the follower's items to the state, in order; events go through ``ingest``."""
        for run in follow_runs(items):
            if isinstance(run, list):
                self.ingest(run)
            else:
                self.state.apply_item(run)
                self._sync_all()
                self.request_redraw()
        self.connected = self.state.connected

    def _task_failed(self, err: BaseException) -> None:
        self._stopped(err)

    def _stopped(self, err: BaseException | None) -> None:
        try:
            self.state.disconnect()
        except Exception:  # dropped all the same; the error that stopped us is the one to show
            pass
        self.connected = False
        if err is not None:
            self._show_error(err)
        else:
            self._redraw_showing_errors()

    def ingest(self, batch: Iterable[SessionObservationEvent]) -> None:
        """Apply a batch of events (the follower's task calls this; tests may too): into the
        state, then the traits, the simulated clients, and a (throttled) redraw.

        Every event goes in: one that cannot be shown in full becomes a fallback row (counted in
        ``fallback_rows``), and one whose effects cannot be read is skipped for them alone. An
        event of another session is a row too (``state.foreign_events`` counts them), but never
        the resume point: ``cursor`` and ``revision`` only move to this session's cursors."""
        state = self.state
        batch = batch if isinstance(batch, list) else list(batch)
        if not state.ingest(batch):
            return
        try:
            self.rates.add(map(event_kind, batch), self._time())
        except Exception:  # an odd event (built in code): its row says so; the chart skips the batch
            pass
        self._sync_counters()
        if self.simulator is not None:
            self.simulator.pump(render=False)
        if state.processes_dirty:
            state.processes_dirty = False
            if not self.read_only:
                self._refresh_processes_soon()
        if self.queue_panel is None:
            state.queue_dirty = False  # nothing to refresh
        self.request_redraw()

    # -- one event in full -------------------------------------------------------------------------

    def event(self, position: int) -> SessionObservationEvent:
        """The newest kept event at live replay ``position`` (``KeyError`` when none is kept)."""
        return self.state.event(position)

    def detail(self, position: int) -> str:
        """Show one event in full in ``detail_view`` (what the Show event button does): its card
        and its whole wire document, bounded at ``render.DETAIL_MAX_CHARS`` with a note. Returns
        the HTML; ``KeyError`` when no kept event has that position (rolled out, or never seen)."""
        markup = render.event_detail_html(self.event(position), with_style=False)
        self.detail_view.value = markup
        return markup

    def _detail_from_form(self) -> None:
        try:
            self.detail(self.detail_position.value)
        except KeyError as err:
            self.detail_view.value = render.note_html(err.args[0])

    # -- throttled drawing -------------------------------------------------------------------------

    def request_redraw(self) -> None:
        """Redraw now if the last redraw is old enough, else once at the end of the window."""
        if self._timer is not None:
            return  # the scheduled redraw will draw this batch too (never two inside a window)
        wait = self.state.throttle.wait(self._time())
        if wait <= 0:
            self.redraw()
        else:
            self._timer = kernel_loop().call_later(wait, self._timer_fired)

    def _timer_fired(self) -> None:
        self._timer = None
        self._redraw_showing_errors()  # a loop callback has nowhere to raise to

    def _redraw_showing_errors(self) -> None:
        try:
            self.redraw()
        except Exception as err:
            self._show_error(err)

    @property
    def redraw_pending(self) -> bool:
        return self._timer is not None

    def redraw(self) -> None:
        """Redraw every view from the state, as one synced batch: the header always; the event
        view (the grid's new rows as one delta, or the HTML table) unless paused."""
        state = self.state
        now = self._time()
        if state.queue_dirty:
            self._refresh_queue_soon()
        with _hold(*(w for w in (self.table, self.header, self.session_view) if w is not None)):
            if self.grid is not None:
                self._push_grid()
            elif self.table is not None and not self.paused:
                self.table.value = render.monitor_table_html(state.table(), state.visible_rows)
                self._table_total = state.history.total_rows
            self.grid_note.value = self._grid_note()
            self.header.value = render.monitor_header_html(self._statistics())
            self.turn_running = self._is_turn_running()
            if state.view_dirty:
                observation = state.observation
                self.session_view.value = (
                    render.observation_html(observation, with_style=False)
                    if observation is not None
                    else render.note_html("waiting for the session's first observation")
                )
                state.view_dirty = observation is None
            if self.simulator is not None:
                self.simulator.refresh()
            if now - self._chart_at >= CHART_EVERY_S:
                self._chart_at = now
                self.rate_chart.update(self.rates.series(now))
            state.drawn(now)
            self.redraws = state.redraws
        self._snapshot_soon(now)

    def _grid_note(self) -> str:
        history = self.state.history
        if self.grid is not None:
            stats = self.grid.statistics()
            waiting, held, limit = stats.rows_queued, stats.rows_held, stats.limit
        else:
            waiting = max(history.total_rows - self._table_total, 0)
            held, limit = min(len(history), self.state.visible_rows), self.state.visible_rows
        return render.grid_note_html(
            paused=self.paused, waiting=waiting, held=held, limit=limit, grid=self.grid is not None
        )

    def _is_turn_running(self) -> bool:
        panel = self.enqueue_panel
        return self.state.turn_running or (panel is not None and panel.running)

    def _statistics(self) -> Any:
        import dataclasses

        return dataclasses.replace(self.state.statistics(), turn_running=self._is_turn_running())

    def _run_state_changed(self, change: dict[str, Any]) -> None:
        """Run turn started or ended. When the last turn started here has returned, no turn of
        this monitor's own is running, whatever the events said (a turn whose commit the store
        failed to append never shows a ``committed`` event)."""
        if not change["new"]:
            self.state.turn_running = False
        self._header_soon()

    def _header_soon(self) -> None:
        self.header.value = render.monitor_header_html(self._statistics())
        self.turn_running = self._is_turn_running()

    def _push_grid(self) -> None:
        """Hand the grid the history rows and stream markers it has not had, in order (markers
        before the rows that came after them, rows after a store restart with the new epoch),
        then flush them as one update (the grid keeps them queued while paused)."""
        grid, state = self.grid, self.state
        history = state.history
        total = history.total_rows
        if total < self._grid_rows:  # the history was cleared: so is the grid, from scratch
            grid.clear()
            self._grid_rows = 0
        new = total - self._grid_rows
        frame = history.tail(min(new, len(history))) if new > 0 else None
        markers = [m for m in state.markers if m.seq >= self._grid_markers]
        if markers and markers[0].seq > self._grid_markers:  # more came than ``markers`` keeps
            lost = markers[0].seq - self._grid_markers
            grid.add_marker(
                f"{lost} stream markers not kept (more than {MARKERS_KEPT} between two redraws): "
                "the epochs of the rows up to the next marker are not known exactly",
                epoch=self._grid_epoch,
            )
            self._grid_markers = markers[0].seq
        start = self._grid_rows
        for marker in markers:
            if frame is not None and marker.row > start:
                part = frame[(frame.index >= start) & (frame.index < marker.row)]
                if len(part):
                    grid.add_frame(part, epoch=self._grid_epoch)
                start = max(start, marker.row)
            grid.add_marker(marker.text, epoch=marker.epoch)
            self._grid_epoch = marker.epoch
            self._grid_markers = marker.seq + 1
        if frame is not None:
            part = frame[frame.index >= start]
            if len(part):
                grid.add_frame(part, epoch=self._grid_epoch)
        self._grid_rows = total
        if not self.paused:
            grid.flush()

    def close(self) -> None:
        """Stop following, release the grid's Perspective table and close the widget. Safe on a
        monitor whose ``__init__`` failed part way (ipywidgets closes widgets when collected)."""
        try:
            if getattr(self, "_built", False):
                self.stop()
        finally:
            grid = getattr(self, "grid", None)
            if grid is not None and not grid.closed:
                try:
                    grid.close()
                except Exception as err:  # the widget closes all the same
                    logger.debug("lash_nb: grid not closed cleanly: %s", err)
            super().close()

    # -- pause and follow --------------------------------------------------------------------------

    def _pause_toggled(self, change: dict[str, Any]) -> None:
        if change["new"]:
            self.pause()
        else:
            self.follow()

    def pause(self) -> None:
        """Stop updating the event view (the grid keeps its rows, scroll and selection still);
        events keep arriving into the history and the header keeps counting."""
        self.paused = True
        if self.grid is not None:
            self.grid.pause()
        with self.pause_button.hold_trait_notifications():
            self.pause_button.value = True
            self.pause_button.description, self.pause_button.icon = "Follow", "play"

    def follow(self) -> None:
        """Update the event view again and show at once what came while it was paused."""
        self.paused = False
        if self.grid is not None:
            self.grid.follow()
        with self.pause_button.hold_trait_notifications():
            self.pause_button.value = False
            self.pause_button.description, self.pause_button.icon = "Pause", "pause"
        self.flush()

    def to_csv(self, path: Any = None) -> str:
        """The event view's rows as CSV text (also written to ``path`` when given, whole or not
        at all): the grid's (``EventGrid.to_csv``), else the whole kept history. ``TypeError``
        for a ``path`` that is not a ``str`` or ``os.PathLike``."""
        from ._files import check_path, utf8_text, write_text_atomic

        if path is not None:
            check_path(path)
        if self.grid is not None:
            return str(self.grid.to_csv(path))
        text = utf8_text(str(self.state.frame().to_csv(index=False)))
        if path is not None:
            write_text_atomic(path, text)
        return text

    # -- saved notebooks ---------------------------------------------------------------------------

    def _ipython_display_(self, **kwargs: Any) -> None:
        """Display the live widget, then a static HTML copy of the monitor under it: hidden by
        the live widget's own style while it renders, so it shows only where the widget cannot
        (the notebook reopened without its kernel, or converted with nbconvert). The copy is
        kept current (at most once a second, and when the monitor stops) through its display
        id, so a saved notebook holds the monitor's last state."""
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is None:  # not in IPython: nothing renders widgets or keeps a display
            print(repr(self))
            return
        bundle = self._repr_mimebundle_(**kwargs)
        data = dict(bundle[0] if isinstance(bundle, tuple) else bundle)
        # what a reader without widgets sees in place of the live view (a frozen repr would say
        # "connected events=0" for ever); the static copy under it has the state
        data["text/plain"] = (
            f"SessionMonitor of session {short_repr(self.state.session_id)} "
            "(a live widget: it needs its kernel; a static copy of its last state follows)"
        )
        display(data, raw=True)
        display(
            {"text/html": self._snapshot_html()}, raw=True, display_id=self._snapshot_id
        )
        self._snapshot_displayed = True
        self._snapshot_at = self._time()

    def _snapshot_html(self) -> str:
        import dataclasses

        state = self.state
        observation = state.observation
        # a copy is never live and runs no turn: it shows what was, as of its time
        stats = dataclasses.replace(self._statistics(), connected=False, turn_running=False)
        newest = state.table().iloc[-SNAPSHOT_ROWS:]
        return render.monitor_snapshot_html(
            snapshot_id=self._snapshot_id,
            header=render.monitor_header_html(stats),
            table=render.monitor_table_html(newest, SNAPSHOT_ROWS),
            observation=(
                render.observation_html(observation, with_style=False) if observation is not None else ""
            ),
            taken_at=time.time(),
        )

    def _snapshot_soon(self, now: float, *, force: bool = False) -> None:
        if not self._snapshot_displayed or (not force and now - self._snapshot_at < SNAPSHOT_EVERY_S):
            return
        self._snapshot_at = now
        try:
            from IPython.display import update_display

            update_display({"text/html": self._snapshot_html()}, raw=True, display_id=self._snapshot_id)
        except Exception as err:  # no kernel to publish to: the live view is all there is
            logger.debug("lash_nb: monitor snapshot not updated: %s", err)

    def flush(self) -> None:
        """Draw now and drop any pending throttled redraw (for scripts and tests)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.redraw()

    # -- async side panels -------------------------------------------------------------------------

    def _refresh_queue_soon(self) -> None:
        """One queue refresh at a time; changes during it ask for a redraw afterwards, and that
        (throttled) redraw refreshes once more. So a burst of queue changes costs at most one
        refresh per redraw window, however slow the store (a SQLite queue answers from a
        thread, so a burst of enqueues would otherwise alternate with refreshes)."""
        state = self.state
        if self.queue_panel is None:
            state.queue_dirty = False
            return
        state.queue_dirty = True
        if self._queue_refreshing:
            return
        state.queue_dirty = False
        self._queue_refreshing = True

        async def refresh() -> None:
            try:
                await self.queue_panel.refresh()  # type: ignore[union-attr]
            finally:
                self._queue_refreshing = False
            if state.queue_dirty:
                self.request_redraw()

        spawn(refresh(), on_error=self._show_error)

    def _refresh_processes_soon(self) -> None:
        spawn(self.refresh_processes(), on_error=self._show_error)

    async def refresh_processes(self) -> list[Any]:
        """List the session's live processes again (a foreign failure of the registry raises
        ``ProcessRegistryError``; a read-only monitor raises ``RuntimeError``: it has no
        ``RuntimeHandle`` to list them from)."""
        if self.read_only:
            raise RuntimeError(self.read_only_reason)
        with translated(PROCESS_REGISTRY, "listing processes"):
            handles = list(await self._handle.observe().list_process_handles())
        self.processes_view.value = render.processes_html(handles)
        return handles

    def _show_error(self, err: BaseException) -> None:
        """Keep the failure in ``last_error``: every later redraw shows it until the next one."""
        self.last_error = render.error_text(err)
        self.header.value = render.monitor_header_html(self.state.statistics())

    # -- the buttons' methods, forwarded -----------------------------------------------------------

    async def enqueue(self, text: str, delivery_policy: Any = None, slot_policy: Any = None, source_key: str | None = None) -> Any:
        return await self._panel("enqueue_panel").enqueue(text, delivery_policy, slot_policy, source_key)

    async def cancel(self, batch_id: str) -> CancelOutcome:
        """Cancel a queued batch: ``CancelOutcome.CANCELLED``, ``REFUSED`` or ``UNKNOWN``
        (``QueuePanel.cancel``)."""
        return await self._panel("queue_panel").cancel(batch_id)

    # synchronous twins, for code that does not write ``await`` (a plain cell, a widget callback):
    # the same actions through ``lash_nb.run_sync`` (see its note on the kernel's loop)

    def enqueue_sync(
        self, text: str, delivery_policy: Any = None, slot_policy: Any = None, source_key: str | None = None
    ) -> Any:
        """``enqueue`` run to completion from synchronous code (``lash_nb.run_sync``)."""
        from ._sync import run_sync

        return run_sync(self.enqueue(text, delivery_policy, slot_policy, source_key))

    def cancel_sync(self, batch_id: str) -> CancelOutcome:
        """``cancel`` run to completion from synchronous code (``lash_nb.run_sync``)."""
        from ._sync import run_sync

        return run_sync(self.cancel(batch_id))

    def refresh_processes_sync(self) -> list[Any]:
        """``refresh_processes`` run to completion from synchronous code (``lash_nb.run_sync``)."""
        from ._sync import run_sync

        return run_sync(self.refresh_processes())

    async def drain(self, *, progress: bool = True) -> int:
        """Run the session's ready queued work now, one turn per claim (the handle's
        ``drain_queued_work``, a turn at a time), with a progress bar (``tqdm``) of the batches
        that were pending at the start, in the Queue tab. Returns the turns run; a read-only
        monitor raises ``RuntimeError``, a store failure its lash error."""
        queue = self._panel("queue_panel")
        handle = self._handle
        with translated(QUEUE_STORE, "listing pending queued work"):
            store = handle.observe().queue_store
            pending = len(await store.list_pending_queued_work(handle.session_id)) if store else 0
        bar = _progress_bar(pending, "draining queued work", "batch") if progress else None
        if bar is not None:
            self.progress_box.children = (bar.container,) if hasattr(bar, "container") else ()
        ran = 0
        try:
            while await handle.drain_queued_work(max_turns=1):
                ran += 1
                if bar is not None:
                    bar.set_postfix_str(f"{ran} turns", refresh=False)
                    try:
                        with translated(QUEUE_STORE, "listing pending queued work"):
                            left = len(await store.list_pending_queued_work(handle.session_id))
                    except Exception:
                        bar.update(min(1, pending - bar.n))  # at least this turn's batch is done
                        raise
                    bar.update(max(0, min(pending, pending - left)) - bar.n)
        finally:
            if bar is not None:
                bar.close()
        await queue.refresh()
        return ran

    def drain_sync(self, *, progress: bool = True) -> int:
        """``drain`` run to completion from synchronous code (``lash_nb.run_sync``)."""
        from ._sync import run_sync

        return run_sync(self.drain(progress=progress))

    def disconnect(self, client: str | None = None) -> None:
        self._panel("simulator").disconnect(client)

    def reconnect(self, client: str | None = None) -> Any:
        return self._panel("simulator").reconnect(client)

    def set_filter(
        self, *, payload_types: Sequence[str] | str = (), event_types: Sequence[str] | str = ()
    ) -> None:
        """Show only these payload / turn event types (empty: all), as the selection widgets do;
        ``ValueError`` for unknown names, and then nothing changes."""
        payload = check_types("payload_types", payload_types)
        event = check_types("event_types", event_types)
        with self.hold_trait_notifications():
            self.payload_filter.value = payload
            self.event_filter.value = event

    def frame(self) -> Any:
        """The whole kept history as a pandas DataFrame."""
        return self.state.frame()

    def _panel(self, name: str) -> Any:
        panel = getattr(self, name)
        if panel is None and self.read_only:
            raise RuntimeError(self.read_only_reason)
        if panel is None:
            raise RuntimeError("this monitor was created with controls=False")
        return panel
