"""report.py: the page's sections, plots and warnings, on study folders crafted by hand (no training).

The crafted study takes cpu.toml's space and a 3-epoch, factor-3 Hyperband (2 brackets, 6 trials);
its trials follow that schedule, so a clean one raises no warning and each test breaks one thing.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path

import keras_tuner
import pytest
from keras_tuner.engine.trial import Trial

from alexnet_search.config import Config, load_config
from alexnet_search.errors import UserError
from alexnet_search.hypermodel import declare
from alexnet_search.schedule import hyperband_schedule
from alexnet_search.report import SPREAD_RULE, edge, fit_seconds, read_scalars, write_report
from alexnet_search.study import Study, search_identity

from conftest import REPO, disk_full_at

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
WARNINGS = {"Best value at the edge of its range", "Best trial had a short budget", "Most trials failed",
            "Too few trials in the last bracket", "Search not finished", "Retrained configuration is not the adopted one",
            "Different budgets", "Different training data"}


def _config() -> dict:
    config = json.loads(load_config(REPO / "tuning" / "cpu.toml").to_json())
    config["search"].update(max_epochs=3, factor=3, hyperband_iterations=1)
    config["data_source"], config["split"] = "/data/cifar-10-batches-py", "crafted split"
    return config


def _interior(space: dict, n: int) -> dict:
    """Values strictly inside every range, varying with n so that the plots have spread."""
    values = {name: entry["default"] for name, entry in space.items()}
    values.update(dropout=[0.3, 0.4, 0.3, 0.4][n % 4], lr=[5e-3, 1e-2, 3e-2][n % 3], conv3_filters=[256, 320, 384, 448][n % 4],
                  dense_units=2048, momentum=0.9, weight_decay=5e-3)
    return values


def _save_trial(study: Study, space: dict, trial_id: str, values: dict, score, status: str, message=None) -> None:
    hp = keras_tuner.HyperParameters()
    for name, entry in space.items():
        declare(hp, name, entry)
    hp.values.update(values)
    trial = Trial(hp, trial_id=trial_id, status=status, message=message)
    if score is not None:
        trial.metrics.register("val_accuracy", "max")
        trial.metrics.update("val_accuracy", score, step=0)
        trial.score = score
    folder = study.tuner_dir / f"trial_{trial_id}"
    folder.mkdir(parents=True)
    trial.save(str(folder / "trial.json"))


def _write_events(run: Path, first_step: int, values: list[float]) -> None:
    from alexnet_search.tboard import Writer

    writer = Writer(run)
    for step, value in enumerate(values, first_step):
        writer.scalar("epoch_accuracy", value, step=step)
    writer.close()


def _metrics(config: dict, accuracies: list[float], **extra) -> dict:
    """best/ or baseline/metrics.json as retrain writes it; std is the sample standard deviation."""
    seed, epochs = config["study"]["seed"], config["retrain"]["epochs"]
    runs = [{"seed": seed + i, "epochs": epochs, "train_wall_s": 1.0, "train_accuracy": a + 0.2, "train_loss": 0.4,
             "val_accuracy": a + 0.01, "val_loss": 1.0, "test_accuracy": a, "test_accuracy_tta": a + 0.015,
             "test_loss": 1.1}
            for i, a in enumerate(accuracies)]
    out = {"epochs": epochs, "seeds": [r["seed"] for r in runs], "runs": runs, "wall_time_s": 9.0, "data": "crafted"}
    for key in ("test_accuracy", "test_accuracy_tta", "val_accuracy", "train_accuracy", "test_loss"):
        values = [r[key] for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return {**out, **extra}


def make_study(root: Path, *, fault: str | None = None, tuned=(0.70, 0.71, 0.72), baseline=(0.60, 0.61, 0.62),
               paper=None, events: bool = True) -> Study:
    """A finished study that follows its Hyperband schedule; `fault` breaks one thing a warning is for.

    The best trial is bracket 0's first (a full budget from scratch), with values inside every range.
    """
    study, config = Study(root), _config()
    space, s = config["space"], config["search"]
    root.mkdir(parents=True)
    (root / "study.json").write_text(json.dumps({"preset": "tuning/cpu.toml",
                                                 "identity": search_identity(Config(config, "tuning/cpu.toml"))}))
    (root / "config.json").write_text(json.dumps(config))
    (root / "versions.json").write_text(json.dumps({
        "python": "3.x", "tensorflow": "tf-x", "keras": "k-x", "keras_tuner": "kt-x", "tensorboard": "tb-x",
        "numpy": "np-x", "platform": "crafted", "git_commit": None, "device": "CPU", "command": "alexnet-search search",
        "written": "today"}))
    schedule = hyperband_schedule(s["max_epochs"], s["factor"], s["hyperband_iterations"])
    n, spent, first_of_bracket = 0, 0, {}
    for rnd in schedule.rounds:
        previous = next((r.epochs for r in schedule.rounds if r.bracket == rnd.bracket and r.round == rnd.round - 1), 0)
        for k in range(rnd.trials):
            trial_id, parent = f"{n:04d}", (first_of_bracket.get(rnd.bracket) if rnd.round else None)
            values = _interior(space, n) if parent is None else _interior(space, int(parent))
            score = 0.60 - 0.1 * k if rnd.bracket == 0 else 0.30 + 0.05 * rnd.round + 0.01 * k
            status = "COMPLETED"
            if rnd.bracket == 0 and k == 0 and fault == "edge":
                values["lr"] = space["lr"]["max"]
            if rnd.bracket != 0 and fault == "failed":
                status, score = "FAILED", None
            if rnd.bracket == 0 and k > 0 and fault == "bracket0":
                n += 1
                continue
            hp = {**values, "tuner/epochs": rnd.epochs, "tuner/initial_epoch": previous, "tuner/bracket": rnd.bracket,
                  "tuner/round": rnd.round, **({"tuner/trial_id": parent} if parent else {})}
            _save_trial(study, space, trial_id, hp, score, status, message="Traceback\nValueError: NaN loss" if score is None else None)
            first_of_bracket.setdefault(rnd.bracket, trial_id)
            spent += rnd.epochs - previous
            if events and score is not None:
                curve = [score - 0.05 * (rnd.epochs - 1 - e) for e in range(previous, rnd.epochs)]
                _write_events(study.tensorboard_dir / trial_id / "execution0" / "validation", previous, curve)
            n += 1
    (root / "search_summary.json").write_text(json.dumps({
        "wall_time_s": 123.4, "trials_scheduled": schedule.trials, "trials_started": n, "trials_completed": n,
        "trials_failed": 0, "epochs_scheduled": schedule.epochs, "epochs_spent": spent, "finished": fault != "unfinished"}))
    # The search's best (0004) adopted after its confirmation beat the runner-up's (0005).
    (root / "best_hyperparameters.json").write_text(json.dumps({
        "study": root.name, "trial_id": "0004", "val_accuracy": 0.6, "hyperparameters": _interior(space, 4),
        "confirmed": {"seeds": [1001, 1002], "epochs": 30, "scores": [0.65, 0.67], "mean": 0.66, "std": 0.0141}}))
    (root / "finalists.json").write_text(json.dumps({
        "objective": "val_accuracy", "epochs": 30, "seeds": [1001, 1002], "finished": True, "wall_time_s": 60.0,
        "finalists": [{"study": root.name, "trial_id": tid, "rank": rank, "search_score": score, "search_epochs": 3,
                       "hyperparameters": _interior(space, int(tid)), "complete": True, "mean": mean, "std": 0.0141,
                       "runs": [{"seed": 1001, "run": "0000", "status": "COMPLETED", "score": mean - 0.01,
                                 "best_epoch": 30}, {"seed": 1002, "run": "0001", "status": "COMPLETED",
                                                     "score": mean + 0.01, "best_epoch": 28}]}
                      for tid, rank, score, mean in (("0004", 1, 0.6, 0.66), ("0005", 2, 0.5, 0.62))]}))
    for folder, accuracies, extra in (("best", tuned, {"trial_id": "0004", "trial_study": root.name,
                                                       "search_score": 0.6, "exported_seed": 1,
                                                       "exported_tta": True}),
                                      ("baselines/seed", baseline, {"baseline": "seed"}),
                                      ("baselines/paper", paper, {"baseline": "paper"})):
        if accuracies:
            (root / folder).mkdir(parents=True)
            (root / folder / "metrics.json").write_text(json.dumps(_metrics(config, list(accuracies), **extra)))
            if events:
                run = "retrain-best" if folder == "best" else folder
                _write_events(study.tensorboard_dir / run / "seed1" / "validation", 0, [0.3, 0.5, accuracies[0]])
    return study


def _section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section '## {title}'"
    return match.group(1)


def _warnings(text: str) -> set[str]:
    return set(re.findall(r"^- \*\*([^*]+):\*\*", _section(text, "Warnings"), re.M))


# Session-scoped: under pytest-xdist a worker runs other modules' tests between the ones sharing
# it, and a module-scoped fixture would be made again after each of those.
@pytest.fixture(scope="session")
def clean_report(tmp_path_factory) -> tuple[Study, str]:
    """One clean study's report, shared: drawing its plots is the slow part."""
    study = make_study(tmp_path_factory.mktemp("clean") / "s")
    path = write_report(study)
    assert path == study.root / "report.md"
    return study, path.read_text()


