"""`results/<study>/report.md`: what a study found, on one page that renders on GitHub.

    write_report(study) -> results/<study>/report.md, with its plots in results/<study>/report/*.png

Everything on the page is read from the study folder: study.json, config.json, versions.json,
search_summary.json, tuner/trial_*/trial.json, the TensorBoard event files, and best/ and
baseline/metrics.json when `retrain-best` and `baseline` have run. It trains nothing and needs no
data set, so it can run at any time, on an interrupted search too (the page then says so); running
it again after `retrain-best` or `baseline` adds their test accuracy. TensorFlow is imported only
to read event files, and Keras Tuner only for the Hyperband schedule (`plan.hyperband_schedule`).

Raises UserError when the study does not exist or has no completed trial yet.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import tboard
from .space import BOUNDS
from .errors import UserError
from .plan import Schedule, format_duration, hyperband_schedule
from .study import (
    ENDED, FAILED, Study, direction, failure_reason, rank_key, read_json, require_study, restore_dir,
    searched_values, write_text_atomic,
)

TOP_TRIALS = 10  # rows of the best-trials table
TOP_CURVES = 5  # learning curves drawn; more make the plot unreadable
# A continuous range's outer 5% (of its log range, for log sampling) counts as its edge: a sampled
# float almost never equals min or max, yet 0.09 of [1e-4, 0.1] says the same as 0.1.
EDGE_FRACTION = 0.05
SPREAD_RULE = ("Rule: the spread is sqrt(std_tuned² + std_baseline²), the standard deviation of the "
               "difference between one run of each (std: the sample standard deviation over seeds); "
               "a difference larger than the spread is more than seed-to-seed variation.")


@dataclass(frozen=True)
class Trial:
    """One tuner/trial_*/trial.json, Hyperband's bookkeeping split from the hyperparameters."""

    id: str
    status: str
    score: float | None
    values: dict[str, Any]  # the searched hyperparameters only
    epochs: int  # the model's total epochs at the trial's end; a promoted trial's include its parent's
    initial_epoch: int
    bracket: int | None
    parent: str | None
    message: str


def _read(path: Path, required: bool = False) -> Any:
    if not path.is_file():
        if required:
            raise UserError(f"{path} is missing; rerun `make search` with this study's CONFIG and STUDY to rewrite it")
        return None
    return read_json(path)


def load_trials(tuner_dir: Path) -> list[Trial]:
    """Every trial of the study, in the order Keras Tuner created them."""
    trials = []
    for path in sorted(tuner_dir.glob("trial_*/trial.json")):
        state = _read(path)
        hp = state["hyperparameters"]["values"]
        trials.append(Trial(
            id=state["trial_id"], status=state["status"], score=state.get("score"),
            values=searched_values(hp),
            epochs=int(hp.get("tuner/epochs", 0)), initial_epoch=int(hp.get("tuner/initial_epoch", 0)),
            bracket=hp.get("tuner/bracket"), parent=hp.get("tuner/trial_id"),
            message=(state.get("message") or "").strip(),
        ))
    return sorted(trials, key=lambda t: t.id)


def ranked(trials: list[Trial], objective: str) -> list[Trial]:
    """Completed trials, best first, ties to the earlier trial (as search.ranked_trials)."""
    return sorted((t for t in trials if t.status == "COMPLETED" and t.score is not None),
                  key=lambda t: rank_key(t.score, t.id, direction(objective)))


def read_scalars(run: Path, tag: str) -> dict[int, float]:
    """{step: value} of one TensorBoard run folder; a later event file overrides an earlier one."""
    out: dict[int, float] = {}
    for event in tboard.events(run):
        for v in event.summary.value:
            if v.tag == tag:
                out[int(event.step)] = tboard.scalar_value(v)
    return out


