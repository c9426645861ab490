"""`alexnet-search`: the command line. Each command parses its flags, then calls one function
(`commands` for search, retrain-best and baseline).

Errors a user can fix print one line, `error: ...`, and exit with status 2; Ctrl-C exits with 130
and leaves the study resumable.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .errors import DiskFull, UserError, disk_full, disk_full_message

# Without --config: the seed's scale where a GPU trains, else the same space sized for a CPU
# (paper.toml would run for about a day on 2 cores).
GPU_CONFIG, CPU_CONFIG = "tuning/paper.toml", "tuning/cpu.toml"
DEFAULT_RESULTS = "results"


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (and exit 2) instead of usage plus message."""

    def error(self, message):
        self.exit(2, f"error: {message} (see `{self.prog} --help`)\n")


def _count(high: int):
    """An argparse type: a whole number from 1 to `high`. Every count has a ceiling, checked before
    anything is written (the preset's keys have theirs in config.py)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not 1 <= value <= high:
            raise argparse.ArgumentTypeError(f"must be from 1 to {high} (got {value})")
        return value

    return parse


_at_least_one = _count(10**9)  # the study seed and budgets: the preset's own bounds then apply (config.py)
_seed_runs = _count(1000)  # retrain seeds: each a full training run
_top = _count(10)  # CIFAR-10 has ten classes


def _workers(text: str) -> int | str:
    """N workers (at most 256: each is a process with its own copy of the model), or "auto"."""
    return "auto" if text == "auto" else _count(256)(text)


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port: {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (1-65535)")
    return value


def _study_args(p: argparse.ArgumentParser, with_data: bool = True, with_seeds: bool = False,
                with_seed: bool = False) -> None:
    p.add_argument("--config", default=None,
                   help=f"preset TOML file (default: {GPU_CONFIG} where the backend sees a GPU, else {CPU_CONFIG})")
    p.add_argument("--study", default=None,
                   help="study name: results go to RESULTS_DIR/STUDY/ (default: the preset's file name, e.g. cpu)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS,
                   help=f"folder holding all studies (default: {DEFAULT_RESULTS})")
    if with_data:
        p.add_argument("--data-dir", default=None,
                       help="CIFAR-10 python-batch folder (cifar-10-batches-py) for offline machines; "
                            "default: $CIFAR10_DIR, else download through Keras")
    if with_seeds:
        p.add_argument("--seeds", type=_seed_runs, default=1,
                       help="train this many times with different seeds and report mean and std (default 1)")
    if with_seed:
        p.add_argument("--seed", type=_at_least_one, default=None,
                       help="the study seed, over the preset's [study] seed: a second search of the same space "
                            "(give it another --study name) tells how much its result owes to chance")


def _workers_args(p: argparse.ArgumentParser, units: str) -> None:
    p.add_argument("--workers", type=_workers, default=0, metavar="N|auto",
                   help=f"run Keras Tuner's distributed tuning here: one chief and N worker processes training the "
                        f"{units}, spread over the GPUs (several share one when N is larger: each gets its part of "
                        f"its memory); 'auto' picks N from the GPUs' memory and the cores and says why; "
                        f"output prefixed and logged in STUDY/logs/")
    p.add_argument("--oracle-host", default=None,
                   help="the chief's address (default: the preset's [distributed] host, 127.0.0.1)")
    p.add_argument("--oracle-port", type=_port, default=None,
                   help="the chief's port (default: the preset's [distributed] port, 8000)")


def _budget_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--hyperband-iterations", type=_at_least_one, default=None, metavar="N",
                   help="Hyperband iterations, over the preset's; more than a finished study ran extends it "
                        "with its trials kept")
    p.add_argument("--max-trials", type=_at_least_one, default=None, metavar="N",
                   help="trials of a RandomSearch or Bayesian study ([search] tuner), over the preset's; more "
                        "than a finished study ran extends it")


def _start_keras() -> None:
    from .commands import start_keras

    start_keras()


def _config_path(args) -> str:
    """--config, or the default for this machine, said in the command's first line."""
    if args.config is not None:
        return args.config
    from . import backend

    _start_keras()  # the backend says which devices it sees
    gpus = backend.gpu_count()
    chosen = GPU_CONFIG if gpus else CPU_CONFIG
    print(f"preset: {chosen}, as " + (f"the backend sees {gpus} GPU(s)" if gpus else
          f"no GPU is visible ({GPU_CONFIG} is sized for one)") + "; --config (CONFIG=) chooses another", flush=True)
    args.config = chosen
    return chosen