def test_report_of_a_clean_study_has_every_section_and_no_warning(clean_report):
    study, text = clean_report
    config = _config()

    study_section = _section(text, "Study")
    assert "tuning/cpu.toml" in study_section and "max_epochs 3" in study_section and "factor 3" in study_section
    assert "6 run, 6 completed, 0 failed" in study_section
    assert "| name | type | range / values | sampling | seed default |" in study_section
    for name, entry in config["space"].items():
        assert re.search(rf"^\| {name} \| {entry['type']} \|", study_section, re.M), name
    assert re.search(r"^\| lr \| float \| .* \| log \|", study_section, re.M)
    for key in ("tensorflow", "keras", "keras_tuner"):
        assert f"| {key} |" in study_section
    for command in ("make search CONFIG=tuning/cpu.toml STUDY=s", "make retrain-best CONFIG=tuning/cpu.toml STUDY=s",
                    "make baseline CONFIG=tuning/cpu.toml STUDY=s", "make report CONFIG=tuning/cpu.toml STUDY=s"):
        assert command in study_section
    assert "SEEDS=3" in study_section
    # The crafted trials logged no train events: their fit time is unknown, so all counts as outside.
    assert "- time: 0s of 2m 03s in `fit`: 100.0% outside it" in study_section

    best = _section(text, "Best trials")
    header = next(line for line in best.splitlines() if line.startswith("| rank"))
    for name in list(config["space"]) + ["val_accuracy", "epochs"]:
        assert f" {name} |" in header
    rows = [line for line in best.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert rows[0].startswith("| 1 | 0004 | 0.6000 | 3 |")  # bracket 0's first trial, full budget
    assert not any("tuner/" in line for line in best.splitlines())

    assert _section(text, "Warnings").strip() == "No warnings."

    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert {"report/hyperparameters.png", "report/trial_order.png", "report/learning_curves.png",
            "report/retrain_curves.png"} <= set(links)
    for link in links:
        assert not Path(link).is_absolute()
        assert (study.root / link).read_bytes()[:8] == PNG_MAGIC


def test_tuned_and_baseline_side_by_side_with_the_spread_rule(clean_report):
    study, text = clean_report
    text = _section(text, "Tuned vs the baselines")
    tuned = json.loads((study.best_dir / "metrics.json").read_text())
    base = json.loads((study.root / "baselines" / "seed" / "metrics.json").read_text())
    for m in (tuned, base):
        assert f"{m['test_accuracy_mean']:.4f} ± {m['test_accuracy_std']:.4f}" in text
        assert f"{m['test_accuracy_tta_mean']:.4f} ± {m['test_accuracy_tta_std']:.4f}" in text
    diff = tuned["test_accuracy_mean"] - base["test_accuracy_mean"]
    spread = math.hypot(tuned["test_accuracy_std"], base["test_accuracy_std"])
    assert f"{diff:+.4f}" in text
    assert SPREAD_RULE in text
    assert f"exceeds the spread ({spread:.4f}): tuned (trial 0004) beats baseline seed" in text
    assert "Baseline paper has not run: `make baseline CONFIG=tuning/cpu.toml STUDY=s" in text
    assert "The exported model (`best/`) averages each image with its mirror: its accuracy is the TTA column's" in text


def test_three_runs_compare_pair_by_pair(tmp_path):
    study = make_study(tmp_path / "s", tuned=(0.70, 0.71, 0.72), baseline=(0.30, 0.31, 0.32),
                       paper=(0.69, 0.71, 0.73))
    text = _section(write_report(study).read_text(), "Tuned vs the baselines")
    rows = [line for line in text.splitlines() if line.startswith("| tuned") or line.startswith("| baseline")]
    assert [r.split(" |")[0] for r in rows] == ["| tuned (trial 0004)", "| baseline seed", "| baseline paper"]
    assert "tuned (trial 0004) beats baseline seed by more than seed-to-seed variation" in text
    assert "baseline paper beats baseline seed by more than" in text
    assert re.search(r"tuned \(trial 0004\) − baseline paper: \*\*\+0.0000\*\*; .*within seed-to-seed", text)
    assert "has not run" not in text
    assert (study.root / "report" / "retrain_curves.png").is_file()


def test_a_difference_within_the_spread_is_called_so(tmp_path):
    study = make_study(tmp_path / "s", tuned=(0.60, 0.65, 0.70), baseline=(0.62, 0.63, 0.64))
    text = write_report(study).read_text()
    assert "does not exceed the spread" in text and "within seed-to-seed variation" in text


@pytest.mark.parametrize("tuned, baseline, expected, absent", [
    ((0.7,), (0.6,), ["spread is unknown with one seed"], ["exceeds the spread"]),
    ((0.7, 0.71), None, ["No baseline has run: `make baseline CONFIG=tuning/cpu.toml STUDY=s", "SEEDS=2`",
                         "(seed, paper)"], ["spread", "retrain-best has not run"]),
    (None, (0.6,), ["retrain-best has not run: `make retrain-best CONFIG=tuning/cpu.toml STUDY=s", "SEEDS=1`"],
     ["spread", "No baseline has run"]),
])
def test_one_side_or_one_seed_says_what_is_missing(tmp_path, tuned, baseline, expected, absent):
    study = make_study(tmp_path / "s", tuned=tuned, baseline=baseline, events=False)
    text = _section(write_report(study).read_text(), "Tuned vs the baselines")
    for phrase in expected:
        assert phrase in text
    for phrase in absent:
        assert phrase not in text
    for m in (tuned, baseline):
        if m:
            assert f"{statistics.fmean(m):.4f} ±" in text


@pytest.mark.parametrize("fault, warning, detail", [
    ("edge", "Best value at the edge of its range", "`lr` = 0.15 is the highest value"),
    ("failed", "Most trials failed", "4 of 6 finished trials failed"),
    ("bracket0", "Too few trials in the last bracket", "completed 1 of the 2 trials"),
    ("unfinished", "Search not finished", "`make search CONFIG=tuning/cpu.toml STUDY=s"),
])
def test_each_fault_raises_its_warning_and_only_it(tmp_path, fault, warning, detail):
    text = write_report(make_study(tmp_path / "s", fault=fault, events=False)).read_text()
    assert _warnings(text) == {warning}
    assert detail in _section(text, "Warnings")
    if fault == "failed":
        assert "- trial 0001: NaN loss" in text  # the failed trials' reasons, without the class name


def test_retrain_of_an_older_best_and_unequal_budgets_are_flagged(tmp_path):
    study = make_study(tmp_path / "s", events=False)
    tuned = json.loads((study.best_dir / "metrics.json").read_text())
    tuned.update(trial_id="0005", hyperparameters_from="study s trial 0005", epochs=tuned["epochs"] + 1)
    (study.best_dir / "metrics.json").write_text(json.dumps(tuned))
    assert _warnings(write_report(study).read_text()) == {"Retrained configuration is not the adopted one",
                                                          "Different budgets"}


def test_a_retrain_on_train_and_val_shows_no_validation_score_and_is_not_compared_with_one_on_train(tmp_path):
    study = make_study(tmp_path / "s", events=False)
    tuned = json.loads((study.best_dir / "metrics.json").read_text())
    for key in ("val_accuracy_mean", "val_accuracy_std"):
        del tuned[key]
    (study.best_dir / "metrics.json").write_text(json.dumps({**tuned, "train_on": "train+val"}))
    text = write_report(study).read_text()
    assert _warnings(text) == {"Different training data"}  # the baseline's results predate train_on: "train"
    assert "retrain-best trained on train+val, baseline seed on train" in text
    assert "| none: trained on train+val |" in _section(text, "Tuned vs the baselines")


def test_the_report_shows_the_finalists_and_which_was_adopted(clean_report):
    _, text = clean_report
    finalists = _section(text, "Finalists")
    assert "seeds 1001, 1002 for 30 epochs" in finalists
    rows = [line for line in finalists.splitlines() if line.startswith("| `s`")]
    assert rows[0].startswith("| `s` 0004 | 0.6000 (3 epochs) | 0.6500 | 0.6700 | 0.6600 ± 0.0141 | adopted, retrained |")
    assert rows[1].startswith("| `s` 0005 |") and "adopted" not in rows[1]
    assert "Adopted: trial 0004, confirmed at 0.6600 ± 0.0141 over 2 seeds." in text
    assert "Too few completed trials (6) to rank" in _section(text, "Which hyperparameters matter")


def test_a_baseline_adopted_over_the_finalists_is_named_as_one(tmp_path):
    study = make_study(tmp_path / "s")
    confirmed = json.loads(study.finalists_file.read_text())
    paper = {**confirmed["finalists"][0], "trial_id": "paper", "rank": 0, "search_score": None, "search_epochs": None,
             "baseline": "paper", "hyperparameters": {"lr": 0.01, "momentum": 0.9}, "mean": 0.70,
             "runs": [{**r, "score": score} for r, score in zip(confirmed["finalists"][0]["runs"], (0.69, 0.71))]}
    paper["runs"][0] = {**paper["runs"][0], "run": None, "reused_from": "cpu/0004"}  # taken from a sibling study
    confirmed["finalists"].insert(0, paper)
    runner_up = confirmed["finalists"][-1]  # raced from one seed: it ran only its first
    runner_up.update(runs=runner_up["runs"][:1], mean=runner_up["runs"][0]["score"], std=None)
    study.finalists_file.write_text(json.dumps(confirmed))
    study.adopted_file.write_text(json.dumps({"study": "s", "trial_id": "paper", "baseline": "paper",
                                              "hyperparameters": paper["hyperparameters"],
                                              "confirmed": {"seeds": [1001, 1002], "mean": 0.70, "std": 0.0141}}))
    text = write_report(study).read_text()
    assert "Adopted: baseline paper, confirmed at 0.7000 ± 0.0141 over 2 seeds." in text
    finalists = _section(text, "Finalists")
    assert "beside the preset's baselines named in `[confirm] baselines`" in finalists
    rows = [line for line in finalists.splitlines() if line.startswith("| `s`")]
    assert rows[0].startswith("| `s` paper | baseline `paper` | 0.6900 | 0.7100 | 0.7000 ± 0.0141 | adopted")
    assert rows[1].startswith("| `s` 0004 | 0.6000 (3 epochs) |") and "adopted" not in rows[1]
    assert rows[2].startswith("| `s` 0005 | 0.5000 (3 epochs) | 0.6100 | - | 0.6100 (one run) |")
    assert "not trained again: baseline paper seed 1001 of `s` from `cpu/0004`." in finalists


def _ranked_trials(n: int, score) -> list:
    import numpy as np

    from alexnet_search.report.load import Trial

    rng = np.random.default_rng(0)
    space = load_config(REPO / "tuning" / "paper.toml").space  # the wide space: every dimension varies
    trials = []
    for i in range(n):
        values = {"dropout": float(rng.choice([0.2, 0.3, 0.4, 0.5])), "lr": float(10 ** rng.uniform(-4, np.log10(0.3))),
                  "dense_units": int(rng.choice([1024, 2048, 4096])), "momentum": float(rng.choice([0.5, 0.9])),
                  "lr_schedule": str(rng.choice(["constant", "plateau", "cosine"]))}
        epochs = int(rng.choice([1, 3, 9]))
        values = {**{k: e["default"] for k, e in space.items()}, **values}
        trials.append(Trial(id=f"{i:04d}", status="COMPLETED", score=score(values, epochs), values=values,
                            epochs=epochs, initial_epoch=0, bracket=None, parent=None, message=""))
    return space, trials


def test_importance_ranks_what_drives_the_scores_and_the_budget_apart():
    import math

    from alexnet_search.report.importance import BUDGET, MIN_TRIALS, importance

    space, trials = _ranked_trials(40, lambda v, epochs: 0.1 * epochs - 0.3 * abs(math.log10(v["lr"]) + 2))
    found = importance(space, trials, "val_accuracy")
    shares = {name: mean for name, mean, _, _ in found.shares}
    assert found.trials == 40 and set(shares) == set(space) | {BUDGET}
    assert [name for name, *_ in found.shares[:2]] == [BUDGET, "lr"]  # the rest explain nothing
    assert sum(shares.values()) == pytest.approx(1.0) and shares["dropout"] < 0.05
    assert all(lo <= mean <= hi for _, mean, lo, hi in found.shares)
    # Trials of one budget (a random search): no budget column; a value outside today's range still counts.
    space, trials = _ranked_trials(20, lambda v, epochs: 1.0 if v["momentum"] == 0.9 else 0.0)
    trials = [t.__class__(**{**t.__dict__, "epochs": 9}) for t in trials]
    trials[0].values["dropout"] = 0.7
    found = importance(space, trials, "val_accuracy")
    assert found.shares[0][0] == "momentum" and BUDGET not in {name for name, *_ in found.shares}
    assert importance(space, trials[:MIN_TRIALS - 1], "val_accuracy") is None


def test_edge_means_the_end_of_a_range_the_preset_could_widen():
    space = _config()["space"]
    assert edge("lr", space["lr"], space["lr"]["max"]) == "highest"
    assert edge("lr", space["lr"], space["lr"]["max"] * 0.99) == "highest"  # continuous: the outer few percent
    assert edge("lr", space["lr"], space["lr"]["default"]) is None
    assert edge("conv3_filters", space["conv3_filters"], space["conv3_filters"]["min"]) == "lowest"
    assert edge("dense_units", space["dense_units"], max(space["dense_units"]["values"])) == "highest"
    assert edge("weight_decay", {"type": "choice", "values": [5e-4, 5e-3, 2e-2]}, 5e-4) == "lowest"
    # A range starting at its hard bound (no weight decay, no translation) cannot widen below it.
    assert edge("weight_decay", {"type": "choice", "values": [0.0, 5e-4, 5e-3]}, 0.0) is None
    assert edge("translate", {"type": "float", "min": 0.0, "max": 0.2, "step": 0.05}, 0.0) is None


def test_read_scalars_returns_each_epoch_and_a_later_file_wins(tmp_path):
    run = tmp_path / "run"
    _write_events(run, 0, [0.1, 0.2, 0.3])
    assert read_scalars(run, "epoch_accuracy") == pytest.approx({0: 0.1, 1: 0.2, 2: 0.3})
    # A resumed or promoted run writes a second file: its epochs replace the earlier file's.
    # Event files are named events.out.tfevents.<unix time>.<host>...; pin the times so the
    # later file is the one whose name sorts first otherwise.
    (first,) = run.glob("events.out.tfevents.*")
    first.rename(run / "events.out.tfevents.1700000001.zz.1.0.v2")
    _write_events(run, 2, [0.9, 0.8])
    (second,) = [p for p in run.glob("events.out.tfevents.*") if ".zz." not in p.name]
    second.rename(run / "events.out.tfevents.1700000002.aa.1.0.v2")
    assert read_scalars(run, "epoch_accuracy") == pytest.approx({0: 0.1, 1: 0.2, 2: 0.9, 3: 0.8})
    assert read_scalars(tmp_path / "absent", "epoch_accuracy") == {}


def test_fit_time_spans_the_train_writer_opening_to_the_last_validation_epoch(tmp_path):
    def write(folder, times):
        folder.mkdir(parents=True)
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.summary.writer.record_writer import RecordWriter

        with open(folder / f"events.out.tfevents.{int(times[0])}.h.1.0.v2", "wb") as f:
            w = RecordWriter(f)
            for step, t in enumerate(times):
                w.write(Event(wall_time=t, step=step).SerializeToString())

    run = tmp_path / "execution0"
    write(run / "train", [1000.0, 1004.0, 1008.0])
    write(run / "validation", [1003.0, 1010.5])
    assert fit_seconds(run) == pytest.approx(10.5)
    assert fit_seconds(tmp_path / "absent") is None


def test_missing_study_or_no_completed_trial_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="make search"):
        write_report(Study(tmp_path / "nothing"))
    study = make_study(tmp_path / "s", tuned=None, baseline=None, events=False)
    for trial in study.tuner_dir.glob("trial_*/trial.json"):
        state = json.loads(trial.read_text())
        state.update(status="FAILED", score=None)
        trial.write_text(json.dumps(state))
    with pytest.raises(UserError, match="no completed trial.*make search"):
        write_report(study)
    assert not (study.root / "report.md").exists()


