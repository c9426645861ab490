"""How lines reach the user's terminal: printed at once, durations and values written short. No Keras here,
so the launcher and the report use it without loading a backend.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, TextIO


def printer(out: TextIO | None = None, prefix: str = "") -> Callable[[str], None]:
    """A function that prints one line to `out` (default: whatever sys.stdout is when it prints) at
    once: long runs are watched live, or through a pipe."""
    def say(line: str) -> None:
        print(f"{prefix}{line}", file=out or sys.stdout, flush=True)

    return say


def format_duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {seconds:02d}s"
    return f"{seconds}s"


def short(value: Any) -> str:
    """A value as the progress lines and tables show it: floats to 3 significant digits, booleans
    as the presets spell them."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def columns(rows: list, left: int = 1) -> list[str]:
    """Rows as aligned text columns: the first `left` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]
