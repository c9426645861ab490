"""`alexnet-search bench`: our input pipeline against the seed's, and what a search spends outside `fit`.

1. Throughput and memory. The same AlexNet (the hypermodel's default build, the seed's
   hyperparameters) trains the same steps at the same batch size twice, each variant in its own
   process so that its peak resident memory (ru_maxrss) is its own:
   - seed's way: every image resized up front into one float32 numpy array (/255), `model.fit(x, y)`,
     augmentation by in-model Keras layers (RandomFlip, RandomTranslation);
   - ours: uint8 32x32 images, augmentation in numpy batches (`data.TrainingSet`), scale and resize in the model.
   Beside each, its arithmetic ceiling: fp32 matmul GFLOP/s measured in the same process over the
   FLOPs of one trained image (3x the forward pass, counted from the model's layers). On a shared
   machine the load moves between the two runs: "of ceiling" corrects for it, raw images/s do not.
2. A tiny Hyperband study through `search.run_search` (the preset's max_epochs and factor, enough
   iterations for --trials-memory trials): time from the call to the first training step, each
   trial's wall time inside and outside `fit`, resident memory after each trial.

Reading the tables: "1st epoch" images/s is what a user waits through (graph tracing and the data
adapter's set-up included); "steady" is a batch over the median step time, leaving out the first
(tracing) step; a median resists a shared machine's load spikes. "prep" is the seed's upfront
resize, outside images/s. "above start" is peak memory less the memory after importing TensorFlow:
what the model and the data cost. "outside fit" is build, compile, data preparation and Keras
Tuner's bookkeeping; "outside steps" adds what runs in `fit` between batches (checkpoint writes,
TensorBoard, iterator set-up); "1st steps" is each fit's first training and validation step, where
the graphs are traced. Tiny trials overweight these fixed costs: --study-full measures them at the
preset's own sizes, where the issue's 5% target applies.

Run: `alexnet-search bench [--images 10000] [--data-dir DIR]`, or `python -m alexnet_search.bench`.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import pickle
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import UserError
from .plan import format_duration

VARIANTS = {"seed": "seed's way: upfront resize, numpy arrays", "ours": "ours: uint8 + numpy batches, resize in model"}
_IMPORTED = time.monotonic()  # "process start": a child imports this module first, before TensorFlow
_CHILD_FLAGS = ("images", "image_size", "batch_size", "steps", "width", "config", "data_dir",
                "trials_memory", "study_images", "study_full")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--images", type=int, default=512, help="training images each variant holds (default 512: the "
        "whole bench takes about 5 minutes on 2 CPU cores; the issue's memory target is stated at 10000)")
    arg("--image-size", type=int, default=128, help="size the model trains at (default 128)")
    arg("--batch-size", type=int, default=128, help="batch size of both variants (default 128)")
    arg("--steps", type=int, default=None, help="training steps per variant (default: two epochs of --images)")
    arg("--width", type=float, default=1.0, help="width multiplier of the benchmarked AlexNet (default 1.0)")
    arg("--config", default="tuning/cpu.toml",
        help="preset giving the search space and the study's Hyperband settings (default: tuning/cpu.toml)")
    arg("--data-dir", default=None, help="CIFAR-10 python-batch folder; default: $CIFAR10_DIR, else "
        "synthetic images (a benchmark never downloads)")
    arg("--trials-memory", type=int, default=20,
        help="the study runs at least this many trials, with memory after each (default 20)")
    arg("--study-images", type=int, default=256, help="training images of the tiny study, at width 0.125; "
        "validation takes a quarter as many again (default 256)")
    arg("--study-full", action="store_true", help="run the study at the preset's own sizes and width (the 5%% "
        "overhead target; about 30 minutes for cpu.toml on 2 cores)")
    arg("--backends", default=None, help="Keras backends to measure side by side, comma-separated (default: "
        "every installed one of tensorflow and jax); the seed's way runs on the first")
    arg("--skip-search", action="store_true", help="skip the study (first step, time outside fit, memory)")
    arg("--skip-variants", action="store_true", help="skip the seed-vs-ours throughput runs")
    arg("--output", default=None, help="JSON file for every figure (default: results/bench-<timestamp>.json)")


def rss_mb() -> float:
    """Resident memory now (VmRSS, Linux), in MB."""
    status = Path("/proc/self/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


def forward_flops(model) -> int:
    """One image's forward pass: 2 x the multiply-adds of every Conv2D and Dense, from the built
    shapes. Batch norm, pooling, activations and the resize add a few percent and are left out."""
    from keras import layers

    macs = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, _ = layer.kernel.shape
            macs += math.prod(layer.output.shape[1:]) * kh * kw * cin
        elif isinstance(layer, layers.Dense):
            macs += math.prod(layer.kernel.shape)
    return 2 * macs


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul here, best of `repeats` (the machine may be shared)."""
    from keras import ops, random

    a, b = random.normal((n, n), seed=1), random.normal((n, n), seed=2)
    float(ops.matmul(a, b)[0, 0])  # warm-up: thread pools, kernel choice
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        float(ops.matmul(a, b)[0, 0])  # reading a value waits for the product
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def throughput(start: float, ends: list[float], sizes: list[int], steps_per_epoch: int) -> tuple[float, float]:
    """(first epoch, steady) images/s from `fit`'s start and each step's end.

    The first epoch counts from the call, tracing included. Steady is a full batch over the median
    duration of the full-batch steps after the first (the tracing one): a median, because a shared
    machine's load spikes would otherwise decide a short run's figure.
    """
    k = min(steps_per_epoch, len(ends))
    first = sum(sizes[:k]) / (ends[k - 1] - start)
    full = [ends[i] - ends[i - 1] for i in range(1, len(ends)) if sizes[i] == max(sizes)]
    return first, (max(sizes) / float(np.median(full)) if full else first)


