"""Shared fixtures: a tiny CIFAR-10 folder written by the test, tiny presets, the CLI runner."""

from __future__ import annotations

import contextlib
import errno
import os
import pickle
import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from alexnet_search.space import Hyperparameters

REPO = Path(__file__).resolve().parents[1]
# A network of a few thousand weights: trains in milliseconds, exercises every layer.
TINY_NET = Hyperparameters(conv1_filters=8, conv2_filters=8, conv3_filters=8, conv4_filters=8, conv5_filters=8,
                           dense_units=16)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if os.environ.get("KERAS_BACKEND") == "jax":
    # As the CLI does: tests that train in this process (a seeded search twice) reuse the programs
    # XLA compiled for the same widths instead of compiling each again (minutes on 2 cores).
    from alexnet_search.backend import keep_compiled_programs

    keep_compiled_programs()


def options_without_help(help_text: str) -> list[str]:
    """The options an argparse help text lists with no help of their own."""
    lines = help_text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        entry = re.match(r"^  (-\S.*?)(\s{2,}\S.*)?$", line)
        if not entry or entry.group(2):
            continue
        following = lines[i + 1] if i + 1 < len(lines) else ""
        if re.match(r"^ {4,}\S", following):  # argparse moves a long option's help to the next line
            continue
        missing.append(entry.group(1).split()[0].rstrip(","))
    return missing


def write_batch(path: Path, images: np.ndarray, labels, protocol: int = 2) -> None:
    """A batch file in CIFAR-10's python layout: rows are the red, green, blue planes."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), 3072)
    batch = {
        b"batch_label": path.name.encode(),
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"img_{i}.png".encode() for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=protocol)


def synthetic_images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose colour depends on the class, so a few epochs learn something."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    palette = rng.integers(0, 256, (10, 3))
    noise = rng.normal(0, 40, (n, 32, 32, 3))
    images = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
    return images, labels


def make_cifar_dir(parent: Path) -> Path:
    """Two training batches of 300 images and a test batch of 200."""
    folder = parent / "cifar-10-batches-py"
    folder.mkdir()
    for i in (1, 2):
        write_batch(folder / f"data_batch_{i}", *synthetic_images(300, seed=i))
    write_batch(folder / "test_batch", *synthetic_images(200, seed=99))
    return folder


@pytest.fixture
def cifar_dir(tmp_path) -> Path:
    return make_cifar_dir(tmp_path)


@pytest.fixture
def shared_cifar() -> Path:
    """The real CIFAR-10 folder beside the checkout (or $CIFAR10_DIR); skipped where absent."""
    for candidate in (os.environ.get("CIFAR10_DIR"), REPO.parent / "shared/datasets/cifar-10-batches-py"):
        if candidate and (Path(candidate) / "test_batch").is_file():
            return Path(candidate)
    pytest.skip("no CIFAR-10 folder on this machine")


TINY_PRESET = """
extends = "{base}"

[data]
train_size = 256
val_size = 96
image_size = 32
batch_size = 64

[model]
width_multiplier = 0.125

[search]
# 2 brackets: 5 trials (4 configurations, 1 promoted), 7 epochs
max_epochs = 2
factor = 2

[retrain]
epochs = 2

[confirm]
# 0: the search's best is adopted at once (tests of the search alone); 2: 2 finalists and the paper's
# recipe (cpu.toml's [confirm] baselines) x 2 seeds x 2 epochs, then the leader's third (cpu.toml
# races from 1 seed: test_cluster's study and test_confirm's oracle tests run that)
finalists = {finalists}
seeds = 2
# Set here: cpu.toml's own would outlast this preset's retrain.
epochs = 2
"""


def make_tiny_config(parent: Path, finalists: int = 0) -> Path:
    """cpu.toml's search space on a tiny budget: 32x32, 256 images, 2-epoch Hyperband; with
    `finalists`, its finalists confirmed with 2 seeds each (4 more runs for 2)."""
    path = parent / "tiny.toml"
    path.write_text(TINY_PRESET.format(base=REPO / "tuning" / "cpu.toml", finalists=finalists))
    return path


@pytest.fixture
def tiny_config(tmp_path) -> Path:
    """The tiny preset adopting its search's best unconfirmed: for tests of the search itself."""
    return make_tiny_config(tmp_path)


@pytest.fixture
def tiny_confirmed_config(tmp_path) -> Path:
    """The tiny preset with 2 finalists confirmed by 2 seeds each, beside the paper's recipe."""
    return make_tiny_config(tmp_path, finalists=2)


def fresh_tuner(parent: Path, name: str):
    """(config, study, tuner): a new cpu.toml study `name` under `parent`, its tuner made as
    run_search makes it; nothing trained."""
    from alexnet_search.config import load_config
    from alexnet_search.search import make_tuner
    from alexnet_search.study import study_for

    config = load_config(REPO / "tuning" / "cpu.toml")
    study = study_for(parent, name)
    study.root.mkdir()
    return config, study, make_tuner(config, study)


@contextlib.contextmanager
def disk_full_at(monkeypatch, full: Callable[[Path], bool]):
    """Inside the block, renaming a file onto a path for which `full(path)` holds fails as a full
    disk does (ENOSPC): where every atomic write of the package puts its result in place."""
    real = os.replace

    def replace(src, dst, *args, **kwargs):
        if full(Path(dst)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", replace)
    try:
        yield
    finally:
        monkeypatch.setattr(os, "replace", real)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def trial_records(study: Path, project: str = "tuner") -> dict:
    """Each trial's trial.json in `study`'s `project` folder, by trial folder."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted((study / project).glob("trial_*/trial.json"))}


def trial_runners(study: Path, project: str = "tuner") -> dict:
    """Which tuner ran each trial of `study`'s `project` folder (runs.json), by trial folder."""
    return {p.parent.name: [r["tuner_id"] for r in json.loads(p.read_text())]
            for p in sorted((study / project).glob("trial_*/runs.json"))}


def run_cli(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m alexnet_search ARGS`, as a user runs it, with output captured."""
    # The data source is always explicit in tests: no CIFAR10_DIR leaks in from the machine.
    full_env = {k: v for k, v in os.environ.items() if k != "CIFAR10_DIR"}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "alexnet_search", *map(str, args)],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )


# Fixtures that several tests of a module share because they are expensive (a finished study): under
# pytest-xdist (make test runs `-n 2 --dist loadgroup`) the tests using one are kept on one worker, in
# their file's order, so the study is made once and tests that add to it see what earlier ones added.
SHARED_FIXTURES = ("searched", "clean_report")


# tryfirst: pytest-xdist reads the marks in its own collection hook, which otherwise runs before this.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        for name in SHARED_FIXTURES:
            if name in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(f"{item.module.__name__}::{name}"))


def pytest_collection_finish(session):
    # pytest-xdist groups by a suffix it appends to each node id; where a pytest release ignores
    # that (9.2 and pytest-xdist 3.8), every worker would make the shared studies again, silently.
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [i.nodeid for i in session.items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        pytest.exit(f"--dist loadgroup is not grouping ({lost[0]} has no group suffix): this pytest and "
                    f"pytest-xdist do not work together; install the versions pyproject.toml's dev extra pins", 3)