def _load(args):
    """The preset (checked) and the study it names; Keras is not imported yet (`_start_keras`)."""
    from .config import load_config
    from .study import study_for

    config = load_config(_config_path(args)).with_overrides({
        "study": {"seed": getattr(args, "seed", None)},
        "search": {"hyperband_iterations": getattr(args, "hyperband_iterations", None),
                   "max_trials": getattr(args, "max_trials", None)},
    })
    return config, study_for(args.results_dir, config.name if args.study is None else args.study)


def _child_args(args, study, host: str, port: int, flags: tuple[str, ...]) -> list[str]:
    """The command line a launched chief and its workers get: this one's study, address and `flags`
    (attribute names, given where set), so that each of them resolves the same preset and study."""
    child = ["--config", args.config, "--study", study.name, "--results-dir", args.results_dir,
             "--oracle-host", host, "--oracle-port", str(port)]
    child += ["--data-dir", args.data_dir] if args.data_dir else []
    for flag in flags:
        value = getattr(args, flag)
        if value is not None and value is not False:
            child += ["--" + flag.replace("_", "-")] + ([] if value is True else [str(value)])
    return child


def cmd_search(args) -> int:
    from . import cluster, commands

    config, study = _load(args)
    host, port = cluster.oracle_address(args.oracle_host, args.oracle_port, config)
    serves = args.workers or args.chief or "chief" in os.environ.get(cluster.TUNER_ID, "")
    if serves and not cluster.is_loopback(host):
        print(f"warning: serving Keras Tuner's oracle on {host}:{port}, which other hosts can reach; its gRPC "
              f"port has no authentication, so anyone there can read and steer this study", file=sys.stderr)
    if args.workers:
        if args.chief or args.worker is not None:
            raise UserError("--workers starts its own chief and workers; drop --chief/--worker")
        commands.check_search(config, study, args.data_dir, args.overwrite, host, port)
        child = _child_args(args, study, host, port, ("overwrite", "seed", "hyperband_iterations", "max_trials"))
        return commands.launch("search", child, args.workers, host, port, study)
    return commands.search(config, study, args.data_dir, args.overwrite, args.chief, args.worker, host, port)


def cmd_retrain_best(args) -> int:
    from . import cluster, commands

    config, study = _load(args)
    if args.origin and args.pool:
        raise UserError("--from and --pool both choose what to retrain; give one")
    host, port = cluster.oracle_address(args.oracle_host, args.oracle_port, config)
    if args.workers:
        commands.check_retrain(config, study, args.data_dir, args.origin, args.pool or [], args.results_dir, host,
                               port)
        child = _child_args(args, study, host, port, ("seeds", "seed"))
        child += (["--from", args.origin] if args.origin else []) + [a for n in args.pool or [] for a in ("--pool", n)]
        return commands.launch("retrain-best", child, args.workers, host, port, study)
    return commands.retrain_best(config, study, args.data_dir, args.seeds, args.origin, args.pool or [],
                                 args.results_dir, host, port)


def cmd_baseline(args) -> int:
    from . import cluster, commands

    config, study = _load(args)
    host, port = cluster.oracle_address(args.oracle_host, args.oracle_port, config)
    if args.workers:
        commands.check_baseline(config, study, args.data_dir, args.name, host, port)
        child = _child_args(args, study, host, port, ("seeds", "seed")) + [a for n in args.name or [] for a in ("--name", n)]
        return commands.launch("baseline", child, args.workers, host, port, study)
    return commands.baseline(config, study, args.data_dir, args.seeds, args.name, host, port)