def fit_seconds(run: Path) -> float | None:
    """Seconds a trial's `fit` ran, from its TensorBoard event times: the train writer opens as
    fit starts, and the last validation summary closes its last epoch. None without both."""
    train = [e.wall_time for e in tboard.events(run / "train")]
    val = [e.wall_time for e in tboard.events(run / "validation")]
    return max(val) - min(train) if train and val else None


def _curve(trial: Trial, by_id: dict[str, Trial], tensorboard: Path, tag: str) -> dict[int, float]:
    own = read_scalars(tensorboard / trial.id / "execution0" / "validation", tag)
    parent = by_id.get(trial.parent)
    if parent is None:
        return own
    # A promoted trial's run starts at tuner/initial_epoch: the epochs before are its parent's.
    inherited = {s: v for s, v in _curve(parent, by_id, tensorboard, tag).items() if s < trial.initial_epoch}
    return {**inherited, **own}


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _range(entry: dict) -> str:
    if entry["type"] == "choice":
        return ", ".join(map(_num, entry["values"]))
    return f"{_num(entry['min'])} to {_num(entry['max'])}" + (f", step {_num(entry['step'])}" if entry.get("step") else "")


def _numeric_choices(entry: dict) -> list | None:
    values = entry["values"]
    return sorted(values) if all(isinstance(v, (int, float)) for v in values) else None


def edge(name: str, entry: dict, value: Any) -> str | None:
    """'lowest' or 'highest' when `value` is at that end of its range and the preset could widen it."""
    if entry["type"] == "choice":
        values = _numeric_choices(entry)
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


def _warnings(config, trials, best, schedule: Schedule, summary, tuned, baseline, commands) -> list[str]:
    out, s = [], config["search"]
    for name, entry in config["space"].items():
        if name in best.values and (side := edge(name, entry, best.values[name])):
            out.append(f"**Best value at the edge of its range:** `{name}` = {_num(best.values[name])} is the {side} "
                       f"value of {_range(entry)}; the optimum may lie beyond: widen `[space.{name}]` in the "
                       f"preset and search again in a new STUDY.")
    if best.epochs < s["max_epochs"]:
        out.append(f"**Best trial had a short budget:** trial {best.id} trained {best.epochs} of max_epochs "
                   f"{s['max_epochs']}; a short run's score is noisy and may not hold over the full budget.")
    finished = [t for t in trials if t.status in ENDED]
    failed = [t for t in finished if t.status != "COMPLETED"]
    if len(failed) * 2 > len(finished):
        out.append(f"**Most trials failed:** {len(failed)} of {len(finished)} finished trials failed (see Failed "
                   f"trials); fix the cause before trusting the ranking.")
    planned = schedule.iterations * sum(r.trials for r in schedule.rounds if r.bracket == 0)
    full = sum(t.bracket == 0 and t.status == "COMPLETED" for t in trials)
    if full < planned:
        out.append(f"**Too few trials in the last bracket:** bracket 0, whose trials all train {s['max_epochs']} "
                   f"epochs from scratch, completed {full} of the {planned} trials Hyperband planned: few "
                   f"configurations were compared at the full budget.")
    if not (summary or {}).get("finished"):
        out.append(f"**Search not finished:** search_summary.json does not mark the search finished; "
                   f"`{commands['search']}` resumes it.")
    if tuned and tuned.get("trial_id") != best.id:
        out.append(f"**Retrained trial is not the best:** best/ holds trial {tuned.get('trial_id')}, but the best "
                   f"completed trial is now {best.id}; rerun `{commands['retrain']}`.")
    if tuned and baseline and tuned["epochs"] != baseline["epochs"]:
        out.append(f"**Different budgets:** retrain-best trained {tuned['epochs']} epochs, the baseline "
                   f"{baseline['epochs']}: their test accuracies are not comparable.")
    return out


def _mean_std(m: dict, key: str) -> str:
    return f"{m[f'{key}_mean']:.4f} ± {m[f'{key}_std']:.4f}"