def test_a_report_that_cannot_be_written_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """The disk fills up as report.md is replaced: the old report stays, whole, and nothing half-written
    is left beside it."""
    study = make_study(tmp_path / "s")
    (study.root / "report.md").write_text("the previous report")
    with disk_full_at(monkeypatch, lambda path: path.name == "report.md"), pytest.raises(OSError, match="No space"):
        write_report(study)
    assert (study.root / "report.md").read_text() == "the previous report"
    assert sorted(p.name for p in study.root.iterdir() if p.name.startswith(".")) == []
    assert write_report(study).read_text().startswith("# Study `s`")


def test_other_studies_of_the_space_are_set_beside_with_their_best_values(tmp_path):
    a = make_study(tmp_path / "a", events=False)
    b = make_study(tmp_path / "b", events=False, tuned=None)
    config = json.loads((b.root / "config.json").read_text())
    config["study"]["seed"], config["search"]["tuner"], config["search"]["max_trials"] = 2, "random", 4
    (b.root / "config.json").write_text(json.dumps(config))
    state = json.loads((b.tuner_dir / "trial_0004" / "trial.json").read_text())
    state["hyperparameters"]["values"]["dropout"] = 0.6  # b's best chose another dropout
    (b.tuner_dir / "trial_0004" / "trial.json").write_text(json.dumps(state))
    text = _section(write_report(a, [b]).read_text(), "Other studies of this space")
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert rows[0].startswith("| `a` | Hyperband | 1 |") and "0.6000 (trial 0004)" in rows[0]
    assert "0.7100 ± 0.0100" in rows[0]  # a's retrain of that trial
    assert rows[1].startswith("| `b` | Random search | 2 |") and rows[1].endswith("| not retrained |")
    names = list(config["space"])
    assert f"They agree on {len(names) - 1} of {len(names)} hyperparameters" in text
    assert re.search(r"^\| dropout \| 0.3 \| 0.6 \|$", text, re.M)

    # Another size, or another network: study.json's identity says so, as it does for pooling.
    for name, section, key, value in (("c", "data", "image_size", 64), ("d", "model", "bn_momentum", 0.99)):
        other = make_study(tmp_path / name, events=False)
        saved = json.loads(other.identity_file.read_text())
        saved["identity"][section][key] = value
        other.identity_file.write_text(json.dumps(saved))
        with pytest.raises(UserError, match=f"--against {name}: its search space, data or network differ from a's "
                                            f"\\(in {section}.{key}\\)"):
            write_report(a, [other])
    assert "- model: width multiplier 0.25, conv1 3x3, batch-norm momentum 0.9;" in write_report(a).read_text()


