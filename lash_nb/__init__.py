"""lash_nb: the Jupyter toolkit over lash_core.

History as DataFrames (``to_frame``, ``EventHistory``), escaped HTML renderings (``render``), live
widgets (``SessionMonitor`` and its controls), and IPython integration (``%load_ext lash_nb``,
``Rich``). ``lash_nb`` imports ``lash_core``, never the
reverse; the frame and rendering modules import no widget or IPython code.
"""

from . import _render as render
from ._frames import (
    COLUMNS,
    DTYPES,
    EventHistory,
    EventHistoryStatistics,
    FallbackRow,
    event_row,
    is_fallback_row,
    to_frame,
)
from ._controls import EnqueuePanel, QueuePanel, ReconnectSimulator
from ._ipython import Rich, load_ipython_extension, unload_ipython_extension
from ._monitor import SessionMonitor
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
    # widgets
    "SessionMonitor",
    "EnqueuePanel",
    "QueuePanel",
    "ReconnectSimulator",
    "BackgroundProducer",
    "start_producer",
    # IPython
    "Rich",
    "load_ipython_extension",
    "unload_ipython_extension",
]
