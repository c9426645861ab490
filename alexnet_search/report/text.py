"""How the report writes values and Markdown tables."""

from __future__ import annotations

from typing import Any


def num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def range_text(entry: dict) -> str:
    """A [space.*] entry's range or values, as a reader would write them."""
    if entry["type"] == "choice":
        return ", ".join(map(num, entry["values"]))
    return f"{num(entry['min'])} to {num(entry['max'])}" + (f", step {num(entry['step'])}" if entry.get("step") else "")


def numeric_choices(entry: dict) -> list | None:
    """A choice's values in order when all are numbers, else None."""
    values = entry["values"]
    return sorted(values) if all(isinstance(v, (int, float)) for v in values) else None


def mean_std(metrics: dict, key: str) -> str:
    return f"{metrics[f'{key}_mean']:.4f} ± {metrics[f'{key}_std']:.4f}"


def table(header: list[str], rows: list[list[Any]]) -> list[str]:
    """A Markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "| --- " * len(header) + "|",
            *("| " + " | ".join(str(c) for c in row) + " |" for row in rows)]
