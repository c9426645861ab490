"""`results/<study>/report.md`: what a study found, on one page that renders on GitHub.

    write_report(study) -> results/<study>/report.md, with its plots in results/<study>/report/*.png

Everything on the page is read from the study folder: study.json, config.json, versions.json,
search_summary.json, tuner/trial_*/trial.json, the TensorBoard event files, and best/ and
baselines/NAME/metrics.json when `retrain-best` and `baseline` have run. It trains nothing and needs no
data set, so it can run at any time, on an interrupted search too (the page then says so); running
it again after `retrain-best` or `baseline` adds their test accuracy. Neither Keras nor Keras Tuner is
imported.

Raises UserError when the study does not exist or has no completed trial yet.

`load` reads the folder, `analysis` draws the conclusions (warnings, differences beyond the
spread), `figures` plots, and this module writes the page.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import figures
from ..console import format_duration
from ..errors import UserError
from ..files import restore_dir, write_text_atomic
from ..schedule import TUNER_NAMES, describe_search, search_schedule
from ..study import Study, require_study, training_differences
from ..trials import FAILED, contender_name, direction, failure_reason, first_raced, mean_spread, rank_finalists, run_seeds
from .analysis import SPREAD_RULE, difference, edge, outside_fit, warnings  # noqa: F401  (edge: public)
from .importance import FORESTS, MIN_TRIALS, importance
from .load import Trial, curve, fit_seconds, load_baselines, load_trials, ranked, read, read_scalars  # noqa: F401
from .text import mean_std, num, range_text, table

TOP_TRIALS = 10  # rows of the best-trials table
TOP_CURVES = 5  # learning curves drawn; more make the plot unreadable


def _comparison(tuned: dict | None, baselines: dict[str, dict], planned: list[str], commands) -> list[str]:
    lines = ["## Tuned vs the baselines", ""]
    runs = ([(f"tuned ({contender_name(tuned)})" if tuned.get("trial_id") else "tuned", tuned)] if tuned else []) + \
        [(f"baseline {name}", m) for name, m in baselines.items()]
    if runs:
        lines += table(["run", "seeds", "epochs", "test accuracy", "test, mirror TTA", "val accuracy",
                        "train accuracy"],
                       [[label, ", ".join(map(str, m["seeds"])), m["epochs"], mean_std(m, "test_accuracy"),
                         mean_std(m, "test_accuracy_tta") if "test_accuracy_tta_mean" in m else "not measured",
                         mean_std(m, "val_accuracy") if "val_accuracy_mean" in m else "none: trained on train+val",
                         mean_std(m, "train_accuracy")] for label, m in runs])
        lines += ["", "Accuracies are mean ± std over each run's seeds; the test set is evaluated once per seed. "
                      "Mirror TTA: each test image's class probabilities averaged with its mirror image's "
                      "(`[retrain] tta` puts it in the exports). A baseline's hyperparameters are its "
                      "`[baselines.NAME]` table in the preset. The differences below are without TTA.", ""]
        if tuned and "exported_tta" in tuned:
            lines += [("The exported model (`best/`) averages each image with its mirror: its accuracy is the TTA "
                       "column's." if tuned["exported_tta"] else "The exported model (`best/`) is the plain one "
                       "(`[retrain] tta = false`): its accuracy is the test column's."), ""]
    if not tuned:
        lines.append(f"retrain-best has not run: `{commands['retrain']}` trains the best trial's hyperparameters "
                     f"for the preset's retrain epochs and tests them.")
    missing = [name for name in planned if name not in baselines]
    if missing and missing == planned:
        lines.append(f"No baseline has run: `{commands['baseline']}` trains the preset's baselines "
                     f"({', '.join(planned)}) through the same pipeline and budget.")
    elif missing:
        lines.append(f"Baseline {', '.join(missing)} has not run: `{commands['baseline']} BASELINE={missing[0]}` "
                     f"trains it through the same pipeline and budget.")
    pairs = [(runs[i], runs[j]) for i in range(len(runs)) for j in range(i + 1, len(runs))]
    if pairs:
        lines += ["", SPREAD_RULE, ""]
    for (a, ma), (b, mb) in pairs:
        diff, spread = difference(ma, mb)
        head = f"- {a} − {b}: **{diff:+.4f}**"
        if spread is None:
            lines.append(f"{head}; the spread is unknown with one seed: rerun the side with one seed with SEEDS of "
                         f"2 or more to tell a real difference from seed-to-seed variation.")
        elif abs(diff) > spread:
            winner, loser = (a, b) if diff > 0 else (b, a)
            lines.append(f"{head}; the difference ({abs(diff):.4f}) exceeds the spread ({spread:.4f}): {winner} "
                         f"beats {loser} by more than seed-to-seed variation.")
        else:
            lines.append(f"{head}; the difference ({abs(diff):.4f}) does not exceed the spread ({spread:.4f}): it "
                         f"is within seed-to-seed variation; more seeds would narrow the spread.")
    return lines + [""]


def _finalists(study: Study, others: list[Study], adopted: dict | None, tuned: dict | None, commands) -> list[str]:
    """The finalists' confirmation: each finalist's validation score per seed, mean ± std, where it
    came from, which the study adopted, and, with other studies of the space, which wins the pool."""
    lines = ["## Finalists", ""]
    summaries = {s.name: read(s.finalists_file) for s in [study, *others]}
    mine = summaries[study.name]
    if not mine:
        if adopted and adopted.get("adopted_by", "").startswith("the search"):
            return lines + [f"Not confirmed (`[confirm] finalists = 0`): the study adopted its best search trial, "
                            f"{adopted.get('trial_id')}.", ""]
        return lines + [f"The finalists have not been confirmed yet: `{commands['search']}` resumes the study, "
                        f"and confirms them once its search ends.", ""]
    pool = [{**f, "study": name} for name, summary in summaries.items() if summary for f in summary["finalists"]]
    ranked = rank_finalists(pool, direction(mine["objective"]))
    winner = first_raced(ranked, mine.get("leader_seeds", 0))
    seeds = run_seeds(pool)
    raced = [s for s in seeds if s not in mine["seeds"]]
    lines += [f"After the search, its best configurations were trained again from scratch with seeds "
              f"{', '.join(map(str, mine['seeds']))} for {mine['epochs']} epochs each and scored on validation "
              f"({mine['objective']} at the best epoch; never on test)"
              + (", beside the preset's baselines named in `[confirm] baselines`, trained the same way"
                 if any(f.get("baseline") for f in mine["finalists"]) else "")
              + (f"; then the best mean again with seed {', '.join(map(str, raced))}, the lead passing on when "
                 f"it fell behind (`[confirm] leader_seeds`)" if raced else "")
              + ". The best complete mean is adopted."
              + ("" if mine.get("finished") else " **Not finished:** some runs are still to do."), ""]
    rows = []
    for f in ranked:
        by_seed = {r["seed"]: r for r in f["runs"]}
        marks = []
        if adopted and (f["study"], f["trial_id"]) == (adopted.get("study"), adopted.get("trial_id")):
            marks.append("adopted")
        if others and f is winner:
            marks.append("wins the pool")
        if tuned and (f["study"], f["trial_id"]) == (tuned.get("trial_study"), tuned.get("trial_id")):
            marks.append("retrained")
        origin = f"baseline `{f['baseline']}`" if f.get("baseline") else \
            f"{f['search_score']:.4f} ({f['search_epochs']} epochs)"
        rows.append([f"`{f['study']}` {f['trial_id']}", origin,
                     *(f"{by_seed[s]['score']:.4f}" if s in by_seed and by_seed[s]["score"] is not None
                       else (by_seed[s]["status"].lower() if s in by_seed else "-") for s in seeds),
                     mean_spread(f["mean"], f["std"]) if f["complete"] else "incomplete", ", ".join(marks)])
    lines += table(["finalist", "search score", *(f"seed {s}" for s in seeds), "mean ± std", ""], rows)
    reused = [f"{contender_name(f)} seed {r['seed']} of `{f['study']}` from `{r['reused_from']}`"  # pooled: several
              for f in ranked for r in f["runs"] if r.get("reused_from")]
    if reused:
        lines += ["", "Reused from a study beside this one that trained the same thing (values, seed, epochs, data, "
                      "network, backend), not trained again: " + ", ".join(reused) + "."]
    if others:
        lines += ["", f"With {', '.join(f'`{o.name}`' for o in others)} pooled, every finalist was confirmed with "
                      f"the same seeds and epochs, so their means compare directly; `make retrain-best "
                      f"STUDY={study.name} POOL=\"{' '.join(o.name for o in others)}\"` retrains the pool's winner."]
    return lines + [""]


def _importance(space: dict, trials: list[Trial], studies: list[str], objective: str) -> list[str]:
    lines = ["## Which hyperparameters matter", ""]
    try:
        found = importance(space, trials, objective)
    except ImportError as exc:  # an install made without the package's dependencies
        return lines + [f"Not computed: {exc.name or 'optuna'} is not installed (pip install optuna scikit-learn; "
                        f"make env installs both).", ""]
    if found is None:
        return lines + [f"Too few completed trials ({sum(t.status == 'COMPLETED' for t in trials)}) to rank the "
                        f"hyperparameters (at least {MIN_TRIALS}).", ""]
    lines += [f"Optuna's fANOVA evaluator over the {found.trials} completed trials of "
              f"{', '.join(f'`{s}`' for s in studies)}: each hyperparameter's share of the variance in {objective} "
              f"that a random forest of the trials explains, the mean of {FORESTS} forests (their range beside "
              f"it). Hyperband trains trials for different budgets, so the budget is an input of its own. A "
              f"share near 0 marks a dimension the same budget could stop searching (fix it, or narrow it) to "
              f"explore what counts; a short trial cannot show what matters only late (a regulariser), and "
              f"with few trials the ranking is rough: `AGAINST=` pools other studies of the space.", ""]
    lines += table(["hyperparameter", "importance", "range over the forests"],
                   [[name, f"{mean:.3f}", f"{lo:.3f} to {hi:.3f}"] for name, mean, lo, hi in found.shares])
    return lines + [""]


def _best_trials(trials: list[Trial], order: list[Trial], names: list[str], objective: str) -> list[str]:
    lines = ["## Best trials", "", f"The top {min(TOP_TRIALS, len(order))} of {len(order)} completed trials by "
             f"{objective}; epochs: the model's total (a promoted trial's include its parent's).", ""]
    lines += table(["rank", "trial", objective, "epochs", *names],
                   [[i, t.id, f"{t.score:.4f}", t.epochs, *(num(t.values.get(n, "")) for n in names)]
                    for i, t in enumerate(order[:TOP_TRIALS], 1)])
    failed = [t for t in trials if t.status in FAILED]
    if failed:
        lines += ["", "### Failed trials", "", *(f"- trial {t.id}: {failure_reason(t.message)}" for t in failed)]
    return lines + [""]


def _plots(study: Study, trials: list[Trial], order: list[Trial], space: dict, objective: str) -> list[str]:
    folder, tb = study.root / "report", study.tensorboard_dir
    folder.mkdir(exist_ok=True)
    plt, done = figures.pyplot(), [t for t in trials if t.status == "COMPLETED"]
    figures.plot_hyperparameters(plt, folder / "hyperparameters.png", space, done, order[0], objective)
    figures.plot_order(plt, folder / "trial_order.png", trials, done, objective)
    lines = ["## Plots", "",
             f"{objective} against each hyperparameter (star: best trial; dashed: seed default; colour: epochs "
             f"trained):", "", "![hyperparameters](report/hyperparameters.png)", "",
             f"{objective} in the order trials started:", "", "![trial order](report/trial_order.png)", ""]
    tag = "epoch_accuracy" if objective.endswith("accuracy") else "epoch_loss"
    by_id = {t.id: t for t in trials}
    curves = [(f"trial {t.id} ({t.score:.3f})", curve(t, by_id, tb, tag), None) for t in order[:TOP_CURVES]]
    if any(c for _, c, _ in curves):
        figures.plot_lines(plt, folder / "learning_curves.png", [c for c in curves if c[1]], objective,
                           f"top {len(curves)} trials")
        lines += ["Learning curves of the top trials (a promoted trial starts with its parent's epochs):", "",
                  "![learning curves](report/learning_curves.png)", ""]
    else:
        lines += [f"No learning curves: no {tag} event files under {tb.name}/.", ""]
    runs = [("tuned", tb / "retrain-best")]
    runs += [(f"baseline {p.name}", p) for p in sorted((tb / "baselines").glob("*")) if p.is_dir()]
    colours = dict(zip(dict(runs), ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:brown")))

    def retrain_curve(label: str, run: Path) -> tuple[str, dict[int, float]]:
        # A run on train+val validated nothing: its training curve stands in, named so.
        curve = read_scalars(run / "validation", tag)
        return (label, curve) if curve else (f"{label} (training)", read_scalars(run / "train", tag))

    retrains = [(*retrain_curve(label, run), colours.get(label))
                for label, folder in runs for run in sorted(folder.glob("seed*"))]
    if any(c for _, c, _ in retrains):
        figures.plot_lines(plt, folder / "retrain_curves.png", [r for r in retrains if r[1]], objective,
                           "retrain runs")
        lines += ["retrain-best and baseline runs, one line per seed (a run on train+val, which validates "
                  "nothing, by its training curve):", "", "![retrain curves](report/retrain_curves.png)", ""]
    return lines


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
             f"- model: width multiplier {config['model']['width_multiplier']}, conv1 "
             f"{config['model']['conv1_kernel']}x{config['model']['conv1_kernel']}, batch-norm momentum "
             f"{config['model']['bn_momentum']}; retrain {config['retrain']['epochs']} epochs"
             + (f"; trained in {config['trained_with']['precision']}" if config.get("trained_with") else ""),
             f"- {describe_search(s)}, objective {s['objective']}, max_consecutive_failed_trials "
             f"{s['max_consecutive_failed_trials']}, "
             f"max_retries_per_trial {s.get('max_retries_per_trial', 0)}; planned {schedule.trials} trials, "
             f"{schedule.epochs} epochs",
             f"- trials: {len(trials)} run, {len(done)} completed, {len(failed)} failed",
             f"- epochs spent: {spent}",
             f"- wall time: {wall}" + ("" if (summary or {}).get("finished") else " (search not finished)"),
             f"- time: {outside_fit(tensorboard, trials, summary)}",
             "", "### Search space", ""]
    lines += table(["name", "type", "range / values", "sampling", "seed default"],
                   [[name, e["type"], range_text(e), "-" if e["type"] == "choice" else e.get("sampling", "linear"),
                     num(e["default"])] for name, e in config["space"].items()])
    lines += ["", "### Versions", ""]
    lines += table(["library", "version"], [[k, "not recorded" if v is None else v] for k, v in versions.items()
                                            if k not in ("command", "written")] or [["versions.json", "not found"]])
    lines += ["", "### Reproduce", "", f"Recorded command: `{versions.get('command', 'not recorded')}` "
              f"({versions.get('written', 'date not recorded')}). With make:", "", "```sh", *commands.values(), "```", ""]
    return lines


def _adopted_text(adopted: dict | None) -> str:
    if not adopted:
        return "nothing yet"
    confirmed = adopted.get("confirmed")
    return contender_name(adopted) + (f", {mean_spread(confirmed['mean'], confirmed['std'])}" if confirmed else "")


def _other_studies(study: Study, config: dict, tuned: dict | None, others: list[Study]) -> list[str]:
    """This study beside others of the same space: another study seed (does the answer hold?)
    and other tuners (which finds more?), each with its best trial and, when retrained, its test
    accuracy (the tuning playbook's check before adopting a result)."""
    objective = config["search"]["objective"]
    rows, values = [], {}
    for other in [study, *others]:
        require_study(other)
        c = config if other is study else read(other.root / "config.json", required=True)
        diff = training_differences(study.saved_identity()[1] or {}, other.saved_identity()[1] or {},
                             ("space", "data", "model"))
        if diff:
            raise UserError(f"--against {other.name}: its search space, data or network differ from "
                            f"{study.name}'s (in {', '.join(diff[:4])}); compare studies of the same preset")
        s = c["search"]
        trials = load_trials(other.tuner_dir, s["max_epochs"])
        order = ranked(trials, objective)
        summary = read(other.root / "search_summary.json") or {}
        retrained = tuned if other is study else read(other.best_dir / "metrics.json")
        top = order[0] if order else None
        rows.append([f"`{other.name}`", TUNER_NAMES[s["tuner"]], c["study"]["seed"],
                     f"{sum(t.status == 'COMPLETED' for t in trials)} / {summary.get('epochs_spent', '?')}",
                     format_duration(summary["wall_time_s"]) if summary.get("wall_time_s") else "-",
                     f"{top.score:.4f} (trial {top.id})" if top else "none completed",
                     _adopted_text(read(other.adopted_file)),
                     f"{mean_std(retrained, 'test_accuracy')} ({contender_name(retrained)})"
                     if retrained and retrained.get("trial_id") else "not retrained"])
        values[other.name] = top.values if top else {}
    lines = ["## Other studies of this space", "",
             "Each study's best trial; a second study seed shows how much the answer owes to chance, another "
             "tuner which finds the better configuration for the budget.", ""]
    lines += table(["study", "tuner", "study seed", "trials / epochs", "wall time", f"best {objective}",
                    "adopted (confirmed on validation)", "retrained test accuracy"], rows)
    names = list(config["space"])
    agree = [n for n in names if len({str(v.get(n)) for v in values.values()}) == 1]
    lines += ["", "The best trials' hyperparameters:", ""]
    lines += table(["hyperparameter", *(f"`{name}`" for name in values)],
                   [[n, *(num(v.get(n, "-")) for v in values.values())] for n in names])
    lines += ["", f"They agree on {len(agree)} of {len(names)} hyperparameters"
                  + (f" ({', '.join(agree)})." if agree else "."), ""]
    return lines


def write_report(study: Study, others: list[Study] = ()) -> Path:
    """Write results/<study>/report.md and its plots under results/<study>/report/; return report.md's path.
    `others`: studies of the same space to set beside it (`_other_studies`)."""
    require_study(study)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before anything imports TensorFlow: no C++ chatter
    config = read(study.root / "config.json", required=True)
    trials = load_trials(study.tuner_dir, config["search"]["max_epochs"])
    if not any(t.status == "COMPLETED" for t in trials):
        raise UserError(f"study {study.name} has no completed trial yet; run `make search` for it first "
                        f"(the same command resumes) until one finishes")
    preset = read(study.identity_file).get("preset") or config.get("preset")
    versions, summary = read(study.root / "versions.json") or {}, read(study.root / "search_summary.json")
    restore_dir(study.best_dir)
    tuned, baselines = read(study.best_dir / "metrics.json"), load_baselines(study.root)
    # The seed's first (every other run is measured against it), then by name: config.json sorts keys.
    first = lambda name: (name != "seed", name)  # noqa: E731
    planned = sorted(config.get("baselines", {"seed": {}}), key=first)
    baselines = {name: baselines[name] for name in sorted(baselines, key=first)}
    s, objective = config["search"], config["search"]["objective"]
    schedule = search_schedule(s)
    order = ranked(trials, objective)
    best = order[0]

    source = config.get("data_source", "")
    args = f"CONFIG={preset} STUDY={study.name}"
    data = f" DATA_DIR={source}" if source and not source.startswith("keras.") else ""
    # A side not run yet is suggested with the other side's seed count, so the two compare.
    some_baseline = next(iter(baselines.values()), None)
    seeds = {name: f" SEEDS={len(m['seeds'])}" if m else "" for name, m in
             (("retrain", tuned or some_baseline), ("baseline", some_baseline or tuned))}
    commands = {"search": f"make search {args}{data}", "retrain": f"make retrain-best {args}{data}{seeds['retrain']}",
                "baseline": f"make baseline {args}{data}{seeds['baseline']}", "report": f"make report {args}"}

    adopted = read(study.adopted_file)
    found = warnings(config, trials, best, schedule, summary, tuned, baselines, commands, adopted)
    confirmed = (adopted or {}).get("confirmed")
    pooled = trials + [t for o in others for t in load_trials(o.tuner_dir, s["max_epochs"])]
    lines = [f"# Study `{study.name}`", "",
             f"{TUNER_NAMES[s['tuner']]} with `{preset}`: best {objective} **{best.score:.4f}** (trial {best.id}, "
             f"{best.epochs} epochs); {len(order)} of {len(trials)} trials completed. "
             + (f"Adopted: {contender_name(adopted)}" + (f", confirmed at {mean_spread(confirmed['mean'], confirmed['std'])}"
                f" over {len(confirmed['seeds'])} seeds" if confirmed else "") + "."
                if adopted else "Nothing adopted yet."), "",
             "## Warnings", "", *([f"- {w}" for w in found] or ["No warnings."]), "",
             *_comparison(tuned, baselines, planned, commands),
             *(_other_studies(study, config, tuned, list(others)) if others else []),
             *_finalists(study, list(others), adopted, tuned, commands),
             *_importance(config["space"], pooled, [study.name, *(o.name for o in others)], objective),
             *_best_trials(trials, order, list(config["space"]), objective),
             *_plots(study, trials, order, config["space"], objective),
             *_study_section(config, preset, trials, schedule, summary, versions, commands, study.tensorboard_dir)]
    report = study.root / "report.md"
    write_text_atomic(report, "\n".join(lines))  # a reader never sees half a report
    return report

