"""Why a ``trimmed`` gap happened: which retention bound dropped the events a client missed.

Pure: positions in, values out. Imports ``lash_core`` only (no widgets, no pandas), so a monitor,
a simulator, a notebook cell and a test all explain a gap the same way.

Rules (read these before the code):

* Retention (spec section 3) first drops the oldest events while more than
  ``max_events_per_session`` (here ``max_events``) remain, then drops the oldest events older than
  ``max_age``. Tails only grow, so the count bound alone, at any time, has removed exactly the
  positions ``<= tail - max_events``: a position above that line was kept by the count bound
  and, if it is gone, the age bound removed it.
* A client resuming from position ``requested`` into a ``trimmed`` gap missed the positions
  ``requested + 1 .. first_retained - 1``; when the store retains nothing (``first_retained`` is
  ``None``, as ``statistics().oldest_position`` says), every position ``requested + 1 .. tail``.
* The cause names the bounds needed to explain that run: ``COUNT`` when the count bound alone
  removed every missed position (every one ``<= tail - max_events``), ``AGE`` when it removed
  none of them, ``COUNT_AND_AGE`` when it removed the older part and the age bound the rest.
  ``COUNT`` does not rule out that the events were old enough for the age bound too: positions
  carry no times, so the count bound, which acts first, is named.
* ``UNKNOWN`` when the inputs cannot say: no count bound given (``max_events is None``), or no
  position was missed according to the inputs (``requested + 1 >= first_retained``, or a
  cursor at or past the tail: that is no trimmed gap; inputs read at different moments, or an
  ``unavailable`` gap, look like this).
* The answer is only as good as its inputs: read ``first_retained`` and ``tail`` from one
  ``statistics()`` snapshot taken right after the gap, and pass the ``max_events`` in force
  when the events were dropped. A store reconfigured to a *larger* ``max_events`` since then
  makes a count trim look like an age trim (the rule reads the bound as it is now). When a
  store's forgotten-session floor rose, positions may have skipped numbers no event ever had,
  so ``missed`` is then an upper bound (as ``LiveReplayGap.missed_events`` says).
"""

from __future__ import annotations

import dataclasses
import enum

from lash_core import LiveReplayGap, LiveReplayGapReason

__all__ = ["TrimCause", "GapExplanation", "dropped_count", "trim_cause", "explain_gap"]

_TRIMMED = LiveReplayGapReason.TRIMMED
_UNAVAILABLE = LiveReplayGapReason.UNAVAILABLE


class TrimCause(enum.StrEnum):
    """Which retention bound dropped the events a ``trimmed`` gap's client missed."""

    COUNT = "count"  # every missed position is at or below ``tail - max_events``
    AGE = "age"  # none is: the count bound kept them all, the age bound dropped them
    COUNT_AND_AGE = "count and age"  # the older ones by count, the rest by age
    UNKNOWN = "unknown"  # the inputs cannot say (see the module's rules)