def training_images(n: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` CIFAR-10 training images, or random uint8 ones where no folder is given."""
    from .data import source_from

    source = source_from(data_dir)
    if source.folder is None:  # never Keras' download: a benchmark must run offline
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    x, y = source.train()
    if len(x) < n:
        raise UserError(f"--images {n} is more than the {len(x)} training images in {source.folder}")
    return x[:n].copy(), y[:n].copy()  # copies, so the rest of the batch files is freed


def upfront_resize(x: np.ndarray, size: int, chunk: int = 500) -> np.ndarray:
    """The seed's preprocessing: all images at size x size, float32 in [0, 1], in one array.

    Filled a chunk at a time into one preallocated array, the most frugal form of the seed's way
    (resizing the whole array at once holds two more full copies): the memory ratio printed is a
    lower bound on the saving.
    """
    from keras import ops

    out = np.empty((len(x), size, size, 3), np.float32)
    for i in range(0, len(x), chunk):
        resized = ops.image.resize(ops.cast(x[i:i + chunk], "float32"), (size, size))
        out[i:i + chunk] = ops.convert_to_numpy(resized) / 255
    return out


def seed_model(ours, image_size: int, hp, jit_compile: bool):
    """The seed's model: float32 input at image_size, in-model augmentation, then the *same layer
    objects* as `ours` from conv1 on (shared, not replicated), so the two stacks cannot differ."""
    import keras
    from keras import layers

    from .model import compile_alexnet

    inputs = keras.Input((image_size, image_size, 3), name="resized_image")
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomTranslation(hp.translate, hp.translate)(x)  # reflect fill, like ours' reflect-padded crops
    names = [layer.name for layer in ours.layers]
    for layer in ours.layers[names.index("conv1"):]:
        x = layer(x)
    return compile_alexnet(keras.Model(inputs, x, name="alexnet_seed_way"), hp, jit_compile=jit_compile)


def measure_variant(variant: str, images: int, image_size: int, batch_size: int, steps: int,
                    width: float, config: str, data_dir: str | None = None, say=print) -> dict:
    """Train one variant for `steps` steps in this process; its figures, JSON-ready."""
    import keras

    from .data import TrainingSet
    from .model import build_alexnet, compile_alexnet
    from .space import Hyperparameters

    start_rss = rss_mb()
    keras.utils.set_random_seed(1)
    # float32, and XLA only where the backend always uses it (JAX): this compares input pipelines,
    # and on a CPU the search turns XLA and mixed precision off anyway (distribute.speed_options).
    jit = keras.backend.backend() == "jax"
    hp = Hyperparameters()  # the seed's
    model = compile_alexnet(build_alexnet(hp, image_size=image_size, width_multiplier=width), hp, jit_compile=jit)
    flops, gflops = forward_flops(model), matmul_gflops()
    say(f"    matmul {gflops:.0f} GFLOP/s; model {flops / 1e9:.3f} GFLOP forward per image")
    x, y = training_images(images, data_dir)

    prep = time.perf_counter()
    if variant == "seed":
        model = seed_model(model, image_size, hp, jit)
        say(f"    resizing {images} images to {image_size}x{image_size} float32 up front")
        x = upfront_resize(x, image_size)
        train = lambda **kw: model.fit(x, y, batch_size=batch_size, shuffle=True, **kw)  # noqa: E731
    else:
        batches = TrainingSet(x, y, batch_size, seed=1).batches(hp)
        train = lambda **kw: model.fit(batches, shuffle=False, **kw)  # noqa: E731
    prep = time.perf_counter() - prep

    ends: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())
            if len(ends) >= steps:
                self.model.stop_training = True  # Keras 3 stops mid-epoch

        def on_epoch_end(self, epoch, logs=None):
            say(f"    epoch {epoch + 1}: {len(ends)}/{steps} steps, {ends[-1] - start:.1f}s")

    per_epoch = math.ceil(images / batch_size)
    say(f"    training {steps} steps of {batch_size} ({per_epoch} per epoch)")
    start = time.perf_counter()
    train(epochs=math.ceil(steps / per_epoch), verbose=0, callbacks=[StepTimer()])
    sizes = [min(batch_size, images - (i % per_epoch) * batch_size) for i in range(len(ends))]
    first, steady = throughput(start, ends, sizes, per_epoch)
    return {
        "variant": variant, "backend": keras.backend.backend(), "images": images, "image_size": image_size, "batch_size": batch_size,
        "steps": len(ends), "width": width, "forward_flops": flops, "matmul_gflops": gflops,
        "prep_s": prep, "fit_s": ends[-1] - start, "first_epoch_images_per_s": first, "images_per_s": steady,
        "start_rss_mb": start_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_mb": x.nbytes / 1e6, "data_kind": f"{x.dtype} {x.shape[1]}x{x.shape[2]}",
    }


def study_config(base: str | Path, folder: Path, min_trials: int, images: int = 256, full: bool = False) -> Path:
    """A preset extending `base` with enough Hyperband iterations for `min_trials` trials and,
    unless `full`, tiny sizes. `load_config` is the only way to a Config, hence a TOML file."""
    from .config import load_config
    from .plan import hyperband_schedule

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

    from .config import load_config
    from .plan import schedule_for
    from .search import run_search
    from .study import study_for

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
    run_search(config, study_for(folder, "bench"), source, overwrite=True, out=_TrialLines(say),
               callbacks=(Recorder(),))
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
        "scheduled_trials": schedule_for(config).trials, "search_s": total, "first_step_s": first,
        "first_step_from_process_start_s": log[0]["first_step"] - _IMPORTED if log else None,
        "outside_fit": 1 - sum(t["fit_s"] for t in trials) / total,
        "outside_steps": 1 - sum(t["steps_s"] for t in trials) / total, "trials": trials, "rss_end_mb": rss_mb(),
    }


def run_study(args, say=print) -> dict:
    """The study child: a temporary folder, the data (--data-dir or random images), `study_figures`."""
    from .config import load_config
    from .data import Source, source_from

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


def _secs(seconds: float) -> str:
    return f"{seconds:.1f}s" if seconds < 60 else format_duration(seconds)


def _columns(rows: list[tuple], left: int = 1) -> list[str]:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(str(c).ljust(w) if i < left else str(c).rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
            for r in rows]


def ceiling_images_per_s(result: dict) -> float | None:
    """A variant's arithmetic limit: its process's matmul GFLOP/s over one trained image's FLOPs
    (3 x forward). Measured per process, so the limit moves with the load of a shared machine."""
    if "matmul_gflops" not in result:
        return None
    return result["matmul_gflops"] * 1e9 / (3 * result["forward_flops"])


def format_table(seed: dict, ours: dict) -> str:
    ok = "error" not in seed and "error" not in ours
    rows = [("variant", "prep", "matmul GFLOP/s", "1st epoch img/s", "steady img/s", "ours/seed", "of ceiling",
             "peak RSS", "above start", "images held")]
    lines, limits = [], []
    for name, r in (("seed", seed), ("ours", ours)):
        if "error" in r:
            lines.append(f"{VARIANTS[name]}: failed ({r['error']})")
            continue
        ceiling = ceiling_images_per_s(r)
        limits.append(f"{name} {ceiling:.1f} images/s ({r['matmul_gflops']:.0f} GFLOP/s)")
        rows.append((VARIANTS[name], _secs(r["prep_s"]), f"{r['matmul_gflops']:.0f}",
                     f"{r['first_epoch_images_per_s']:.1f}", f"{r['images_per_s']:.1f}",
                     f"{r['images_per_s'] / seed['images_per_s']:.2f}" if ok else "-",
                     f"{r['images_per_s'] / ceiling:.0%}", f"{r['peak_rss_mb']:,.0f} MB",
                     f"{r['peak_rss_mb'] - r['start_rss_mb']:,.0f} MB", f"{r['data_mb']:,.1f} MB {r['data_kind']}"))
    lines = _columns(rows) + lines
    if limits:
        flops = (ours if "error" not in ours else seed)["forward_flops"]
        lines.append(f"arithmetic ceiling = fp32 2048x2048 matmul GFLOP/s in each variant's process / "
                     f"{3 * flops / 1e9:.2f} GFLOP per trained image (3 x {flops / 1e9:.3f} forward): "
                     + ", ".join(limits))
    if ok:
        above = (ours["peak_rss_mb"] - ours["start_rss_mb"]) / (seed["peak_rss_mb"] - seed["start_rss_mb"])
        lines.append(f"ours/seed: {ours['images_per_s'] / seed['images_per_s']:.2f}x images/s steady, "
                     f"{ours['first_epoch_images_per_s'] / seed['first_epoch_images_per_s']:.2f}x over the first "
                     f"epoch; peak memory {ours['peak_rss_mb'] / seed['peak_rss_mb']:.2f}x ({above:.2f}x above start)")
    ref = seed if "error" not in seed else ours
    if ref.get("images", 10_000) < 10_000:
        size = ref["image_size"]
        lines.append(f"memory grows with --images: at 10,000 images the seed's float32 array alone is "
                     f"{10_000 * size * size * 12 / 1e9:.2f} GB, ours {10_000 * 3072 / 1e6:.1f} MB of uint8; "
                     f"the issue's 0.2x target is stated there (--images 10000)")
    return "\n".join(lines)


def format_study(study: dict) -> str:
    t = study["trials"]
    lines = [f"study: {study['config']} ({study['max_epochs']} max epochs, factor {study['factor']}, "
             f"{study['iterations']} iteration(s)): {len(t)} of {study['scheduled_trials']} scheduled trials, "
             f"{study['train_size']} + {study['val_size']} images at {study['image_size']}x{study['image_size']}, "
             f"width {study['width']}, {_secs(study['search_s'])} in all"]
    if study["first_step_s"] is not None:
        since = study["first_step_from_process_start_s"]
        lines.append(f"search start to the first trial's first step: {_secs(study['first_step_s'])}"
                     + (f" ({_secs(since)} from process start)" if since else ""))
    rows = [("trial", "epochs", "wall", "in fit", "1st steps", "outside fit", "outside steps", "RSS after")]
    rows += [(r["trial"], r["epochs"], _secs(r["wall_s"]), _secs(r["fit_s"]), _secs(r["first_steps_s"]),
              f"{r['outside_fit']:.0%}", f"{r['outside_steps']:.0%}", f"{r['rss_mb']:,.0f} MB") for r in t]
    rows.append(("all", sum(r["epochs"] for r in t), _secs(study["search_s"]), _secs(sum(r["fit_s"] for r in t)),
                 _secs(sum(r["first_steps_s"] for r in t)), f"{study['outside_fit']:.0%}",
                 f"{study['outside_steps']:.0%}", f"{study['rss_end_mb']:,.0f} MB"))
    lines += _columns(rows, left=0)
    if len(t) > 1:
        growth = t[-1]["rss_mb"] - t[0]["rss_mb"]
        lines.append(f"resident memory after trial 1: {t[0]['rss_mb']:,.0f} MB, after trial {len(t)}: "
                     f"{t[-1]['rss_mb']:,.0f} MB ({growth:+,.0f} MB, {growth / (len(t) - 1):+.1f} MB per trial)")
    return "\n".join(lines)


def format_backends(report: dict) -> str:
    """Our pipeline and the study on each backend, side by side."""
    rows = [("backend", "steady img/s", "1st epoch img/s", "peak RSS", "trials", "1st steps per trial",
             "outside fit", "RSS per trial")]
    for name, r in report["backends"].items():
        ours, study = r.get("ours", {}), r.get("study", {})
        row = [name]
        row += (["failed", "-", "-"] if "error" in ours else
                [f"{ours['images_per_s']:.1f}", f"{ours['first_epoch_images_per_s']:.1f}",
                 f"{ours['peak_rss_mb']:,.0f} MB"]) if ours else ["-", "-", "-"]
        if study and "error" not in study:
            t = study["trials"]
            growth = (t[-1]["rss_mb"] - t[0]["rss_mb"]) / (len(t) - 1) if len(t) > 1 else 0.0
            row += [str(len(t)), _secs(sum(x["first_steps_s"] for x in t) / len(t)), f"{study['outside_fit']:.0%}",
                    f"{growth:+.1f} MB"]
        else:
            row += ["failed" if study else "-", "-", "-", "-"]
        rows.append(tuple(row))
    return "\n".join(["backends (1st steps: a new model's first training and validation step, where it is "
                      "traced and compiled):", *_columns(rows)])


def run_child(kind: str, argv: list[str], say=print, backend: str | None = None) -> dict:
    """`python -m alexnet_search.bench --child KIND ARGV`: its lines echoed, its last JSON line returned."""
    env = dict(os.environ)
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")]))
    result = None
    cmd = [sys.executable, "-m", "alexnet_search.bench", "--child", kind, *argv]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) as proc:
        for line in proc.stdout:
            if line.startswith("{"):
                result = json.loads(line)
            else:
                say(line.rstrip())
    if proc.returncode != 0 or result is None:
        killed = " (killed: out of memory?)" if proc.returncode == -9 else ""
        return {"error": f"exit status {proc.returncode}{killed}; its messages are above"}
    return result


def _child_argv(args) -> list[str]:
    argv = []
    for dest in _CHILD_FLAGS:
        value = getattr(args, dest)
        if value is not None and value is not False:
            argv += ["--" + dest.replace("_", "-")] + ([] if value is True else [str(value)])
    return argv


def _resolve(args) -> None:
    """Refuse sizes that cannot run; fill in the default step count."""
    for flag in ("images", "image_size", "batch_size", "steps", "trials_memory", "study_images"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1 (got {getattr(args, flag)})")
    if args.steps is None:
        args.steps = 2 * math.ceil(args.images / args.batch_size)


def run(args) -> int:
    from .data import source_from
    from .study import write_json_atomic

    _resolve(args)
    from . import backend

    here = [b for b in backend.installed() if b != "torch"]  # measured here: TensorFlow and JAX
    backends = args.backends.split(",") if args.backends else here
    missing = [b for b in backends if b not in here]
    if missing or not backends:
        raise UserError(f"--backends {args.backends}: {', '.join(missing) or 'none'} not installed here; "
                        f"installed: {', '.join(here) or 'none'}")
    source = source_from(args.data_dir)  # a wrong folder fails here, before anything runs
    say = lambda line: print(line, flush=True)  # noqa: E731
    say(f"bench: {args.images} images at {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{args.steps} steps per variant, width {args.width}; backends {', '.join(backends)}; data: "
        f"{source.describe() if source.folder else 'random images (no --data-dir or $CIFAR10_DIR)'}")
    started, phase, tables = time.monotonic(), 0, []
    phases = (0 if args.skip_variants else 1 + len(backends)) + (0 if args.skip_search else len(backends))
    report: dict = {"settings": {k: getattr(args, k) for k in _CHILD_FLAGS},
                    "written": datetime.now().isoformat(timespec="seconds"), "backends": {b: {} for b in backends}}
    if not args.skip_variants:
        phase += 1
        say(f"[{phase}/{phases}] {VARIANTS['seed']} on {backends[0]} (own process) ...")
        report["seed"] = run_child("seed", _child_argv(args), say, backends[0])
        for b in backends:
            phase += 1
            say(f"[{phase}/{phases}] {VARIANTS['ours']} on {b} (own process) ...")
            report["backends"][b]["ours"] = run_child("ours", _child_argv(args), say, b)
        report["ours"] = report["backends"][backends[0]]["ours"]  # the seed's way's own backend
        report["ceiling_images_per_s"] = {v: ceiling_images_per_s(report[v]) for v in VARIANTS}
        tables.append(format_table(report["seed"], report["ours"]))
    if not args.skip_search:
        for b in backends:
            phase += 1
            say(f"[{phase}/{phases}] Hyperband study through run_search on {b}, at least {args.trials_memory} "
                f"trials ...")
            study = report["backends"][b]["study"] = run_child("study", _child_argv(args), say, b)
            tables.append(f"study on {b} failed: {study['error']}" if "error" in study
                          else f"on {b}: " + format_study(study))
        report["study"] = report["backends"][backends[0]]["study"]
    if len(backends) > 1:
        tables.append(format_backends(report))
    output = Path(args.output or f"results/bench-{datetime.now():%Y%m%d-%H%M%S}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(output, report)
    say("\n" + "\n\n".join(tables))
    say(f"\nbench took {format_duration(time.monotonic() - started)}; every figure is in {output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m alexnet_search.bench`: the whole bench, or (--child) one measurement as JSON."""
    parser = argparse.ArgumentParser(prog="python -m alexnet_search.bench", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--child", choices=("seed", "ours", "study"),
                        help="internal: run one measurement in this process and print its JSON")
    args = parser.parse_args(argv)
    try:
        if args.child is None:
            return run(args)
        from . import backend

        _resolve(args)
        backend.start()
        say = lambda line: print(line, flush=True)  # noqa: E731
        result = run_study(args, say) if args.child == "study" else measure_variant(
            args.child, args.images, args.image_size, args.batch_size, args.steps, args.width, args.config,
            args.data_dir, say)
        print(json.dumps(result), flush=True)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
