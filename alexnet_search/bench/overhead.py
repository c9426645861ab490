"""Benchmark 2, a search's overhead: a tiny Hyperband study through `search.run_search` (the
preset's max_epochs and factor, enough iterations for --trials-memory trials): time from the call
to the first training step, each trial's wall time inside and outside `fit`, resident memory after
each trial.
"""

from __future__ import annotations

import io
import json
import math
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from .common import IMPORTED, columns, rss_mb, secs


def study_config(base: str | Path, folder: Path, min_trials: int, images: int = 256, full: bool = False) -> Path:
    """A preset extending `base` with enough Hyperband iterations for `min_trials` trials and,
    unless `full`, tiny sizes. `load_config` is the only way to a Config, hence a TOML file."""
    from ..config import load_config
    from ..schedule import hyperband_schedule

    s = load_config(base)["search"]
    iterations = max(1, math.ceil(min_trials / hyperband_schedule(s["max_epochs"], s["factor"]).trials))
    lines = [f"extends = {json.dumps(str(Path(base).resolve()))}", f"[search]\nhyperband_iterations = {iterations}"]
    if not full:
        lines += [f"[data]\ntrain_size = {images}\nval_size = {max(1, images // 4)}", "[model]\nwidth_multiplier = 0.125"]
    path = folder / "bench-study.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


class _TrialLines(io.TextIOBase):
    """run_search's output stream, passing on only each trial's first line."""

    def __init__(self, say):
        self.say = say

    def write(self, text: str) -> int:
        if text.startswith("--- trial"):
            self.say("    " + text[4:].split(" (id")[0])
        return len(text)


def study_figures(config_path: str | Path, source, folder: Path, say=print) -> dict:
    """Run the preset's search through `run_search` into `folder`; per-trial times and memory."""
    import keras

    from ..config import load_config
    from ..schedule import search_schedule
    from ..search import run_search
    from ..study import study_for
    from ..training import Training

    config = load_config(config_path)
    log: list[dict] = []  # a record per trial's fit, shared by every copy of the recorder
    now = time.monotonic

    class Recorder(keras.callbacks.Callback):
        def __deepcopy__(self, memo):  # Keras Tuner deep-copies the callbacks for every trial
            return Recorder()

        def on_train_begin(self, logs=None):
            log.append({"begin": now(), "steps_s": 0.0, "first_steps_s": 0.0, "epochs": 0})

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                log[-1]["batch0"] = now()
                log[-1].setdefault("first_step", log[-1]["batch0"])

        def on_train_batch_end(self, batch, logs=None):
            log[-1]["last_end"] = now()
            if batch == 0 and log[-1]["epochs"] == 0:
                log[-1]["first_steps_s"] += now() - log[-1]["batch0"]

        def on_test_begin(self, logs=None):
            log[-1]["test0"] = now()

        def on_test_batch_end(self, batch, logs=None):
            if batch == 0 and log[-1]["epochs"] == 0:
                log[-1]["first_steps_s"] += now() - log[-1]["test0"]

        def on_test_end(self, logs=None):
            log[-1]["steps_s"] += now() - log[-1]["test0"]

        def on_epoch_end(self, epoch, logs=None):
            log[-1]["steps_s"] += log[-1]["last_end"] - log[-1]["batch0"]
            log[-1]["epochs"] += 1

        def on_train_end(self, logs=None):
            log[-1].update(end=now(), rss_mb=rss_mb())

    started = now()
    run_search(config, study_for(folder, "bench"), Training.prepare(config, source), overwrite=True,
               out=_TrialLines(say), callbacks=(Recorder(),))
    finished = now()

    # A trial's wall time runs from the previous fit's end to its own (the last one's to the end of
    # the search): bookkeeping, build, compile, pipeline, fit. The first also holds the search's
    # set-up (data loading, the HParams declaration).
    trials, previous = [], started
    for i, rec in enumerate(log):
        end = finished if i == len(log) - 1 else rec["end"]
        wall, fit = end - previous, rec["end"] - rec["begin"]
        trials.append({"trial": i + 1, "epochs": rec["epochs"], "wall_s": wall, "fit_s": fit,
                       "steps_s": rec["steps_s"], "first_steps_s": rec["first_steps_s"],
                       "outside_fit": 1 - fit / wall, "outside_steps": 1 - rec["steps_s"] / wall,
                       "rss_mb": rec["rss_mb"]})
        previous = end
    d, s, total = config["data"], config["search"], finished - started
    first = log[0]["first_step"] - started if log else None
    return {
        "config": str(config_path), "train_size": d["train_size"], "val_size": d["val_size"],
        "image_size": d["image_size"], "width": config["model"]["width_multiplier"],
        "max_epochs": s["max_epochs"], "factor": s["factor"], "iterations": s["hyperband_iterations"],
        "scheduled_trials": search_schedule(config["search"]).trials, "search_s": total, "first_step_s": first,
        "first_step_from_process_start_s": log[0]["first_step"] - IMPORTED if log else None,
        "outside_fit": 1 - sum(t["fit_s"] for t in trials) / total,
        "outside_steps": 1 - sum(t["steps_s"] for t in trials) / total, "trials": trials, "rss_end_mb": rss_mb(),
    }


