"""What the report concludes from a study: values at the edge of their range, the warnings, the
time spent outside `fit`, and whether one run's test accuracy beats another's by more than the spread."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..console import format_duration
from ..schedule import BRACKETED, Schedule
from ..space import BOUNDS
from ..trials import ENDED
from .load import Trial, fit_seconds
from .text import num, numeric_choices, range_text

# A continuous range's outer 5% (of its log range, for log sampling) counts as its edge: a sampled
# float almost never equals min or max, yet 0.09 of [1e-4, 0.1] says the same as 0.1.
EDGE_FRACTION = 0.05
SPREAD_RULE = ("Rule: the spread is sqrt(std_a² + std_b²), the standard deviation of the "
               "difference between one run of each (std: the sample standard deviation over seeds); "
               "a difference larger than the spread is more than seed-to-seed variation.")


def edge(name: str, entry: dict, value: Any) -> str | None:
    """'lowest' or 'highest' when `value` is at that end of its range and the preset could widen it."""
    if entry["type"] == "choice":
        values = numeric_choices(entry)
        if not values or len(values) < 3:
            return None  # of two values either one is "at the edge": that says nothing
        lo, hi, at_lo, at_hi = values[0], values[-1], value == values[0], value == values[-1]
    else:
        lo, hi = entry["min"], entry["max"]
        step = entry.get("step") or (1 if entry["type"] == "int" else None)
        if hi <= lo:
            return None
        if step:  # the first and last values the range can take
            at_lo, at_hi = value - step < lo - 1e-9, value + step > hi + 1e-9
        else:
            scale = math.log if entry.get("sampling") == "log" else float
            frac = (scale(value) - scale(lo)) / (scale(hi) - scale(lo))
            at_lo, at_hi = frac <= EDGE_FRACTION, frac >= 1 - EDGE_FRACTION
    low, high = BOUNDS[name].low, BOUNDS[name].high
    # A range that already starts at its hard bound (weight decay 0, no translation) cannot widen.
    if at_lo and (low is None or lo > low):
        return "lowest"
    if at_hi and (high is None or hi < high):
        return "highest"
    return None


def warnings(config, trials, best, schedule: Schedule, summary, tuned, baselines: dict[str, dict],
             commands, adopted: dict | None = None) -> list[str]:
    out, s = [], config["search"]
    for name, entry in config["space"].items():
        if name in best.values and (side := edge(name, entry, best.values[name])):
            out.append(f"**Best value at the edge of its range:** `{name}` = {num(best.values[name])} is the {side} "
                       f"value of {range_text(entry)}; the optimum may lie beyond: widen `[space.{name}]` in the "
                       f"preset and search again in a new STUDY.")
    if best.epochs < s["max_epochs"] and not (adopted or {}).get("confirmed"):
        out.append(f"**Best trial had a short budget:** trial {best.id} trained {best.epochs} of max_epochs "
                   f"{s['max_epochs']}; a short run's score is noisy and may not hold over the full budget.")
    finished = [t for t in trials if t.status in ENDED]
    failed = [t for t in finished if t.status != "COMPLETED"]
    if len(failed) * 2 > len(finished):
        out.append(f"**Most trials failed:** {len(failed)} of {len(finished)} finished trials failed (see Failed "
                   f"trials); fix the cause before trusting the ranking.")
    planned = schedule.iterations * sum(r.trials for r in schedule.rounds if r.bracket == 0)
    full = sum(t.bracket == 0 and t.status == "COMPLETED" for t in trials)
    if s["tuner"] in BRACKETED and full < planned:
        out.append(f"**Too few trials in the last bracket:** bracket 0, whose trials all train {s['max_epochs']} "
                   f"epochs from scratch, completed {full} of the {planned} trials Hyperband planned: few "
                   f"configurations were compared at the full budget.")
    if not (summary or {}).get("finished"):
        out.append(f"**Search not finished:** search_summary.json does not mark the search finished; "
                   f"`{commands['search']}` resumes it.")
    retrained = (tuned.get("trial_study"), tuned.get("trial_id")) if tuned else None
    if tuned and adopted and not tuned.get("pool") and retrained != (adopted.get("study"), adopted.get("trial_id")):
        out.append(f"**Retrained configuration is not the adopted one:** best/ holds "
                   f"{tuned.get('hyperparameters_from', 'another configuration')}, but the study adopted trial "
                   f"{adopted.get('trial_id')}; rerun `{commands['retrain']}`.")
    budgets = {name: m["epochs"] for name, m in baselines.items() if tuned and m["epochs"] != tuned["epochs"]}
    if budgets:
        out.append(f"**Different budgets:** retrain-best trained {tuned['epochs']} epochs, baseline "
                   + ", ".join(f"{name} {epochs}" for name, epochs in budgets.items())
                   + ": their test accuracies are not comparable.")
    # Results written before `train_on` existed trained on the training split alone.
    data = {name: m.get("train_on", "train") for name, m in baselines.items()
            if tuned and m.get("train_on", "train") != tuned.get("train_on", "train")}
    if data:
        out.append(f"**Different training data:** retrain-best trained on {tuned.get('train_on', 'train')}, baseline "
                   + ", ".join(f"{name} on {on}" for name, on in data.items())
                   + " ([retrain] train_on; a plateau schedule always trains on the training split): the "
                     "differences below are of the data as well as the hyperparameters.")
    return out


def outside_fit(tensorboard: Path, trials: list[Trial], summary: dict | None) -> str:
    if not (summary or {}).get("finished") or not trials:
        return "not measured (search not finished)"
    # A trial without events (failed before fit) spent all its time outside fit.
    inside = sum(fit_seconds(tensorboard / t.id / "execution0") or 0.0 for t in trials)
    wall = summary["wall_time_s"]
    return (f"{format_duration(inside)} of {format_duration(wall)} in `fit`: {max(0.0, 1 - inside / wall):.1%} "
            f"outside it (start-up, data, build, compile, the oracle; checkpoint writes count as inside)")


def difference(a: dict, b: dict) -> tuple[float, float | None]:
    """(mean test accuracy of a - of b, the spread of that difference; None with a single seed on a side)."""
    diff = a["test_accuracy_mean"] - b["test_accuracy_mean"]
    if len(a["seeds"]) < 2 or len(b["seeds"]) < 2:
        return diff, None
    return diff, math.hypot(a["test_accuracy_std"], b["test_accuracy_std"])