def _position(name: str, value: object) -> int:
    """A live position: an ``int`` (``bool`` refused) that is not negative."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must not be negative, got {value}")
    return int(value)


def _missed_run(requested: int, first_retained: int | None, tail: int) -> tuple[int, int]:
    """``(lo, hi)``: the positions a client at ``requested`` missed, ``lo..hi`` inclusive
    (empty when ``hi < lo``)."""
    hi = tail if first_retained is None else min(first_retained - 1, tail)
    return requested + 1, hi


def dropped_count(requested_position: int, first_retained: int | None, tail: int) -> int:
    """Events a client at ``requested_position`` still needed that retention dropped: ``first_retained -
    requested_position - 1``, or ``tail - requested_position`` when nothing is retained
    (``first_retained is None``); never negative (0 for a client that misses nothing, or one
    at or past the tail), and never counting past ``tail``.

    Raises ``TypeError`` for a non-``int`` position (``bool`` refused), ``ValueError`` for a
    negative one."""
    requested = _position("requested_position", requested_position)
    tail = _position("tail", tail)
    first = None if first_retained is None else _position("first_retained", first_retained)
    lo, hi = _missed_run(requested, first, tail)
    return max(hi - lo + 1, 0)


def trim_cause(
    requested_position: int, first_retained: int | None, tail: int, max_events: int | None
) -> TrimCause:
    """Which bound dropped the positions ``requested_position + 1 .. first_retained - 1`` (all
    of ``requested_position + 1 .. tail`` when ``first_retained is None``), by the module's
    rules: with ``line = tail - max_events``, ``COUNT`` when every missed position is
    ``<= line``, ``AGE`` when none is, ``COUNT_AND_AGE`` otherwise; ``UNKNOWN`` when
    ``max_events is None`` or nothing was missed.

    Positions are store live positions (``SessionCursor.live_position()``,
    ``statistics().oldest_position`` / ``tail_position``); ``max_events`` is the store's
    ``config.max_events_per_session``. Raises ``TypeError`` for a non-``int`` argument
    (``bool`` refused), ``ValueError`` for a negative one."""
    requested = _position("requested_position", requested_position)
    tail = _position("tail", tail)
    first = None if first_retained is None else _position("first_retained", first_retained)
    bound = None if max_events is None else _position("max_events", max_events)
    lo, hi = _missed_run(requested, first, tail)
    if bound is None or hi < lo:
        return TrimCause.UNKNOWN
    line = tail - bound  # the count bound alone removed exactly the positions <= line
    if hi <= line:
        return TrimCause.COUNT
    if lo > line:
        return TrimCause.AGE
    return TrimCause.COUNT_AND_AGE


@dataclasses.dataclass(frozen=True, slots=True)
class GapExplanation:
    """A gap, explained in one plain sentence.

    ``reason`` is the gap's (``trimmed`` / ``unavailable``); ``cause`` the ``TrimCause`` of a
    ``trimmed`` gap, ``None`` for an ``unavailable`` one; ``missed`` the events the client never
    gets (``LiveReplayGap.missed_events``: every position after its cursor up to the fresh
    observation it resumes from, retained or not: a gap replays nothing), ``None`` when unknown;
    ``dropped`` how many of those retention dropped (the positions ``requested + 1 ..
    first_retained - 1``, the ones that made the gap), ``None`` when unknown (an ``unavailable``
    gap, a cursor that does not parse, inputs that show nothing dropped); ``requested_position`` the gap's cursor position (``None``
    when it does not parse); ``kept`` the retained run ``(first, tail)``, ``None`` when nothing
    is retained; ``text`` the sentence, e.g. ``"trimmed by age: retention dropped 12 events this
    client still needed (positions 5..16; the store kept 17..40); it resumes from a fresh
    observation, 36 events after its cursor"``."""

    reason: LiveReplayGapReason
    cause: TrimCause | None
    missed: int | None
    dropped: int | None
    requested_position: int | None
    kept: tuple[int, int] | None
    text: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "reason", LiveReplayGapReason(self.reason))
        if self.cause is not None:
            object.__setattr__(self, "cause", TrimCause(self.cause))
        if (self.reason is _UNAVAILABLE) != (self.cause is None):
            raise ValueError("a trimmed gap has a cause, an unavailable one has none")
        for name in ("missed", "dropped"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")


def _positions_text(lo: int, hi: int) -> str:
    return f"position {lo}" if lo == hi else f"positions {lo}..{hi}"


def _events_text(count: int) -> str:
    return f"{count} event" if count == 1 else f"{count} events"


def explain_gap(
    gap: LiveReplayGap,
    *,
    first_retained: int | None,
    tail: int | None = None,
    max_events: int | None = None,
) -> GapExplanation:
    """Explain ``gap`` with the store's positions read right after it: ``first_retained``
    (``statistics(session_id).oldest_position``, ``None`` when nothing is retained), ``tail``
    (``statistics(session_id).tail_position``; ``None``: the gap's ``latest_cursor``
    position) and ``max_events`` (``store.config.max_events_per_session``; ``None`` when the
    store does not say, which makes the cause ``UNKNOWN``).

    Never raises for what a gap holds (a cursor that does not parse gives an explanation with
    ``missed=None``); raises ``TypeError`` / ``ValueError`` for a non-``int`` or negative
    position, as ``trim_cause`` does, and ``TypeError`` for a ``gap`` that is not a
    ``LiveReplayGap``."""
    if not isinstance(gap, LiveReplayGap):
        raise TypeError(f"gap must be a LiveReplayGap, not {type(gap).__name__}")
    requested = gap.requested_cursor.live_position()
    if tail is None:
        tail = gap.latest_cursor.live_position()
    else:
        tail = _position("tail", tail)
    first = None if first_retained is None else _position("first_retained", first_retained)
    if max_events is not None:
        _position("max_events", max_events)
    kept = (first, tail) if first is not None and tail is not None and first <= tail else None
    kept_text = "none" if kept is None else f"{kept[0]}..{kept[1]}"
    reason = LiveReplayGapReason(gap.reason)
    behind = gap.missed_events  # None for unavailable, or cursors that do not parse

    if reason is _UNAVAILABLE:
        if requested is not None and tail is not None and requested > tail:
            why = (
                f"position {requested} is past the store's tail {tail} (a cursor from the "
                "future, or from a store that restarted)"
            )
        elif requested is None:
            why = "the cursor's position does not parse"
        else:
            why = f"the store never had position {requested} (a cursor from another store instance)"
        text = f"unavailable: {why}; nothing can be replayed, the client reloads"
        return GapExplanation(reason, None, None, None, requested, kept, text)

    if requested is None or tail is None:
        text = "trimmed: the cursors do not parse, so what was missed is unknown; the client reloads"
        return GapExplanation(reason, TrimCause.UNKNOWN, behind, None, requested, kept, text)
    cause = trim_cause(requested, first, tail, max_events)
    lo, hi = _missed_run(requested, first, tail)
    if hi < lo:  # the positions given show nothing missed: read at another moment than the gap
        text = (
            f"trimmed, but the store's positions given (kept {kept_text}, tail {tail}) show "
            f"nothing missed after {requested}: they were read at another moment than the gap"
        )
        return GapExplanation(reason, TrimCause.UNKNOWN, behind, None, requested, kept, text)
    dropped = hi - lo + 1
    by = "(cause unknown: no count bound given)" if cause is TrimCause.UNKNOWN else f"by {cause}"
    text = (
        f"trimmed {by}: retention dropped {_events_text(dropped)} this client still needed "
        f"({_positions_text(lo, hi)}; the store kept {kept_text})"
    )
    if behind is not None:
        text += f"; it resumes from a fresh observation, {_events_text(behind)} after its cursor"
    return GapExplanation(reason, cause, behind, dropped, requested, kept, text)
