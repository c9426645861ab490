"""`alexnet-search bench`: our input pipeline against the seed's, what a search spends outside `fit`,
and the fused batch norm against Keras' own.

1. Throughput and memory (`pipeline`): the seed's way (upfront resize, float32 arrays, in-model
   augmentation) against ours (uint8 numpy batches, resize in the model), same model and steps,
   each in its own process, beside its arithmetic ceiling. On a shared machine the load moves
   between the two runs: "of ceiling" corrects for it, raw images/s do not. Then ours again with
   glibc's default malloc, which returns freed memory to the kernel (what every command avoids:
   `backend.keep_freed_memory`), with the page faults per step of both.
2. A search's overhead (`overhead`): a tiny Hyperband study through `search.run_search`, per
   trial inside and outside `fit`, and memory after each trial.
3. Batch norm (`batchnorm`): the preset's network with Keras' batch norm against the fused one,
   a training step of each in turn in one process, and the ratio of their median step times.
All run on every installed backend (--backends), side by side; `--skip-variants --skip-search`
leaves the batch norm alone (under a minute).

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
This module runs each measurement in its own process per backend and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from .common import IMPORTED, columns, secs  # noqa: F401, I001  (first: IMPORTED is taken before Keras loads)
from ..errors import UserError
from ..console import format_duration, printer
from .batchnorm import format_batchnorm, measure_batchnorm
from .overhead import format_study, run_study
from .pipeline import VARIANTS, ceiling_images_per_s, format_malloc, format_table, measure_variant

_CHILD_FLAGS = ("images", "image_size", "batch_size", "steps", "width", "config", "data_dir",
                "trials_memory", "study_images", "study_full", "batchnorm_steps")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    arg = parser.add_argument
    arg("--images", type=int, default=512, help="training images each variant holds (default 512: the "
        "whole bench takes about 5 minutes on 2 CPU cores; the issue's memory target is stated at 10000)")
    arg("--image-size", type=int, default=128, help="size the model trains at (default 128)")
    arg("--batch-size", type=int, default=128, help="batch size of both variants (default 128)")
    arg("--steps", type=int, default=None, help="training steps per variant (default: two epochs of --images)")
    arg("--width", type=float, default=1.0, help="width multiplier of the benchmarked AlexNet (default 1.0)")
    # cpu-quick.toml: 23 mostly short trials per iteration, where time outside `fit` weighs most.
    arg("--config", default="tuning/cpu-quick.toml",
        help="preset giving the search space and the study's Hyperband settings (default: tuning/cpu-quick.toml)")
    arg("--data-dir", default=None, help="CIFAR-10 python-batch folder; default: $CIFAR10_DIR, else "
        "synthetic images (a benchmark never downloads)")
    arg("--trials-memory", type=int, default=20,
        help="the study runs at least this many trials, with memory after each (default 20)")
    arg("--study-images", type=int, default=256, help="training images of the tiny study, at width 0.125; "
        "validation takes a quarter as many again (default 256)")
    arg("--study-full", action="store_true", help="run the study at the preset's own sizes and width (the 5%% "
        "overhead target; about 30 minutes for cpu-quick.toml on 2 cores)")
    arg("--backends", default=None, help="Keras backends to measure side by side, comma-separated (default: "
        "every installed one of tensorflow and jax); the seed's way runs on the first")
    arg("--skip-search", action="store_true", help="skip the study (first step, time outside fit, memory)")
    arg("--skip-variants", action="store_true", help="skip the seed-vs-ours throughput runs")
    arg("--skip-batchnorm", action="store_true", help="skip Keras' batch norm against the fused one")
    arg("--batchnorm-steps", type=int, default=30,
        help="training steps of each batch norm variant, at --config's network and --batch-size (default 30)")
    arg("--output", default=None, help="JSON file for every figure (default: results/bench-<timestamp>.json)")


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
            row += [str(len(t)), secs(sum(x["first_steps_s"] for x in t) / len(t)), f"{study['outside_fit']:.0%}",
                    f"{growth:+.1f} MB"]
        else:
            row += ["failed" if study else "-", "-", "-", "-"]
        rows.append(tuple(row))
    return "\n".join(["backends (1st steps: a new model's first training and validation step, where it is "
                      "traced and compiled):", *columns(rows)])


def run_child(kind: str, argv: list[str], say=print, backend: str | None = None, extra_env: dict | None = None) -> dict:
    """`python -m alexnet_search.bench --child KIND ARGV`: its lines echoed, its last JSON line returned."""
    env = {**os.environ, **(extra_env or {})}
    if backend:
        env["KERAS_BACKEND"] = backend
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")]))
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
    for flag in ("images", "image_size", "batch_size", "steps", "trials_memory", "study_images", "batchnorm_steps"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1 (got {getattr(args, flag)})")
    if args.steps is None:
        args.steps = 2 * math.ceil(args.images / args.batch_size)


def run(args) -> int:
    from ..cifar import source_from
    from ..files import write_json_atomic

    _resolve(args)
    from .. import backend

    here = [b for b in backend.installed() if b != "torch"]  # measured here: TensorFlow and JAX
    backends = args.backends.split(",") if args.backends else here
    missing = [b for b in backends if b not in here]
    if missing or not backends:
        raise UserError(f"--backends {args.backends}: {', '.join(missing) or 'none'} not installed here; "
                        f"installed: {', '.join(here) or 'none'}")
    source = source_from(args.data_dir)  # a wrong folder fails here, before anything runs
    say = printer()
    say(f"bench: {args.images} images at {args.image_size}x{args.image_size}, batch {args.batch_size}, "
        f"{args.steps} steps per variant, width {args.width}; backends {', '.join(backends)}; data: "
        f"{source.describe() if source.folder else 'random images (no --data-dir or $CIFAR10_DIR)'}")
    started, phase, tables = time.monotonic(), 0, []
    phases = ((0 if args.skip_variants else 2 + len(backends)) + (0 if args.skip_search else len(backends))
              + (0 if args.skip_batchnorm else len(backends)))
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
        phase += 1
        say(f"[{phase}/{phases}] {VARIANTS['ours']} on {backends[0]}, glibc's default malloc (own process) ...")
        report["ours_glibc_malloc"] = run_child("ours", _child_argv(args), say, backends[0],
                                                {"ALEXNET_SEARCH_MALLOC": "glibc"})
        tables.append(format_malloc(report["ours"], report["ours_glibc_malloc"]))
    if not args.skip_search:
        for b in backends:
            phase += 1
            say(f"[{phase}/{phases}] Hyperband study through run_search on {b}, at least {args.trials_memory} "
                f"trials ...")
            study = report["backends"][b]["study"] = run_child("study", _child_argv(args), say, b)
            tables.append(f"study on {b} failed: {study['error']}" if "error" in study
                          else f"on {b}: " + format_study(study))
        report["study"] = report["backends"][backends[0]]["study"]
    if not args.skip_batchnorm:
        for b in backends:
            phase += 1
            say(f"[{phase}/{phases}] batch norm, Keras' layer against the fused one, on {b} (own process) ...")
            result = report["backends"][b]["batchnorm"] = run_child("batchnorm", _child_argv(args), say, b)
            tables.append(f"batch norm on {b} failed: {result['error']}" if "error" in result
                          else format_batchnorm(result))
    if len(backends) > 1 and not (args.skip_variants and args.skip_search):  # else a table of dashes
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
    parser.add_argument("--child", choices=("seed", "ours", "study", "batchnorm"),
                        help="internal: run one measurement in this process and print its JSON")
    args = parser.parse_args(argv)
    try:
        if args.child is None:
            return run(args)
        from .. import backend

        _resolve(args)
        backend.start()
        say = printer()
        if args.child == "study":
            result = run_study(args, say)
        elif args.child == "batchnorm":
            result = measure_batchnorm(args.config, args.batchnorm_steps, args.batch_size, say)
        else:
            result = measure_variant(args.child, args.images, args.image_size, args.batch_size, args.steps,
                                     args.width, args.data_dir, say)
        print(json.dumps(result), flush=True)
        return 0
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

