"""What `search`, `retrain-best` and `baseline` do in this process: its role decided once (a single
process, a chief or a worker: `cluster.role`), the checks that need no Keras before the seconds of
importing it, the data read once, then the phases in order. `cli` parses; `launcher` starts a chief
and its workers, each of which comes back here.

No Keras at import: a refused command (a mistyped preset, a worker of another study) says so at once.
"""

from __future__ import annotations

import functools
from pathlib import Path

from . import backend, cluster, launcher
from .config import Config, require_baselines
from .study import Study, require_chiefs_search, require_chiefs_versions


@functools.cache
def start_keras() -> None:
    """Import Keras on its backend (seconds: TensorFlow alone takes 5 to 10 on 2 cores), once.

    Commands that read a preset call this after the preset and the study are checked, so that a
    mistyped key or a study of another search is refused at once, not after the import.
    """
    backend.start()


def launch(command: str, child_args: list[str], workers: int | str, host: str, port: int, study: Study) -> int:
    """`--workers N`: a chief and N workers of `alexnet-search COMMAND CHILD_ARGS` on this machine;
    their exit status. Call the command's `check_*` first: what a single process refuses in one
    line, the launcher refuses the same way, before any process or log folder."""
    return launcher.launch_local(child_args, workers, host, port, study.root / "logs", command=command)


def _check_data(data_dir: str | None, test: bool = False) -> None:
    """The data folder read and checked as the chief will read it (a download is the chief's)."""
    from .cifar import source_from

    source = source_from(data_dir)
    if source.folder is not None:
        source.train()
        if test:
            source.test()


def _check_free(study: Study, what: str) -> None:
    """UserError naming the process that holds the study's `what`, as the chief would give."""
    from . import locks

    with locks.held(study.root, what):
        pass


def check_search(config: Config, study: Study, data_dir: str | None, overwrite: bool, host: str, port: int) -> None:
    """What `search` refuses before it writes anything, asked without Keras (for `--workers`); the
    study's lock last, as its file is the one thing a check leaves."""
    from .study import check_search as check_study

    cluster.check_ports(host, port)
    _check_data(data_dir)
    check_study(study, config, overwrite)
    _check_free(study, "search")


def check_retrain(config: Config, study: Study, data_dir: str | None, origin: str | None, pool: list[str],
                  results_dir: str | Path, host: str, port: int) -> None:
    """What `retrain-best` refuses before it trains, asked without Keras (for `--workers`)."""
    from .adoption import hyperparameters_from, pooled_best, read_adopted
    from .study import require_same_network, require_study, study_for

    cluster.check_port(host, port)
    if origin is not None:
        hyperparameters_from(origin, study.root.parent, config)
    else:
        require_study(study)
        require_same_network(study, config)
        pooled_best(study, [study_for(results_dir, n) for n in pool]) if pool else read_adopted(study)
    _check_data(data_dir, test=True)
    _check_free(study, "retrain-best")


def check_baseline(config: Config, study: Study, data_dir: str | None, names: list[str] | None, host: str,
                   port: int) -> None:
    """What `baseline` refuses before it trains, asked without Keras (for `--workers`)."""
    from .study import require_same_network

    cluster.check_port(host, port)
    require_same_network(study, config)
    require_baselines(config, names)
    _check_data(data_dir, test=True)
    _check_free(study, "baselines")


def search(config: Config, study: Study, data_dir: str | None, overwrite: bool, chief: bool, worker: str | None,
           host: str, port: int) -> int:
    """The search, then its finalists' confirmation, in this process's role. A worker restarted
    after the search ended joins the confirmation directly."""
    cluster.set_role(chief, worker, host, port)
    launcher.leave_with_launcher()
    role = cluster.role()
    if role == "chief":
        cluster.check_ports(host, port, hold=True)  # both oracles' ports, held from now on, before Keras' import
    phase = "search"
    if role == "worker":
        # Before Keras' import: a worker started before its chief says at once that it waits (and
        # imports Keras while it does), and one of another search is refused at once.
        phase = cluster.worker_phase(host, port, meanwhile=start_keras)
        require_chiefs_search(study, config)
    start_keras()
    from .confirm.run import run_finalists
    from .cifar import source_from
    from .search import run_search
    from .training import Training

    source = source_from(data_dir)
    if role == "worker":
        require_chiefs_versions(study)
    # Read once for both phases. A chief trains nothing, so it takes no GPUs.
    training = Training.prepare(config, source, several_gpus=role != "chief")
    if phase == "search":
        tuner = run_search(config, study, training, overwrite=overwrite)
        if role == "worker" and config["confirm"]["finalists"]:
            cluster.await_finalists(host, port)
        run_finalists(config, study, training, tuner.oracle)
    else:
        run_finalists(config, study, training)
    return 0


def _seeds_role(host: str, port: int) -> None:
    """In a process of `--workers N` for retrain-best or baseline (or a single one): its role set
    from Keras Tuner's variables, its port checked (a chief) or its chief waited for (a worker)."""
    cluster.set_role(False, None, host, port)
    launcher.leave_with_launcher()
    if cluster.role() == "chief":
        cluster.check_port(host, port, hold=True)
    elif cluster.role() == "worker":
        cluster.worker_phase(host, port, meanwhile=start_keras)
    start_keras()


def retrain_best(config: Config, study: Study, data_dir: str | None, seeds: int, origin: str | None,
                 pool: list[str], results_dir: str | Path, host: str, port: int) -> int:
    _seeds_role(host, port)
    from .cifar import source_from
    from .retrain import retrain_best as run
    from .study import study_for

    run(config, study, source_from(data_dir), seeds=seeds, origin=origin,
        pool=[study_for(results_dir, name) for name in pool])
    return 0


def baseline(config: Config, study: Study, data_dir: str | None, seeds: int, names: list[str] | None,
             host: str, port: int) -> int:
    _seeds_role(host, port)
    from .cifar import source_from
    from .retrain import train_baseline

    train_baseline(config, study, source_from(data_dir), seeds=seeds, names=names)
    return 0
