"""Replay forensics: record observation logs, load them into DataFrames, analyse them.

* Logs (``_records`` has the line format): ``load_log(path_or_file)`` -> ``LoadedLog`` with
  ``.frame``, ``.gaps``, ``.markers``, ``.errors``; ``encode_line`` writes one line.

``import lash_nb.forensics`` needs pandas only; pyarrow, tqdm and matplotlib (extra
``[forensics]``) are imported when a function needs them.
"""

from __future__ import annotations

from ._analysis import Comparison, GapReport, compare, gap_report, reconstruct_turns
from ._fast import LogEvents
from ._load import (
    ERROR_COLUMNS,
    FRAME_COLUMNS,
    GAP_COLUMNS,
    MARKER_COLUMNS,
    PROGRESS_THRESHOLD_BYTES,
    LoadedLog,
    LogLoadError,
    RawLines,
    load_log,
)
from ._records import (
    RECEIVED_AT,
    GapRecord,
    LagRecord,
    LineKind,
    LogLineError,
    decode_line,
    encode_line,
)
from ._recorder import (
    LogLockedError,
    LogSessionError,
    LogTail,
    Recorder,
    RecorderError,
    RecorderStatistics,
    RecorderWriteError,
    read_log_tail,
)
from ._timeline import timeline
from ._write import LogWriteError, WrittenLog, write_log

__all__ = [
    # logs
    "load_log",
    "LoadedLog",
    "LogLoadError",
    "FRAME_COLUMNS",
    "GAP_COLUMNS",
    "MARKER_COLUMNS",
    "ERROR_COLUMNS",
    "PROGRESS_THRESHOLD_BYTES",
    "RawLines",
    "LogEvents",
    "write_log",
    "WrittenLog",
    "LogWriteError",
    # the line format
    "RECEIVED_AT",
    "LineKind",
    "GapRecord",
    "LagRecord",
    "LogLineError",
    "decode_line",
    "encode_line",
    # analyses
    "gap_report",
    "GapReport",
    "reconstruct_turns",
    "compare",
    "Comparison",
    "timeline",
    # recording
    "Recorder",
    "RecorderStatistics",
    "RecorderError",
    "LogLockedError",
    "LogSessionError",
    "RecorderWriteError",
    "LogTail",
    "read_log_tail",
]