def run_study(args, say=print) -> dict:
    """The study child: a temporary folder, the data (--data-dir or random images), `study_figures`."""
    from ..config import load_config
    from ..cifar import Source, source_from

    source = source_from(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="alexnet-bench-") as tmp:
        path = study_config(args.config, Path(tmp), args.trials_memory, args.study_images, args.study_full)
        if source.folder is None:  # a data_batch_1 of random images in CIFAR-10's layout
            d, rng = load_config(path)["data"], np.random.default_rng(0)
            n = d["train_size"] + d["val_size"]
            source = Source(Path(tmp))
            with open(Path(tmp) / "data_batch_1", "wb") as f:
                pickle.dump({b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                             b"labels": rng.integers(0, 10, n).tolist()}, f, protocol=2)
        return study_figures(path, source, Path(tmp) / "results", say=say)


def format_study(study: dict) -> str:
    t = study["trials"]
    lines = [f"study: {study['config']} ({study['max_epochs']} max epochs, factor {study['factor']}, "
             f"{study['iterations']} iteration(s)): {len(t)} of {study['scheduled_trials']} scheduled trials, "
             f"{study['train_size']} + {study['val_size']} images at {study['image_size']}x{study['image_size']}, "
             f"width {study['width']}, {secs(study['search_s'])} in all"]
    if study["first_step_s"] is not None:
        since = study["first_step_from_process_start_s"]
        lines.append(f"search start to the first trial's first step: {secs(study['first_step_s'])}"
                     + (f" ({secs(since)} from process start)" if since else ""))
    rows = [("trial", "epochs", "wall", "in fit", "1st steps", "outside fit", "outside steps", "RSS after")]
    rows += [(r["trial"], r["epochs"], secs(r["wall_s"]), secs(r["fit_s"]), secs(r["first_steps_s"]),
              f"{r['outside_fit']:.0%}", f"{r['outside_steps']:.0%}", f"{r['rss_mb']:,.0f} MB") for r in t]
    rows.append(("all", sum(r["epochs"] for r in t), secs(study["search_s"]), secs(sum(r["fit_s"] for r in t)),
                 secs(sum(r["first_steps_s"] for r in t)), f"{study['outside_fit']:.0%}",
                 f"{study['outside_steps']:.0%}", f"{study['rss_end_mb']:,.0f} MB"))
    lines += columns(rows, left=0)
    if len(t) > 1:
        growth = t[-1]["rss_mb"] - t[0]["rss_mb"]
        lines.append(f"resident memory after trial 1: {t[0]['rss_mb']:,.0f} MB, after trial {len(t)}: "
                     f"{t[-1]['rss_mb']:,.0f} MB ({growth:+,.0f} MB, {growth / (len(t) - 1):+.1f} MB per trial)")
    return "\n".join(lines)
