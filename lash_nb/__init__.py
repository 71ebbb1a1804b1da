"""lash_nb: the Jupyter toolkit over lash_core.

History as DataFrames (``to_frame``, ``EventHistory``), a monitor's state as a plain object
(``MonitorState``), escaped HTML renderings (``render``), live widgets (``SessionMonitor`` and its
controls), and IPython integration (``%load_ext lash_nb``, ``Rich``). ``lash_nb`` imports
``lash_core``, never the reverse. Subpackages: ``lash_nb.forensics`` (record, load and analyse
observation logs) and ``lash_nb.remote`` (``KernelSource``: a handle in another kernel).

``import lash_nb`` needs pandas only: it imports no ipywidgets and no IPython. The widget classes
load on first use (``lash_nb.SessionMonitor``, ``from lash_nb import SessionMonitor``), which is
when ipywidgets is imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import _render as render
from ._frames import (
    COLUMNS,
    DTYPES,
    EventHistory,
    EventHistoryStatistics,
    FallbackRow,
    cast_frame,
    concat_frames,
    event_row,
    is_fallback_row,
    schema_mismatches,
    to_frame,
)
from ._ipython import Rich, load_ipython_extension, unload_ipython_extension
from ._producer import BackgroundProducer, start_producer
from ._render import (
    batch_html,
    css,
    cursor_html,
    event_detail_html,
    event_html,
    events_table_html,
    gap_html,
    mimebundle,
    observation_html,
)
from ._state import MonitorState, MonitorStatistics, RedrawThrottle
from ._state import CancelOutcome  # issue 10: what a cancel came to
from ._state import StreamMarker
from ._explain import GapExplanation, TrimCause, explain_gap, dropped_count, trim_cause
from ._pictures import (
    RateCounter,
    RateSeries,
    RetentionPicture,
    event_kind,
    retention_figure,
    retention_picture,
)
from ._sync import run_sync

if TYPE_CHECKING:  # the widget classes, for type checkers; at run time they load on first use
    from ._controls import EnqueuePanel, QueuePanel, ReconnectSimulator
    from ._monitor import SessionMonitor
    from ._peer import PeerKernel, PeerKernelError

#: name -> module of the widget classes, imported (with ipywidgets) on first access (PEP 562)
_WIDGETS = {
    "SessionMonitor": "._monitor",
    "EnqueuePanel": "._controls",
    "QueuePanel": "._controls",
    "ReconnectSimulator": "._controls",
    # a second kernel, driven with jupyter-client (imported on first use)
    "PeerKernel": "._peer",
    "PeerKernelError": "._peer",
}


def __getattr__(name: str) -> Any:
    module = _WIDGETS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next access is a plain global
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WIDGETS))


__all__ = [
    # history as DataFrames
    "COLUMNS",
    "DTYPES",
    "to_frame",
    "event_row",
    "EventHistory",
    "EventHistoryStatistics",
    "FallbackRow",
    "is_fallback_row",
    "concat_frames",
    "cast_frame",
    "schema_mismatches",
    # a monitor's state, without widgets
    "MonitorState",
    "MonitorStatistics",
    "RedrawThrottle",
    "CancelOutcome",
    "StreamMarker",
    # why a gap happened, and pictures of retention and rates (pure parts)
    "TrimCause",
    "GapExplanation",
    "trim_cause",
    "dropped_count",
    "explain_gap",
    "RetentionPicture",
    "retention_picture",
    "RateCounter",
    "RateSeries",
    "event_kind",
    # rendering
    "render",
    "css",
    "cursor_html",
    "event_html",
    "event_detail_html",
    "events_table_html",
    "gap_html",
    "observation_html",
    "batch_html",
    "mimebundle",
    # widgets (loaded on first use)
    "SessionMonitor",
    "EnqueuePanel",
    "QueuePanel",
    "ReconnectSimulator",
    "EventGrid",
    "GridStatistics",
    "RetentionStrip",
    "RateChart",
    "retention_figure",
    "BackgroundProducer",
    "start_producer",
    # another kernel
    "PeerKernel",
    "PeerKernelError",
    # synchronous code (scripts, widget callbacks) waiting for a coroutine
    "run_sync",
    # IPython
    "Rich",
    "load_ipython_extension",
    "unload_ipython_extension",
]