def _comparison(tuned, baseline, commands) -> list[str]:
    lines = ["## Tuned vs the seed's defaults", ""]
    runs = [(label, m) for label, m in ((f"tuned (retrain-best of trial {(tuned or {}).get('trial_id')})", tuned),
                                        ("seed defaults (baseline)", baseline)) if m]
    if runs:
        lines += ["| run | seeds | epochs | test accuracy | val accuracy | train accuracy |", "| --- " * 6 + "|"]
        lines += [f"| {label} | {', '.join(map(str, m['seeds']))} | {m['epochs']} | {_mean_std(m, 'test_accuracy')} | "
                  f"{_mean_std(m, 'val_accuracy')} | {_mean_std(m, 'train_accuracy')} |" for label, m in runs]
        lines += ["", "Accuracies are mean ± std over each run's seeds; the test set is evaluated once per seed.", ""]
    if not tuned:
        lines.append(f"retrain-best has not run: `{commands['retrain']}` trains the best trial's hyperparameters "
                     f"for the preset's retrain epochs and tests them.")
    if not baseline:
        lines.append(f"The baseline has not run: `{commands['baseline']}` trains the seed's default "
                     f"hyperparameters through the same pipeline and budget.")
    if tuned and baseline:
        diff = tuned["test_accuracy_mean"] - baseline["test_accuracy_mean"]
        lines += [f"Test accuracy difference (tuned − defaults): **{diff:+.4f}**.", "", SPREAD_RULE, ""]
        if len(tuned["seeds"]) < 2 or len(baseline["seeds"]) < 2:
            lines.append("The spread is unknown with one seed: rerun the side with one seed with SEEDS of 2 or "
                         "more to tell a real difference from seed-to-seed variation.")
        else:
            spread = math.hypot(tuned["test_accuracy_std"], baseline["test_accuracy_std"])
            winner = "the tuned hyperparameters beat the seed's defaults" if diff > 0 else \
                "the seed's defaults beat the tuned hyperparameters"
            lines.append(f"The difference ({abs(diff):.4f}) exceeds the spread ({spread:.4f}): {winner} by more "
                         f"than seed-to-seed variation." if abs(diff) > spread else
                         f"The difference ({abs(diff):.4f}) does not exceed the spread ({spread:.4f}): it is "
                         f"within seed-to-seed variation; more seeds would narrow the spread.")
    return lines + [""]


def _pyplot():
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
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _plot_hyperparameters(plt, path: Path, space: dict, done: list[Trial], best: Trial, objective: str) -> None:
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
            values = _numeric_choices(entry) or entry["values"]
            where = {v: i for i, v in enumerate(values)}
            xs = [where.get(t.values[name], np.nan) + jitter.uniform(-0.12, 0.12) for t in points]
            default, best_x = where.get(entry["default"]), where.get(best.values.get(name))
            ax.set_xticks(range(len(values)), [_num(v) for v in values])
            ax.set_xlim(-0.5, len(values) - 0.5)
        else:
            xs, default, best_x = [t.values[name] for t in points], entry["default"], best.values.get(name)
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


def _plot_lines(plt, path: Path, lines: list[tuple[str, dict[int, float], Any]], ylabel: str, title: str) -> None:
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


def _plot_order(plt, path: Path, trials: list[Trial], done: list[Trial], objective: str) -> None:
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