def test_the_study_section_says_what_precision_the_runs_trained_in(tmp_path):
    # The preset's precision is a request the machine may turn down (devices.precision_and_xla).
    study = make_study(tmp_path / "a", events=False)
    assert "trained in" not in write_report(study).read_text()  # a study from before it was recorded
    config = json.loads((study.root / "config.json").read_text())
    config["trained_with"] = {"precision": "mixed_bfloat16", "jit_compile": False}
    (study.root / "config.json").write_text(json.dumps(config))
    assert re.search(r"^- model: .*retrain \d+ epochs; trained in mixed_bfloat16$", write_report(study).read_text(), re.M)


def test_without_optuna_the_importance_section_says_so(tmp_path, monkeypatch):
    def missing(*args, **kwargs):
        raise ImportError("No module named 'optuna'", name="optuna")

    monkeypatch.setattr("alexnet_search.report.importance", missing)
    text = write_report(make_study(tmp_path / "s", events=False)).read_text()
    assert "Not computed: optuna is not installed" in _section(text, "Which hyperparameters matter")


def test_a_crafted_or_foreign_event_file_is_not_a_point_and_not_a_traceback(tmp_path):
    import numpy as np
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter
    from tensorboard.util import tensor_util

    run = tmp_path / "run"
    _write_events(run, 0, [0.1, 0.2])
    writer = EventFileWriter(str(run))  # another tool's: a vector where a scalar belongs
    vector = summary_pb2.Summary.Value(tag="epoch_accuracy", tensor=tensor_util.make_tensor_proto(np.ones(3)))
    writer.add_event(event_pb2.Event(step=5, summary=summary_pb2.Summary(value=[vector])))
    writer.close()
    assert read_scalars(run, "epoch_accuracy") == pytest.approx({0: 0.1, 1: 0.2})


