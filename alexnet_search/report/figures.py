"""The report's plots, as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..space import SEED_SCRIPT
from ..trials import direction, FAILED
from .load import Trial
from .text import num, numeric_choices


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: a server has no display
    import matplotlib.pyplot as plt

    return plt


def _budgets(plt, trials: list[Trial]) -> tuple[dict[int, Any], list]:
    """A colour per epoch budget, and legend handles: Hyperband compares trials at unequal budgets."""
    from matplotlib.lines import Line2D

    budgets = sorted({t.epochs for t in trials})
    colours = {b: plt.get_cmap("viridis")(i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}
    return colours, [Line2D([], [], ls="", marker="o", color=c, label=f"{b} epochs") for b, c in colours.items()]


def _save(plt, fig, path: Path) -> None:
    """Beside `path`, then renamed onto it: a link planted under its name is replaced, never
    written through."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.unlink(missing_ok=True)
    fig.savefig(staging, dpi=90, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    os.replace(staging, path)


def plot_hyperparameters(plt, path: Path, space: dict, done: list[Trial], best: Trial, objective: str) -> None:
    import numpy as np
    from matplotlib.lines import Line2D

    names, cols = list(space), min(3, len(space))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    (colours, handles), jitter = _budgets(plt, done), np.random.default_rng(0)
    for ax, name in zip(axes.flat, names):
        entry, points = space[name], [t for t in done if name in t.values]
        if entry["type"] == "choice":
            # Evenly spaced categories: readable, and a 0 among log-spaced values (weight decay) fits.
            values = numeric_choices(entry) or entry["values"]
            where = {v: i for i, v in enumerate(values)}
            xs = [where.get(t.values[name], np.nan) + jitter.uniform(-0.12, 0.12) for t in points]
            default, best_x = where.get(SEED_SCRIPT[name]), where.get(best.values.get(name))
            ax.set_xticks(range(len(values)), [num(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
        else:
            xs, default, best_x = [t.values[name] for t in points], SEED_SCRIPT[name], best.values.get(name)
            lo, hi = entry["min"], entry["max"]
            if entry.get("sampling") == "log":
                ax.set_xscale("log")
                ax.set_xlim(lo / (hi / lo) ** 0.04, hi * (hi / lo) ** 0.04)
            elif hi > lo:  # the whole range, so a best point at its edge shows as one
                ax.set_xlim(lo - 0.04 * (hi - lo), hi + 0.04 * (hi - lo))
        ax.scatter(xs, [t.score for t in points], c=[colours[t.epochs] for t in points], s=22, alpha=0.8)
        if default is not None:
            ax.axvline(default, color="grey", ls="--", lw=1)
        if best_x is not None:
            ax.scatter([best_x], [best.score], marker="*", s=200, color="red", zorder=3)
        ax.set_title(name + (" (log)" if entry.get("sampling") == "log" else ""))
        ax.set_ylabel(objective)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    handles += [Line2D([], [], color="grey", ls="--", label="seed default"),
                Line2D([], [], ls="", marker="*", color="red", markersize=12, label=f"best (trial {best.id})")]
    fig.legend(handles=handles, loc="upper center", ncol=6, frameon=False)
    # Fixed margins, in inches: tight_layout measures every tick label and takes seconds here.
    height = 3.2 * rows
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.5 / height, top=1 - 0.65 / height, hspace=0.45, wspace=0.3)
    _save(plt, fig, path)


def plot_lines(plt, path: Path, lines: list[tuple[str, dict[int, float], Any]], ylabel: str, title: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, curve, colour in lines:
        steps = sorted(curve)
        ax.plot([s + 1 for s in steps], [curve[s] for s in steps], marker="o", ms=3, label=label, color=colour)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))  # one entry per group when seeds share a label
    ax.legend(unique.values(), unique.keys(), fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)


def plot_order(plt, path: Path, trials: list[Trial], done: list[Trial], objective: str) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    colours, handles = _budgets(plt, done)
    ax.scatter([int(t.id) for t in done], [t.score for t in done], c=[colours[t.epochs] for t in done], s=24)
    pick = max if direction(objective) == "max" else min
    running = [pick(t.score for t in done[: i + 1]) for i in range(len(done))]
    handles += ax.step([int(t.id) for t in done], running, where="post", color="black", lw=1, label="best so far")
    failed = [int(t.id) for t in trials if t.status in FAILED]
    if failed:  # along the bottom: a failed trial has no score
        handles.append(ax.scatter(failed, [0.02] * len(failed), marker="x", color="red",
                                  transform=ax.get_xaxis_transform(), label="failed"))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set(xlabel="trial (order started)", ylabel=objective)
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    _save(plt, fig, path)

