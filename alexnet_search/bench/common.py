"""What both benchmarks share: resident memory, and plain-text tables."""

from __future__ import annotations

import time
from pathlib import Path

from ..console import format_duration

# "Process start": a bench child imports this package first, before Keras and its backend.
IMPORTED = time.monotonic()


def rss_mb() -> float:
    """Resident memory now (VmRSS, Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def columns(rows: list[tuple], left: int = 1) -> list[str]:
    """Rows as aligned text columns: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