def test_a_trial_record_of_another_shape_is_one_line_naming_it(tmp_path):
    study = make_study(tmp_path / "results" / "s")
    (path,) = list(study.tuner_dir.glob("trial_0000/trial.json"))
    path.write_text(json.dumps({"trial_id": "0000", "status": "COMPLETED", "hyperparameters": ["not", "a", "dict"]}))
    with pytest.raises(UserError, match=re.escape(f"{path} is not a Keras Tuner trial record")):
        write_report(study)


def test_parent_ids_that_name_each_other_end_the_curve_instead_of_the_report(tmp_path):
    from alexnet_search.report.load import Trial as Record, curve

    a = Record("0001", "COMPLETED", 0.5, {}, 2, 1, 0, "0002", "")
    b = Record("0002", "COMPLETED", 0.5, {}, 2, 1, 0, "0001", "")
    _write_events(tmp_path / "tb" / "0001" / "execution0" / "validation", 1, [0.4])
    assert curve(a, {"0001": a, "0002": b}, tmp_path / "tb", "epoch_accuracy") == pytest.approx({1: 0.4})


def test_a_plot_replaces_a_link_planted_under_its_name_instead_of_writing_through_it(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alexnet_search.report.figures import _save

    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "plot.png").symlink_to(target)
    fig = plt.figure()
    _save(plt, fig, tmp_path / "plot.png")
    assert target.read_text() == "keep me"
    assert not (tmp_path / "plot.png").is_symlink() and (tmp_path / "plot.png").read_bytes()[:4] == b"\x89PNG"
