"""Interactive controls: enqueue turn input, cancel queued batches, simulate reconnects.

Every button has a method doing the same thing (``EnqueuePanel.enqueue``, ``QueuePanel.cancel``,
``ReconnectSimulator.disconnect`` / ``reconnect`` ...), so scripts and tests drive the widgets
without a browser. Methods raise lash_core's typed errors; buttons show them in a status line
instead, so a bad input never prints a traceback and never clears what the user typed.

Stores that fail. Every call into a store (the live replay store, the queue store) goes through
``_boundary.translated``, so a store's own exception (a ``ConnectionError``) leaves as that
store's lash error, never bare. Each panel keeps its last failure, bounded, in ``last_error``
(and shows it); a method that failed also raises it, a button only shows it, and a redraw
(``refresh``, ``pump``) never raises for a store: it shows what it could not read. An action
that already happened is reported as done: an enqueue whose recorded events cannot be read back
is a successful enqueue with a note (``replay_note``), never an error that invites a retry.

Nothing here grows with time: logs (cancel outcomes, errors, gaps) keep the newest entries in
``deque``s with named bounds and count the rest, and every view renders a bounded number of rows
through ``_render``'s bounded helpers, so a redraw costs the same after a day as after a minute.
All markup comes from ``_render``; the simulated clients are ``lash_core.testing.SimulatedClient``s,
each a ``SessionFollower``, so their gap and lag handling is the follower's, not a copy.
"""

from __future__ import annotations

import collections
import contextlib
import math
from typing import Any, Callable, Sequence

import ipywidgets as widgets
import traitlets

from lash_core import (
    DeliveryPolicy,
    InvalidQueuedWorkError,
    InvalidTurnInputError,
    LashError,
    LiveReplayGap,
    LiveReplayStoreFailure,
    QueueChanged,
    QueuedWorkBatch,
    Replayed,
    SessionCursor,
    SlotPolicy,
    TurnInput,
    short_repr,
)
from lash_core._validate import enum_member, is_number
from lash_core.testing import FakeClock, ReconnectOutcome, SimulatedClient

from . import _render as render
from ._boundary import QUEUE_STORE, REPLAY_STORE, translated
from ._frames import type_name
from ._loop import logger, spawn
from ._explain import GapExplanation, explain_gap
from ._pictures import retention_picture
from ._state import CancelOutcome, check_names

__all__ = ["EnqueuePanel", "QueuePanel", "ReconnectSimulator"]


#: What an enqueue of empty (or whitespace-only) text says, in the panel and in the error it raises.
EMPTY_ENQUEUE = "Type some text to enqueue."
EMPTY_RUN = "Type some text to run a turn with."
#: A row of controls that wraps onto the next line instead of leaving a narrow window.
def _wrap() -> widgets.Layout:
    return widgets.Layout(flex_flow="row wrap", align_items="center", width="100%")
#: The most seconds one clock step may take (about 31 years): the input's bound, so a typo of
#: many digits cannot throw a scenario's clock past every deadline in it.
MAX_CLOCK_STEP_S = 1e9

#: Cancel outcomes shown in the queue panel's log; the line above them counts the earlier ones.
CANCEL_LOG_LINES = 20
#: Cancel outcomes kept in ``QueuePanel.outcomes`` for scripts (``cancel_count`` counts them all).
CANCEL_OUTCOMES_KEPT = 200
#: Errors kept (and shown) in the queue panel's log: the newest say what is wrong now.
ERROR_LOG_LINES = 5
#: Batches the queue panel lists, each with a Cancel button (a widget each); the count is exact.
QUEUE_ROWS_MAX = 50
#: Gaps the simulator's gap log shows (the newest); a line counts the earlier ones, so a redraw
#: costs the same after 2,000 reconnects as after 20.
GAP_LOG_ROWS = 20


def _hold(*items: widgets.Widget) -> contextlib.ExitStack:
    """Hold sync on every widget a batch of updates touches, so each sends one message."""
    stack = contextlib.ExitStack()
    for item in items:
        stack.enter_context(item.hold_sync())
    return stack