def _plots(study: Study, trials: list[Trial], order: list[Trial], space: dict, objective: str) -> list[str]:
    folder, tb = study.root / "report", study.tensorboard_dir
    folder.mkdir(exist_ok=True)
    plt, done = _pyplot(), [t for t in trials if t.status == "COMPLETED"]
    _plot_hyperparameters(plt, folder / "hyperparameters.png", space, done, order[0], objective)
    _plot_order(plt, folder / "trial_order.png", trials, done, objective)
    lines = ["## Plots", "", f"{objective} against each hyperparameter (star: best trial; dashed: seed default; "
             "colour: epochs trained):", "", "![hyperparameters](report/hyperparameters.png)", "",
             f"{objective} in the order trials started:", "", "![trial order](report/trial_order.png)", ""]
    tag = "epoch_accuracy" if objective.endswith("accuracy") else "epoch_loss"
    by_id = {t.id: t for t in trials}
    curves = [(f"trial {t.id} ({t.score:.3f})", _curve(t, by_id, tb, tag), None) for t in order[:TOP_CURVES]]
    if any(c for _, c, _ in curves):
        _plot_lines(plt, folder / "learning_curves.png", [c for c in curves if c[1]], objective, f"top {len(curves)} trials")
        lines += ["Learning curves of the top trials (a promoted trial starts with its parent's epochs):", "",
                  "![learning curves](report/learning_curves.png)", ""]
    else:
        lines += [f"No learning curves: no {tag} event files under {tb.name}/.", ""]
    retrains = [(label, read_scalars(run / "validation", tag), colour)
                for label, sub, colour in (("tuned", "retrain-best", "tab:red"), ("seed defaults", "baseline", "tab:blue"))
                for run in sorted((tb / sub).glob("seed*"))]
    if any(c for _, c, _ in retrains):
        _plot_lines(plt, folder / "retrain_curves.png", [r for r in retrains if r[1]], objective, "retrain runs")
        lines += ["retrain-best and baseline runs, one line per seed:", "", "![retrain curves](report/retrain_curves.png)", ""]
    return lines


def _outside_fit(tensorboard: Path, trials: list[Trial], summary: dict | None) -> str:
    if not (summary or {}).get("finished") or not trials:
        return "not measured (search not finished)"
    # A trial without events (failed before fit) spent all its time outside fit.
    inside = sum(fit_seconds(tensorboard / t.id / "execution0") or 0.0 for t in trials)
    wall = summary["wall_time_s"]
    return (f"{format_duration(inside)} of {format_duration(wall)} in `fit`: {max(0.0, 1 - inside / wall):.1%} "
            f"outside it (start-up, data, build, compile, the oracle; checkpoint writes count as inside)")


def _study_section(config, preset, trials, schedule, summary, versions, commands, tensorboard: Path) -> list[str]:
    s, d, st = config["search"], config["data"], config["study"]
    done = [t for t in trials if t.status == "COMPLETED"]
    failed = [t for t in trials if t.status in FAILED]
    spent = summary["epochs_spent"] if summary else sum(t.epochs - t.initial_epoch for t in done + failed)
    wall = format_duration(summary["wall_time_s"]) if summary else "not recorded"
    lines = ["## Study", "", f"- preset: `{preset}`" + (f": {st['description']}" if st.get("description") else ""),
             f"- seed: {st['seed']}",
             f"- data: {d['train_size']} training + {d['val_size']} validation images at {d['image_size']}x"
             f"{d['image_size']}, batch {d['batch_size']}; source: {config.get('data_source', 'not recorded')}"
             + (f"; {config['split']}" if config.get("split") else ""),
             f"- model: width multiplier {config['model']['width_multiplier']}; retrain {config['retrain']['epochs']} epochs",
             f"- Hyperband: objective {s['objective']}, max_epochs {s['max_epochs']}, factor {s['factor']}, "
             f"hyperband_iterations {s['hyperband_iterations']}, max_consecutive_failed_trials "
             f"{s['max_consecutive_failed_trials']}, max_retries_per_trial {s.get('max_retries_per_trial', 0)}; "
             f"planned {schedule.trials} trials, {schedule.epochs} epochs",
             f"- trials: {len(trials)} run, {len(done)} completed, {len(failed)} failed",
             f"- epochs spent: {spent}",
             f"- wall time: {wall}" + ("" if (summary or {}).get("finished") else " (search not finished)"),
             f"- time: {_outside_fit(tensorboard, trials, summary)}",
             "", "### Search space", "", "| name | type | range / values | sampling | seed default |", "| --- " * 5 + "|"]
    lines += [f"| {name} | {e['type']} | {_range(e)} | {'-' if e['type'] == 'choice' else e.get('sampling', 'linear')} "
              f"| {_num(e['default'])} |" for name, e in config["space"].items()]
    lines += ["", "### Versions", "", "| library | version |", "| --- | --- |"]
    lines += [f"| {k} | {v if v is not None else 'not recorded'} |" for k, v in versions.items()
              if k not in ("command", "written")] or ["| versions.json | not found |"]
    lines += ["", "### Reproduce", "", f"Recorded command: `{versions.get('command', 'not recorded')}` "
              f"({versions.get('written', 'date not recorded')}). With make:", "", "```sh", *commands.values(), "```", ""]
    return lines


