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
from .config import Config
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
    their exit status."""
    return launcher.launch_local(child_args, workers, host, port, study.root / "logs", command=command)


def search(config: Config, study: Study, data_dir: str | None, overwrite: bool, chief: bool, worker: str | None,
           host: str, port: int) -> int:
    """The search, then its finalists' confirmation, in this process's role. A worker restarted
    after the search ended joins the confirmation directly."""
    cluster.set_role(chief, worker, host, port)
    launcher.leave_with_launcher()
    role = cluster.role()
    if role == "chief":
        cluster.check_ports(host, port)  # both oracles' ports, before the seconds of importing Keras
    phase = "search"
    if role == "worker":
        # Before Keras' import: a worker started before its chief says at once that it waits (and
        # imports Keras while it does), and one of another search is refused at once.
        phase = cluster.worker_phase(host, port, meanwhile=start_keras)
        require_chiefs_search(study, config)
    start_keras()
    from .confirm.run import run_finalists
    from .data import source_from
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
        cluster.check_port(host, port)
    elif cluster.role() == "worker":
        cluster.worker_phase(host, port, meanwhile=start_keras)
    start_keras()


def retrain_best(config: Config, study: Study, data_dir: str | None, seeds: int, origin: str | None,
                 pool: list[str], results_dir: str | Path, host: str, port: int) -> int:
    _seeds_role(host, port)
    from .data import source_from
    from .retrain import retrain_best as run
    from .study import study_for

    run(config, study, source_from(data_dir), seeds=seeds, origin=origin,
        pool=[study_for(results_dir, name) for name in pool])
    return 0


def baseline(config: Config, study: Study, data_dir: str | None, seeds: int, names: list[str] | None,
             host: str, port: int) -> int:
    _seeds_role(host, port)
    from .data import source_from
    from .retrain import train_baseline

    train_baseline(config, study, source_from(data_dir), seeds=seeds, names=names)
    return 0