class EnqueuePanel(widgets.VBox):
    """Text, delivery policy, slot policy and an optional source key, then ``Enqueue``."""

    enqueued = traitlets.Int(0, help="successful enqueue calls")
    last_batch_id = traitlets.Unicode("", help="batch id the last successful enqueue returned")
    last_error = traitlets.Unicode("", help="message of the last refused enqueue, else empty")
    replay_note = traitlets.Unicode(
        "",
        help="why the events recorded for the last (successful) enqueue could not be read back "
        "from the stream, bounded; empty when they were",
    )

    busy = traitlets.Bool(False, help="an enqueue is in flight (the button is disabled)")
    matched_existing = traitlets.Bool(
        False, help="the last enqueue's source key matched a queued batch, returned unchanged"
    )

    turns_run = traitlets.Int(0, help="turns the Run turn button (or run_turn) ran to their commit")
    running = traitlets.Bool(False, help="a turn started here is running (Run turn is disabled)")
    last_outcome = traitlets.Unicode("", help="one line on the last turn run here, else empty")

    def __init__(
        self, handle: Any, *, on_change: Callable[[], None] | None = None, style: bool = True
    ) -> None:
        self._handle = handle
        self._on_change = on_change
        self._in_flight = 0  # turns started here and not yet returned
        self.text = widgets.Textarea(
            placeholder="Turn input: Run turn now, or Enqueue it",
            rows=1,
            layout=widgets.Layout(flex="1 1 14em", min_width="8em", width="auto"),
        )
        self.delivery = widgets.Dropdown(
            options=[(p.value, p) for p in DeliveryPolicy],
            value=DeliveryPolicy.AFTER_CURRENT_TURN_COMMIT,
            description="delivery",
            layout=widgets.Layout(width="auto", max_width="100%"),
        )
        self.slot = widgets.Dropdown(
            options=[(p.value, p) for p in SlotPolicy], value=SlotPolicy.EXCLUSIVE, description="slot",
            layout=widgets.Layout(width="auto", max_width="100%"),
        )
        self.source_key = widgets.Text(
            placeholder="optional: idempotent by key", description="source key",
            layout=widgets.Layout(width="auto", max_width="100%"),
        )
        self.run_button = widgets.Button(
            description="Run turn", icon="play", tooltip="run one turn with this input now, to its commit",
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.run_button.add_class("lash-run-turn")
        self.run_button.on_click(lambda _b: self.click_run())
        self.button = widgets.Button(
            description="Enqueue", button_style="primary", icon="plus",
            tooltip="queue this input for the runtime's queue worker",
            layout=widgets.Layout(width="auto", flex="0 0 auto"),
        )
        self.button.add_class("lash-enqueue")
        self.result = widgets.HTML()
        self.result.add_class("lash-enqueue-result")
        self.button.on_click(lambda _b: self.click())
        self.options = widgets.Accordion(
            [widgets.HBox([self.delivery, self.slot, self.source_key], layout=_wrap())],
            titles=("Enqueue options: delivery, slot, source key",),
            selected_index=None,
        )
        title = render.panel_title_html("Turn input", with_style=style)
        super().__init__(
            [
                widgets.HBox(
                    [widgets.HTML(title), self.text, self.run_button, self.button], layout=_wrap()
                ),
                self.options,
                self.result,
            ]
        )
        self.add_class("lash-enqueue-panel")

    def __repr__(self) -> str:
        return f"<EnqueuePanel enqueued={self.enqueued} last_batch_id={short_repr(self.last_batch_id)}>"

    def click(self) -> None:
        """What the button does: enqueue the form as it is now, one at a time, errors shown."""
        if not self.busy:
            self.busy = self.button.disabled = True  # at once: a second click finds it busy
            spawn(self._submit(*self._form(), from_form=True), on_error=self._show_error)

    def click_run(self) -> None:
        """What Run turn does: run the typed input as one turn now, one at a time, errors shown."""
        if not self.running:
            self.running = self.run_button.disabled = True  # at once: a second click finds it busy
            spawn(self._run(self.text.value, from_form=True), on_error=self._show_error)

    async def run_turn(self, text: str | None = None) -> Any:
        """Run one turn with ``text`` (default: the form, as Run turn does) through the handle,
        to its commit; returns the ``TurnOutcome``. Empty input is refused in plain words
        (``InvalidTurnInputError``); the turn's own failure is raised as it is (and shown)."""
        if text is None:
            return await self._run(self.text.value, from_form=True)
        return await self._run(text, from_form=False)

    async def _run(self, text: Any, *, from_form: bool) -> Any:
        self._in_flight += 1  # turns may overlap (run_turn called twice): the last one ends it
        self.running = self.run_button.disabled = True
        try:
            if not isinstance(text, (str, bytes)):
                raise InvalidTurnInputError(f"turn input must be text, not {type_name(text)}")
            turn_input = TurnInput.text(text)
            if not turn_input.content.strip():
                raise InvalidTurnInputError(EMPTY_RUN)
            self.result.value = render.note_html("running a turn...")
            outcome = await self._handle.run_turn(turn_input)
        except Exception as err:
            self._show_error(err)
            raise
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self.running = self.run_button.disabled = False
        line = render.turn_outcome_text(outcome)
        with _hold(self, self.result, self.text):
            self.turns_run += 1
            self.last_outcome = line
            self.last_error = ""
            self.result.value = render.note_html(line)
            if from_form and self.text.value == text:
                self.text.value = ""
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:
                logger.exception("lash_nb: a run-turn listener failed")
        return outcome

    def _form(self) -> tuple[str, Any, Any, str | None]:
        return self.text.value, self.delivery.value, self.slot.value, self.source_key.value or None

    def _show_error(self, err: BaseException) -> None:
        """A refused input (``InvalidTurnInputError``, ``InvalidQueuedWorkError``: what the user
        typed or picked) as a plain sentence; a failure (the store) with its error class."""
        with self.hold_sync():
            if isinstance(err, (InvalidTurnInputError, InvalidQueuedWorkError)):
                message = getattr(err, "message", None)  # without the error code in front
                self.last_error = render.clip(message if isinstance(message, str) else str(err), render.ERROR_MAX_CHARS)
                self.result.value = render.refusal_html(self.last_error)
            else:
                self.last_error = render.error_text(err, with_type=False)
                self.result.value = render.error_html(err)

    async def enqueue(
        self,
        text: str | bytes | None = None,
        delivery_policy: DeliveryPolicy | str | None = None,
        slot_policy: SlotPolicy | str | None = None,
        source_key: str | None = None,
    ) -> QueuedWorkBatch:
        """Enqueue ``text`` (default: the form, as the button does). The form keeps what was
        typed unless this enqueue sent it and succeeded."""
        form_text, form_delivery, form_slot, form_key = self._form()
        if text is None:
            return await self._submit(
                form_text, delivery_policy or form_delivery, slot_policy or form_slot,
                form_key if source_key is None else source_key, from_form=True,
            )
        return await self._submit(
            text, delivery_policy or form_delivery, slot_policy or form_slot, source_key,
            from_form=False,
        )

    async def _submit(
        self, text: Any, delivery_policy: Any, slot_policy: Any, key: str | None, *, from_form: bool
    ) -> QueuedWorkBatch:
        self.busy = self.button.disabled = True
        try:
            delivery = enum_member(DeliveryPolicy, delivery_policy, "delivery policy", InvalidQueuedWorkError)
            slot = enum_member(SlotPolicy, slot_policy, "slot policy", InvalidQueuedWorkError)
            if not isinstance(text, (str, bytes)):
                raise InvalidTurnInputError(f"turn input must be text, not {type_name(text)}")
            turn_input = TurnInput.text(text)
            if not turn_input.content.strip():
                raise InvalidTurnInputError(EMPTY_ENQUEUE)
            mark, note = self._mark()
            with translated(QUEUE_STORE, "enqueueing turn input"):
                batch = await self._handle.enqueue_turn_input(turn_input, delivery, slot, key or None)
        except LashError as err:
            self._show_error(err)
            raise
        finally:
            self.busy = self.button.disabled = False
        # The batch is queued: from here on nothing may report a failure (a retry would queue it
        # twice). Reading back what was recorded for it is best-effort.
        recorded, note = self._recorded(mark, batch, note)
        existing = batch.items[0].payload != turn_input
        with _hold(self, self.result, self.text, self.source_key):
            self.enqueued += 1
            self.last_batch_id = batch.batch_id
            self.matched_existing = existing
            self.last_error = ""
            self.replay_note = note
            self.result.value = render.enqueue_result_html(batch, recorded, existing=existing, note=note)
            if from_form and self.text.value == text:
                self.text.value = ""  # only what was sent; newer typing stays
            if from_form and key and self.source_key.value == key:
                self.source_key.value = ""
        if self._on_change is not None:
            try:
                self._on_change()
            except Exception:  # a listener's failure is not the enqueue's
                logger.exception("lash_nb: an enqueue listener failed")
        return batch

    def _mark(self) -> tuple[SessionCursor | None, str]:
        """The stream's cursor before the enqueue (to read back what it records), or ``None``
        and why when the stream cannot say."""
        try:
            with translated(REPLAY_STORE, "reading the stream's cursor before the enqueue"):
                cursor = self._handle.current_session_observation().cursor
        except LashError as err:
            return None, _stream_note(err)
        return (cursor, "") if isinstance(cursor, SessionCursor) else (None, "")

    def _recorded(
        self, mark: SessionCursor | None, batch: QueuedWorkBatch, note: str
    ) -> tuple[list[Any], str]:
        """The ``queue_changed`` events recorded for ``batch`` after ``mark``, and a note when
        they could not be read (the store is down): never raises."""
        if mark is None:
            return [], note
        try:
            with translated(REPLAY_STORE, "reading back the events recorded for the enqueue"):
                replay = self._handle.resume_session_observation(mark)
                recorded = [
                    e
                    for e in (replay.events if isinstance(replay, Replayed) else ())
                    if isinstance(e.payload, QueueChanged) and batch.batch_id in e.payload.batch_ids
                ]
        except Exception as err:
            return [], _stream_note(err)
        return recorded, note


def _stream_note(err: BaseException) -> str:
    return render.clip(
        "enqueued; the events it recorded could not be read from the stream: "
        + render.error_text(err),
        2 * render.ERROR_MAX_CHARS,
    )


class QueuePanel(widgets.VBox):
    """The session's queued batches, each with a Cancel button, and a log of cancel outcomes."""

    batch_count = traitlets.Int(0, help="batches in the store for this session")
    pending_count = traitlets.Int(0, help="batches not held by a live claim")
    last_cancel = traitlets.Unicode(
        "", help="outcome of the last cancel: 'cancelled', 'refused' or 'unknown'"
    )
    cancel_count = traitlets.Int(0, help="cancel calls so far (outcomes keeps the newest only)")
    listed = traitlets.List(
        traitlets.Unicode(), help="batch ids listed, each with a Cancel button (the first QUEUE_ROWS_MAX)"
    )
    last_error = traitlets.Unicode(
        "", help="the last failed refresh or cancel, bounded (its log keeps the newest few); "
        "empty after one succeeds"
    )

    def __init__(self, handle: Any, *, style: bool = True) -> None:
        self._handle = handle
        self._rows: dict[str, tuple[widgets.HBox, widgets.HTML, widgets.Button]] = {}
        #: the newest ``(batch id, outcome)`` pairs, oldest first; ``cancel_count`` counts all
        self.outcomes: collections.deque[tuple[str, CancelOutcome]] = collections.deque(
            maxlen=CANCEL_OUTCOMES_KEPT
        )
        #: the batch the last cancel removed; ``None`` when it was refused or unknown
        self.last_cancelled: QueuedWorkBatch | None = None
        #: the newest errors of the panel's buttons, shown in its log
        self.errors: collections.deque[BaseException] = collections.deque(maxlen=ERROR_LOG_LINES)
        self._shown: BaseException | None = None  # the error a method showed before raising it
        self.rows_box = widgets.VBox()
        self.more_rows = widgets.HTML()
        self.cancel_log = widgets.HTML()
        self.refresh_button = widgets.Button(description="Refresh", icon="refresh")
        self.refresh_button.add_class("lash-refresh")
        self.refresh_button.on_click(lambda _b: spawn(self.refresh(), on_error=self._show_error))
        title = render.panel_title_html("Queued work", with_style=style)
        super().__init__(
            [
                widgets.HBox([widgets.HTML(title), self.refresh_button]),
                self.rows_box,
                self.more_rows,
                self.cancel_log,
            ]
        )
        self.add_class("lash-queue-panel")

    def __repr__(self) -> str:
        return f"<QueuePanel batches={self.batch_count} pending={self.pending_count}>"

    def _store(self) -> Any:
        store = self._handle.observe().queue_store
        if store is None:
            raise LashError("this runtime has no queue store")
        return store

    async def refresh(self) -> list[QueuedWorkBatch]:
        """List the session's queued batches again. A store that fails raises its lash error
        (``QueuedWorkError`` for a foreign one), also shown in the log and ``last_error``."""
        try:
            with translated(QUEUE_STORE, "listing queued work"):
                store = self._store()
                session_id = self._handle.session_id
                batches = await store.list_queued_work(session_id)
                pending = {b.batch_id for b in await store.list_pending_queued_work(session_id)}
        except Exception as err:
            self._show_error(err)
            raise
        self.last_error = ""
        shown = batches[:QUEUE_ROWS_MAX]
        rows = []
        for batch in shown:
            row = self._rows.get(batch.batch_id)
            if row is None:
                label = widgets.HTML()
                label.layout = widgets.Layout(flex="1 1 auto", min_width="0")
                button = widgets.Button(
                    description="Cancel", icon="times", button_style="warning",
                    tooltip=f"cancel batch {batch.batch_id}",
                    layout=widgets.Layout(width="auto", flex="0 0 auto"),
                )
                button.add_class("lash-cancel")
                button.on_click(
                    lambda _b, bid=batch.batch_id: spawn(self.cancel(bid), on_error=self._show_error)
                )
                row = self._rows[batch.batch_id] = (
                    widgets.HBox([button, label], layout=widgets.Layout(align_items="flex-start", width="100%")),
                    label,
                    button,
                )
            row[1].value = render.queue_row_html(batch, pending=batch.batch_id in pending)
            rows.append(row[0])
        live = {b.batch_id for b in shown}
        for batch_id in [b for b in self._rows if b not in live]:
            self._rows.pop(batch_id)[0].close()
        more = render.more_batches_html(len(batches) - len(shown))
        with _hold(self, self.rows_box, self.more_rows):
            if tuple(rows) != self.rows_box.children:
                self.rows_box.children = rows
            if self.more_rows.value != more:
                self.more_rows.value = more
            self.batch_count = len(batches)
            self.pending_count = len(pending)
            self.listed = [b.batch_id for b in shown]
        return batches

    def cancel_button(self, batch_id: str) -> widgets.Button:
        """The Cancel button of a listed batch (``KeyError`` when it is not listed)."""
        row = self._rows.get(batch_id) if isinstance(batch_id, str) else None
        if row is None:
            raise KeyError(f"batch {short_repr(batch_id)} is not listed")
        return row[2]

    def _show_error(self, err: BaseException) -> None:
        if err is self._shown:
            return  # the method showed it already; the button's task reports it again
        self._shown = err
        self.errors.append(err)
        self.last_error = render.error_text(err)
        self._render_log()

    def _render_log(self) -> None:
        outcomes = list(self.outcomes)[-CANCEL_LOG_LINES:]
        self.cancel_log.value = render.cancel_log_html(
            outcomes, total=self.cancel_count, errors=tuple(self.errors)
        )

    async def cancel(self, batch_id: str) -> CancelOutcome:
        """Cancel ``batch_id`` and say what came of it (``CancelOutcome``: cancelled, refused
        because a live lease holds it, or unknown); ``last_cancelled`` is the removed batch.
        A store that fails raises its lash error, also shown in the log and ``last_error``.

        A refusal and an unknown id look the same from the store (its cancel returns ``None``),
        so the panel looks again *after* the store refused: a batch still listed then was there
        all along and held (``REFUSED``); one not listed is not in the queue (``UNKNOWN``). Batch
        ids are never reused, so a look after cannot find a batch that was not there at the
        cancel; see ``CancelOutcome`` for the one ambiguity left (a batch finished in between)."""
        try:
            with translated(QUEUE_STORE, "cancelling queued work"):
                store = self._store()
                session_id = self._handle.session_id
                batch = await self._handle.cancel_queued_work_batch(session_id, batch_id)
                if batch is not None:
                    outcome = CancelOutcome.CANCELLED
                elif any(b.batch_id == batch_id for b in await store.list_queued_work(session_id)):
                    outcome = CancelOutcome.REFUSED
                else:
                    outcome = CancelOutcome.UNKNOWN
        except Exception as err:
            self._show_error(err)
            raise
        self.outcomes.append((batch_id, outcome))
        self.last_cancelled = batch
        with _hold(self, self.cancel_log):
            self.cancel_count += 1
            self.last_cancel = outcome.value
            self._render_log()
        try:
            await self.refresh()
        except Exception:  # shown by refresh; the cancel itself is done and must not look failed
            pass
        return outcome


class _Client(SimulatedClient):
    """A ``SimulatedClient`` that comes up disconnected when its first connect fails (the store
    is down) instead of failing to exist: the failure is kept in ``connect_error``, and
    ``reconnect()`` tries again. Later connects raise as a ``SimulatedClient``'s do."""

    def __init__(self, handle: Any, name: str) -> None:
        self.connect_error: LashError | None = None
        self._starting = True
        try:
            super().__init__(handle, name)
        finally:
            self._starting = False

    def connect(self) -> ReconnectOutcome:
        if not self._starting:
            return super().connect()
        try:
            with translated(REPLAY_STORE, f"connecting simulated client {short_repr(self.name, 40)}"):
                return super().connect()
        except LashError as err:
            self.connect_error = err
            return None  # type: ignore[return-value]  # only __init__ calls this now, and drops it


class ReconnectSimulator(widgets.VBox):
    """Simulated clients that disconnect, miss events and reconnect with their saved cursors.

    Retention sliders change the store's bounds live, and (with a ``FakeClock``) a button moves
    time forward, so a learner sees exactly where replay turns into a gap.

    A store that fails never breaks the simulator: a method whose action failed raises the
    store's lash error and shows it (``last_error``, ``error_view``); a redraw that cannot read
    the store's statistics shows why (``store_error``) and the clients all the same; a client
    whose first connect failed comes up disconnected, ready to reconnect.

    Any ``LiveReplayStore`` works. What only some stores offer degrades gracefully: a store
    without ``reconfigure`` (the SQLite store: its bounds are fixed when it opens) greys out the
    retention sliders (``retention_fixed``) and ``set_retention`` raises a
    ``LiveReplayStoreFailure`` saying so; a store without ``statistics`` shows its kind and
    file instead of the held-events line.
    """

    selected = traitlets.Unicode(help="name of the client the buttons act on")
    last_outcome = traitlets.Unicode("", help="'replayed' or 'gap' after the last reconnect")
    gap_count = traitlets.Int(0, help="gaps seen by all simulated clients, ever")
    reconnect_count = traitlets.Int(0, help="connects and reconnects of all simulated clients, ever")
    views_match = traitlets.Bool(True, help="every connected client's view equals the server's")
    last_error = traitlets.Unicode(
        "", help="the last failed action (a button or its method), bounded; empty after one succeeds"
    )
    store_error = traitlets.Unicode(
        "", help="why the store's statistics could not be read at the last redraw, else empty"
    )
    retention_fixed = traitlets.Bool(
        False, help="the store cannot change its retention live (no reconfigure): sliders off"
    )

    def __init__(
        self,
        handle: Any,
        *,
        clock: FakeClock | None = None,
        clients: Sequence[str] = ("A", "B"),
        style: bool = True,
    ) -> None:
        names = check_names("clients", clients)
        self._handle = handle
        self._clock = clock
        self._shown: BaseException | None = None  # the error a method showed before raising it
        with translated(REPLAY_STORE, "following the session"):
            self.clients: dict[str, SimulatedClient] = {name: _Client(handle, name) for name in names}
        self.last: ReconnectOutcome | None = None
        #: the newest gaps of all clients as ``(client name, gap)``, oldest first
        self.gap_entries: collections.deque[tuple[str, LiveReplayGap]] = collections.deque(
            maxlen=GAP_LOG_ROWS
        )
        self._gaps_seen = {name: 0 for name in self.clients}
        #: ``id(gap)`` -> its ``GapExplanation`` (count or age; the missed range), made from the
        #: store's statistics when the gap was met, for the gaps in ``gap_entries``
        self.gap_explanations: dict[int, GapExplanation] = {}
        #: the explanation of the last reconnect's gap (``None`` after a replay)
        self.last_explanation: GapExplanation | None = None
        from ._pictures import RetentionStrip

        #: the retained range, the trimmed region, the tail and each client's cursor, live
        self.strip = RetentionStrip()
        self.picker = widgets.ToggleButtons(options=list(names), description="client")
        self.disconnect_button = widgets.Button(description="Disconnect", icon="unlink")
        self.reconnect_button = widgets.Button(description="Reconnect", icon="link", button_style="info")
        self.disconnect_button.add_class("lash-disconnect")
        self.reconnect_button.add_class("lash-reconnect")
        max_events, max_age = self._retention_now()
        self.retention = widgets.IntSlider(  # at least 1: a session always keeps its newest event
            value=max(max_events, 1), min=1, max=max(max_events, 64), description="max events"
        )
        self.max_age = widgets.FloatSlider(
            value=max_age, min=0.0, max=max(max_age, 300.0), step=1.0, description="max age s"
        )
        self.advance_seconds = widgets.BoundedFloatText(  # time only moves forward
            value=30.0, min=0.0, max=MAX_CLOCK_STEP_S, description="advance s", layout={"width": "180px"}
        )
        self.advance_button = widgets.Button(description="Advance clock", icon="clock-o", disabled=clock is None)
        self.trim_button = widgets.Button(description="Trim now", icon="scissors")
        self.advance_button.add_class("lash-advance")
        self.trim_button.add_class("lash-trim")
        self.status = widgets.HTML()
        self.error_view = widgets.HTML()
        self.error_view.add_class("lash-simulator-error")
        self.replayed_view = widgets.HTML()
        self.gap_view = widgets.HTML()
        self.gap_log = widgets.HTML()
        self.picker.observe(lambda ch: setattr(self, "selected", ch["new"]), "value")
        self.selected = self.picker.value or ""
        self.disconnect_button.on_click(lambda _b: self._guard(self.disconnect))
        self.reconnect_button.on_click(lambda _b: self._guard(self.reconnect))
        self.advance_button.on_click(lambda _b: self._guard(lambda: self.advance_clock(self.advance_seconds.value)))
        self.trim_button.on_click(lambda _b: self._guard(self.trim))
        self._syncing = False
        self.retention.observe(self._sliders_changed, "value")
        self.max_age.observe(self._sliders_changed, "value")
        super().__init__(
            [
                widgets.HTML(render.panel_title_html("Reconnect simulator", with_style=style)),
                self.strip,
                widgets.HBox([self.picker, self.disconnect_button, self.reconnect_button], layout=_wrap()),
                widgets.HBox([self.retention, self.max_age], layout=_wrap()),
                widgets.HBox([self.advance_seconds, self.advance_button, self.trim_button], layout=_wrap()),
                self.status,
                self.error_view,
                widgets.HBox([self.replayed_view, self.gap_view], layout=_wrap()),
                self.gap_log,
            ]
        )
        self.add_class("lash-reconnect-simulator")
        for client in self.clients.values():
            failed = getattr(client, "connect_error", None)
            if failed is not None:
                self._show_error(failed)  # the newest shown; each client says disconnected
        self._render()

    def __repr__(self) -> str:
        states = ", ".join(
            f"{short_repr(n, 40)}={'on' if c.connected else 'off'}" for n, c in self.clients.items()
        )
        return f"<ReconnectSimulator {states} gaps={self.gap_count}>"

    @property
    def _replay_store(self) -> Any:
        """The handle's store as it is now (a simulated restart replaces it)."""
        return self._handle.live_replay_store

    def _retention_now(self) -> tuple[int, float]:
        """The store's retention bounds for the sliders; the defaults when it cannot say."""
        try:
            config = getattr(self._replay_store, "config", None)
            max_events = getattr(config, "max_events_per_session", 2048)
            max_age = float(getattr(config, "max_age", 120.0))
        except Exception:  # a store that is down: the sliders start at the defaults
            return 2048, 120.0
        if isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 0:
            max_events = 2048
        if not 0.0 <= max_age < math.inf:
            max_age = 120.0
        return max_events, max_age

    def _client(self, name: str | None) -> SimulatedClient:
        name = name or self.selected
        client = self.clients.get(name) if isinstance(name, str) else None  # never hash user data
        if client is None:
            raise KeyError(
                f"no simulated client named {short_repr(name)}; have {short_repr(sorted(self.clients))}"
            )
        return client

    def _show_error(self, err: BaseException) -> None:
        """Keep ``err`` (bounded) in ``last_error`` and show it under the clients."""
        self._shown = err
        with _hold(self, self.error_view):
            self.last_error = render.error_text(err)
            self.error_view.value = render.error_html(err)

    def _refuse(self, message: str) -> ValueError:
        """A refused input: shown as the plain sentence ``message`` (no error class name), and
        returned as the ``ValueError`` the method raises."""
        err = ValueError(message)
        self._shown = err
        with _hold(self, self.error_view):
            self.last_error = message
            self.error_view.value = render.refusal_html(message)
        return err

    def _clear_error(self) -> None:
        if self.last_error:
            with _hold(self, self.error_view):
                self.last_error = ""
                self.error_view.value = ""

    def _act(self, action: str, do: Callable[[], Any]) -> Any:
        """Run one action on the store or a client: a failure is shown and raised (a foreign
        one as ``LiveReplayStoreFailure``); a success clears the last error."""
        try:
            with translated(REPLAY_STORE, action):
                result = do()
        except Exception as err:
            self._show_error(err)
            raise
        self._clear_error()
        return result

    def _guard(self, action: Callable[[], Any]) -> None:
        """What a button runs: ``action``, any failure shown instead of raised (a button has
        nowhere to raise to)."""
        try:
            action()
        except Exception as err:
            if err is not self._shown:
                self._show_error(err)

    # -- methods behind the buttons ----------------------------------------------------------------

    def disconnect(self, client: str | None = None) -> None:
        target = self._client(client)
        self._act(f"disconnecting {short_repr(target.name, 40)}", target.disconnect)
        self._render()

    def reconnect(self, client: str | None = None) -> ReconnectOutcome:
        target = self._client(client)
        outcome: ReconnectOutcome = self._act(f"reconnecting {short_repr(target.name, 40)}", target.reconnect)
        self.last = outcome
        # explained now, from the store's bounds now (later they may have moved)
        self.last_explanation = self._explain(outcome.gap) if outcome.gap is not None else None
        with _hold(self.replayed_view, self.gap_view):
            self.last_outcome = outcome.kind
            if outcome.gap is None:
                self.replayed_view.value = render.replayed_html(target.name, outcome.replayed)
                self.gap_view.value = ""
            else:
                self.gap_explanations[id(outcome.gap)] = self.last_explanation
                self.replayed_view.value = ""
                self.gap_view.value = render.reconnect_gap_html(
                    target.name, outcome.gap, outcome.observation, self.last_explanation
                )
            self._render()
        return outcome

    def set_retention(
        self, max_events: int | None = None, max_age: float | None = None
    ) -> Any:
        """Change the store's retention bounds now (and move the sliders to match); a store that
        cannot (no ``reconfigure``) is a ``LiveReplayStoreFailure`` saying so. ``None`` keeps a
        bound; ``max_events`` must be a whole number >= 1 (else ``ValueError``, shown plainly)."""
        if max_events is not None and (
            isinstance(max_events, bool) or not isinstance(max_events, int) or max_events < 1
        ):
            raise self._refuse(
                f"Retention must keep at least 1 event: give a whole number of 1 or more "
                f"(got {short_repr(max_events)})."
            )

        def reconfigure() -> Any:
            store = self._replay_store
            if not _can_reconfigure(store):
                raise LiveReplayStoreFailure(
                    f"{type_name(store)} fixes its retention when it opens; "
                    "open it with another config (or use an InMemoryLiveReplayStore) to change it"
                )
            return store.reconfigure(max_events_per_session=max_events, max_age=max_age)

        config = self._act("changing retention", reconfigure)
        self._syncing = True
        try:
            self.retention.max = max(self.retention.max, config.max_events_per_session)
            self.retention.value = config.max_events_per_session
            self.max_age.max = max(self.max_age.max, config.max_age)
            self.max_age.value = config.max_age
        finally:
            self._syncing = False
        self._render()
        return config

    def _sliders_changed(self, _change: dict[str, Any]) -> None:
        if not self._syncing:
            self._guard(lambda: self.set_retention(self.retention.value, self.max_age.value))

    def advance_clock(self, seconds: float) -> None:
        """Move the scenario's fake clock forward by ``seconds`` (a finite number >= 0) and
        apply retention."""
        if self._clock is None:
            raise self._refuse("This session runs on a real clock; only a FakeClock can be advanced.")
        if not is_number(seconds) or seconds < 0:  # NaN, infinities, bool and huge ints fail
            raise self._refuse(
                "The clock only moves forward: give a finite number of seconds, 0 or more "
                f"(got {short_repr(seconds)})."
            )
        self._clock.advance(float(seconds))
        self.trim()

    def trim(self) -> None:
        """Apply the store's retention to the session now."""
        self._act("trimming the session", lambda: self._replay_store.trim_session(self._handle.session_id))
        self._render()

    def pump(self, *, render: bool = True) -> None:
        """Let connected clients apply what is ready. The monitor pumps on every batch and
        renders only when it redraws (``render=False``), so the frontend is not flooded. Never
        raises: a client whose read fails is shown in ``last_error`` and the others go on."""
        for client in self.clients.values():
            try:
                with translated(REPLAY_STORE, f"reading for {short_repr(client.name, 40)}"):
                    client.pump()
            except Exception as err:
                self._show_error(err)
        if render:
            self._render()

    def refresh(self) -> None:
        """Redraw from the clients and the store; never raises (see ``store_error``)."""
        try:
            self._render()
        except Exception as err:  # a bug in a view must not break the monitor's redraw
            self._show_error(err)

    def view_matches(self, client: str | None = None) -> bool:
        return self._client(client).view_matches_server()

    # -- rendering ---------------------------------------------------------------------------------

    def _explain(self, gap: LiveReplayGap) -> GapExplanation | None:
        """``gap`` explained from the store's statistics and bounds as they are now (``None``
        when the store cannot say)."""
        stats, _note, error = self._statistics()
        if stats is None:
            return None
        config = getattr(self._replay_store, "config", None)
        max_events = getattr(config, "max_events_per_session", None)
        try:
            return explain_gap(
                gap,
                first_retained=stats.oldest_position,
                tail=stats.tail_position,
                max_events=max_events if isinstance(max_events, int) else None,
            )
        except Exception:  # odd statistics: the gap shows without the why
            return None

    def _collect_gaps(self) -> None:
        """Move every client's gaps since the last render into ``gap_entries`` (bounded), in the
        order this simulator saw them. Read from each client's follower, which records every gap
        (several in a row on one reconnect, or one met resubscribing after a lag), not only the
        first of a reconnect. Costs O(clients + new gaps), never O(history)."""
        for name, client in self.clients.items():
            new = client.gap_count - self._gaps_seen[name]
            if new > 0:
                recent = list(client.follower.gaps)  # bounded by the follower
                for gap in recent[max(len(recent) - new, 0) :]:
                    self.gap_entries.append((name, gap))
                    if id(gap) not in self.gap_explanations:
                        self.gap_explanations[id(gap)] = self._explain(gap)
            self._gaps_seen[name] = client.gap_count
        if len(self.gap_explanations) > len(self.gap_entries):  # keep the listed gaps' only
            listed = {id(gap) for _name, gap in self.gap_entries}
            self.gap_explanations = {k: v for k, v in self.gap_explanations.items() if k in listed}

    def _statistics(self) -> tuple[Any, str, str]:
        """``(statistics, note, error)``: the store's statistics for the session; else (a store
        without ``statistics``) a note naming the store and its file; and
        why they could not be read, else ``""``."""
        try:
            with translated(REPLAY_STORE, "reading the store's statistics"):
                store = self._replay_store
                if hasattr(store, "statistics"):
                    return store.statistics(self._handle.session_id), "", ""
                return None, _store_note(store), ""
        except LashError as err:
            return None, "", render.error_text(err)

    def _draw_strip(self, stats: Any, why_not: str = "") -> None:
        """Move the retention strip to the store's range and the clients' cursors now; when the
        store cannot say (no ``statistics``, or it is down), say so in its caption instead."""
        if stats is None:
            self.strip.caption.value = render.note_html(
                "retention strip not drawn: the store does not report its retained range"
                + (f" ({why_not})" if why_not else "")
            )
            return
        try:
            self._update_strip(stats)
        except Exception as err:  # odd statistics: the strip stays as it was, the rest draws
            logger.debug("lash_nb: retention strip not updated: %s", err)

    def _update_strip(self, stats: Any) -> None:
        store = self._replay_store
        max_events = getattr(getattr(store, "config", None), "max_events_per_session", None)
        base = getattr(store, "position_base", 0)
        clients = {
            name: (c.follower.cursor.live_position() if c.follower.cursor is not None else None)
            for name, c in self.clients.items()
        }
        self.strip.update(
            retention_picture(
                stats.oldest_position, stats.tail_position, clients,
                max_events=max_events if isinstance(max_events, int) else None,
                base=base if isinstance(base, int) else 0,
            )
        )

    def _sync_retention_controls(self) -> None:
        """Grey the sliders out while the store (it may have been replaced) cannot reconfigure."""
        try:
            fixed = not _can_reconfigure(self._replay_store)
        except Exception:  # a store that is down: leave the sliders as they are
            return
        if fixed != self.retention_fixed:
            self.retention_fixed = fixed
            self.retention.disabled = fixed
            self.max_age.disabled = fixed

    def _render(self) -> None:
        stats, note, store_error = self._statistics()
        self._sync_retention_controls()
        self._collect_gaps()
        self._draw_strip(stats, note or store_error)
        matches = {name: _view_matches(c) for name, c in self.clients.items()}
        clients = [
            (name, c.connected, c.follower.cursor, c.received, c.gap_count, c.lagged, matches[name])
            for name, c in self.clients.items()
        ]
        gap_count = sum(c.gap_count for c in self.clients.values())
        reconnect_count = sum(c.reconnects for c in self.clients.values())
        with _hold(self, self.status, self.gap_log):
            self.status.value = (render.note_html(note) if note else "") + render.clients_html(
                clients, stats, store_error=store_error
            )
            self.store_error = store_error
            self.gap_log.value = render.gap_log_html(
                tuple(self.gap_entries), total=gap_count, reconnects=reconnect_count,
                explanations=self.gap_explanations,
            )
            self.gap_count = gap_count
            self.reconnect_count = reconnect_count
            self.views_match = all(
                matches[name] is True for name, c in self.clients.items() if c.connected
            )


def _can_reconfigure(store: Any) -> bool:
    return callable(getattr(store, "reconfigure", None))


def _store_note(store: Any) -> str:
    """One line about a store that keeps no statistics: its kind and its file (cursors stay
    opaque here: no tail is read out of one)."""
    parts = [f"store: {type_name(store)}"]
    path = getattr(store, "path", None)
    if isinstance(path, str):
        parts.append(f"file {short_repr(path, 200)}")
    if not _can_reconfigure(store):
        parts.append("retention fixed when it opened")
    return ", ".join(parts)


def _view_matches(client: SimulatedClient) -> bool | None:
    """Whether the client's view equals the server's; ``None`` when the two cannot be compared
    (``==`` on a value nested too deep raises ``RecursionError``)."""
    try:
        return bool(client.view_matches_server())
    except Exception:
        return None