def cmd_report(args) -> int:
    _, study = _load(args)
    _start_keras()
    from .report import write_report
    from .study import study_for

    others = [study_for(args.results_dir, name) for name in args.against or []]
    path = write_report(study, others)
    print(f"wrote {path} (plots in {path.parent / 'report'}/)")
    return 0


def cmd_plan(args) -> int:
    from .config import load_config
    from .plan import print_plan

    config = load_config(_config_path(args)).with_overrides({"search": {
        "hyperband_iterations": args.hyperband_iterations, "max_trials": args.max_trials}})
    print_plan(config, args.workers, estimate=not args.no_estimate, start_keras=_start_keras)
    return 0


def cmd_predict(args) -> int:
    from . import backend
    from .predict import predict
    from .files import restore_dir
    from .study import study_for

    if args.model:
        model_path = Path(args.model)
    else:
        name = args.study or Path(GPU_CONFIG if backend.gpu_count() else CPU_CONFIG).stem
        best = study_for(args.results_dir, name).best_dir
        restore_dir(best)
        model_path = best / "model.keras"
    for path, top in zip(args.images, predict(model_path, args.images, top=args.top)):
        print(f"{path}: " + ", ".join(f"{name} {p:.1%}" for name, p in top))
    return 0


def cmd_tensorboard(args) -> int:
    import shutil

    exe = shutil.which("tensorboard") or str(Path(sys.executable).with_name("tensorboard"))
    if not Path(exe).exists():
        raise UserError("tensorboard is not installed in this environment; run `make` to create it")
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    # Loopback only: TensorBoard has no authentication.
    os.execv(exe, [exe, "--logdir", args.results_dir, "--host", "127.0.0.1", "--port", str(args.port)])
    return 0  # not reached


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="alexnet-search",
        description="Hyperband search over AlexNet's hyperparameters on CIFAR-10, with Keras Tuner.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("search", help="run or resume a Hyperband study and confirm its finalists",
                       description="Run the preset's Hyperband search into RESULTS_DIR/STUDY/, then train its best "
                                   "[confirm] finalists again with [confirm] seeds seeds each, beside the preset's "
                                   "[confirm] baselines, and adopt the best mean validation score (a baseline when no "
                                   "finalist beats it). Running the same command again resumes either.")
    _study_args(p, with_seed=True)
    _budget_args(p)
    p.add_argument("--overwrite", action="store_true",
                   help="discard the study's existing trials and start over (needed when the preset's "
                        "search space or sizes changed)")
    _workers_args(p, "trials")
    p.add_argument("--chief", action="store_true",
                   help="be the chief of a multi-host study: serve the oracle (start workers with --worker)")
    p.add_argument("--worker", metavar="ID", default=None,
                   help="be worker ID (e.g. 1, or any id without 'chief') of the chief at --oracle-host")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("retrain-best", help="retrain the adopted hyperparameters, test once, export",
                       description="Train the study's adopted hyperparameters (its best confirmed finalist, "
                                   "best_hyperparameters.json) for the preset's retrain epochs, evaluate once on the "
                                   "test set, export to RESULTS_DIR/STUDY/best/.")
    _study_args(p, with_seeds=True, with_seed=True)
    p.add_argument("--from", dest="origin", metavar="STUDY|FILE", default=None,
                   help="retrain another study's best hyperparameters (e.g. --from cpu, searched at CPU size) "
                        "or a hyperparameters.json file's, at this preset's sizes and epochs")
    p.add_argument("--pool", action="append", default=None, metavar="STUDY",
                   help="retrain the best confirmed finalist of this study and STUDY (repeat for several studies "
                        "of the same preset, e.g. other study seeds): their answers compete on equal terms")
    _workers_args(p, "seeds side by side (a seed per worker)")
    p.set_defaults(func=cmd_retrain_best)

    p = sub.add_parser("baseline", help="train the preset's named baselines on retrain-best's budget",
                       description="Train each [baselines.NAME] of the preset (the seed's values; the AlexNet "
                                   "paper's recipe; your own) through retrain-best's pipeline and epochs, evaluate "
                                   "once on the test set, and write RESULTS_DIR/STUDY/baselines/NAME/: the fair "
                                   "comparisons for the tuned model.")
    _study_args(p, with_seeds=True, with_seed=True)
    p.add_argument("--name", action="append", default=None, metavar="NAME",
                   help="train only this baseline (repeat for several; default: every one in the preset)")
    _workers_args(p, "baselines' seeds side by side (a seed per worker)")
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("report", help="write RESULTS_DIR/STUDY/report.md with plots",
                       description="Write a Markdown report of the study (best trials, plots per hyperparameter, "
                                   "learning curves, warnings, tuned vs baseline test accuracy) beside its results.")
    _study_args(p, with_data=False)
    p.add_argument("--against", action="append", default=None, metavar="STUDY",
                   help="compare with another study of the same space (repeat for several): another study "
                        "seed tells whether the search's answer holds, another tuner which finds more")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("plan", help="print the Hyperband schedule and an estimated duration",
                       description="Print the preset's Hyperband schedule (brackets, rounds, trials, epochs) "
                                   "and estimate its duration from a few timed training steps on this machine.")
    p.add_argument("--config", default=None,
                   help=f"preset TOML file (default: {GPU_CONFIG} where the backend sees a GPU, else {CPU_CONFIG})")
    _budget_args(p)
    p.add_argument("--no-estimate", action="store_true", help="skip the timed training steps")
    p.add_argument("--workers", type=_workers, default=0, metavar="N|auto",
                   help="estimate for N workers side by side, as `search --workers N` runs them (auto: as many as "
                        "`search --workers auto` starts here); each timed at its share of the cores")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("predict", help="classify image files with a study's exported model",
                       description="Print the top CIFAR-10 classes of each image (PNG/JPEG, any size).")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--study", default=None, help="study whose best/model.keras to use (default: paper where the "
                                                 "backend sees a GPU, else cpu: the default preset's study)")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS, help=f"folder holding all studies (default: {DEFAULT_RESULTS})")
    p.add_argument("--model", default=None, help="path to a .keras file instead of the study's")
    p.add_argument("--top", type=_top, default=3, help="classes to show per image (default 3)")
    p.set_defaults(func=cmd_predict)

    from . import bench

    p = sub.add_parser("bench", help="benchmark our pipeline against the seed's way, and trial overhead",
                       description=(bench.__doc__ or "").split("\n\n")[0].strip("`"))
    bench.add_arguments(p)
    p.set_defaults(func=bench.run)

    p = sub.add_parser("tensorboard", help="serve TensorBoard for all studies on localhost",
                       description="Serve TensorBoard over RESULTS_DIR on 127.0.0.1 only.")
    p.add_argument("--results-dir", default=DEFAULT_RESULTS, help=f"folder holding all studies (default: {DEFAULT_RESULTS})")
    p.add_argument("--port", type=_port, default=6006, help="port (default 6006)")
    p.set_defaults(func=cmd_tensorboard)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        # Keras is imported with its backend's start-up chatter held back, so that an error stays
        # one line; commands that read a preset import it once the preset has been checked.
        if args.func not in (cmd_search, cmd_retrain_best, cmd_baseline, cmd_report, cmd_plan, cmd_tensorboard):
            _start_keras()
        return args.func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DiskFull as exc:  # in a trial: the trial is left unfinished, to re-run on resume
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Out of space in a state write: one line. Every result file is replaced whole (files.py),
        # so nothing half-written is left to resume from. Any other OSError keeps its traceback.
        if (full := disk_full(exc)) is None:
            raise
        print(f"error: {disk_full_message(full, getattr(args, 'results_dir', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
