"""What both benchmarks share: resident memory, and plain-text tables."""

from __future__ import annotations

import time
from pathlib import Path

from ..console import columns, format_duration  # noqa: F401  (columns: the benchmarks' tables)

# "Process start": a bench child imports this package first, before Keras and its backend.
IMPORTED = time.monotonic()


def rss_mb() -> float:
    """Resident memory now (VmRSS, Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)