def write_report(study: Study) -> Path:
    """Write results/<study>/report.md and its plots under results/<study>/report/; return report.md's path."""
    require_study(study)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow: no C++ chatter
    trials = load_trials(study.tuner_dir)
    if not any(t.status == "COMPLETED" for t in trials):
        raise UserError(f"study {study.name} has no completed trial yet; run `make search` for it first "
                        f"(the same command resumes) until one finishes")
    config = _read(study.root / "config.json", required=True)
    preset = _read(study.identity_file).get("preset") or config.get("preset")
    versions, summary = _read(study.root / "versions.json") or {}, _read(study.root / "search_summary.json")
    restore_dir(study.best_dir)
    restore_dir(study.root / "baseline")
    tuned, baseline = _read(study.best_dir / "metrics.json"), _read(study.root / "baseline" / "metrics.json")
    s, objective = config["search"], config["search"]["objective"]
    schedule = hyperband_schedule(s["max_epochs"], s["factor"], s["hyperband_iterations"])
    order = ranked(trials, objective)
    best = order[0]

    source = config.get("data_source", "")
    args = f"CONFIG={preset} STUDY={study.name}"
    data = f" DATA_DIR={source}" if source and not source.startswith("keras.") else ""
    # A side not run yet is suggested with the other side's seed count, so the two compare.
    seeds = {name: f" SEEDS={len(m['seeds'])}" if m else "" for name, m in
             (("retrain", tuned or baseline), ("baseline", baseline or tuned))}
    commands = {"search": f"make search {args}{data}", "retrain": f"make retrain-best {args}{data}{seeds['retrain']}",
                "baseline": f"make baseline {args}{data}{seeds['baseline']}", "report": f"make report {args}"}

    warnings = _warnings(config, trials, best, schedule, summary, tuned, baseline, commands)
    names = list(config["space"])
    lines = [f"# Study `{study.name}`", "", f"Hyperband search with `{preset}`: best {objective} **{best.score:.4f}** "
             f"(trial {best.id}, {best.epochs} epochs); {len(order)} of {len(trials)} trials completed.", "",
             "## Warnings", "", *([f"- {w}" for w in warnings] or ["No warnings."]), "",
             *_comparison(tuned, baseline, commands),
             "## Best trials", "", f"The top {min(TOP_TRIALS, len(order))} of {len(order)} completed trials by "
             f"{objective}; epochs: the model's total (a promoted trial's include its parent's).", "",
             f"| rank | trial | {objective} | epochs | " + " | ".join(names) + " |", "| --- " * (4 + len(names)) + "|"]
    lines += [f"| {i} | {t.id} | {t.score:.4f} | {t.epochs} | " + " | ".join(_num(t.values.get(n, "")) for n in names)
              + " |" for i, t in enumerate(order[:TOP_TRIALS], 1)]
    failed = [t for t in trials if t.status in FAILED]
    if failed:
        lines += ["", "### Failed trials", ""]
        lines += [f"- trial {t.id}: {failure_reason(t.message)}" for t in failed]
    lines += ["", *_plots(study, trials, order, config["space"], objective),
              *_study_section(config, preset, trials, schedule, summary, versions, commands, study.tensorboard_dir)]
    report = study.root / "report.md"
    write_text_atomic(report, "\n".join(lines))  # a reader never sees half a report
    return report
