"""backend.py: how this process runs, whatever the backend."""

import subprocess
import sys

import pytest

from conftest import REPO

# One epoch of cpu.toml's network on the real input pipeline (batches built on worker threads),
# counting the page faults it takes: the kernel work that cost a search a third of its CPU time.
_FAULTS = """
import os, resource, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, {repo!r})
from alexnet_search import backend
backend.start() if {keep} else backend.check()
import numpy as np
from alexnet_search.data import TrainingSet
from alexnet_search.model import build_alexnet, compile_alexnet
from alexnet_search.space import Hyperparameters

rng = np.random.default_rng(0)
x, y = rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 512)
model = compile_alexnet(build_alexnet(image_size=32, width_multiplier=0.125, conv1_kernel=3))
train = TrainingSet(x, y, 128, seed=0)
model.fit(train.batches(Hyperparameters()), epochs=1, verbose=0)  # traced, warmed up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
model.fit(train.batches(Hyperparameters()), epochs=2, verbose=0)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_training_batches_reuse_freed_memory_instead_of_faulting_it_in_again():
    def faults(keep: bool) -> int:
        code = _FAULTS.format(repo=str(REPO), keep=keep)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return int(done.stdout.split()[-1])

    plain, kept = faults(False), faults(True)
    print(f"page faults over 8 batches: {plain} plain, {kept} with freed memory kept")
    assert kept < plain / 3, (plain, kept)


# A process that trains one small Keras model on JAX and prints what XLA compiled and read back.
_COMPILES = """
import json, os, sys
sys.path.insert(0, {repo!r})
os.environ["KERAS_BACKEND"] = "jax"
os.environ["ALEXNET_SEARCH_CACHE"] = {cache!r}
from alexnet_search import backend
backend.keep_compiled_programs()  # as backend.start() does on JAX, without importing TensorFlow too
compiles = backend.compiles()
import keras, numpy as np

model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
model.compile(optimizer="sgd", loss="mse")
model.fit(np.zeros((32, 8)), np.zeros((32, 4)), batch_size=16, epochs=1, verbose=0)
print(json.dumps(compiles.snapshot()))
"""


def test_jax_processes_share_compiled_programs_and_count_them(tmp_path):
    """What a promoted trial, a resumed study or a retrain seed in another process gets: the same
    model's programs read from the persistent cache, not compiled again, and counted."""
    import importlib.util
    import json

    if importlib.util.find_spec("jax") is None:
        pytest.skip("JAX is not installed here")
    script = _COMPILES.format(repo=str(REPO), cache=str(tmp_path / "cache"))
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    first, second = (json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                               env=env, check=True).stdout.splitlines()[-1]) for _ in range(2))
    assert first["programs"] > 0 and first["cached"] == first["programs"] and first["from_cache"] == 0
    assert second["from_cache"] == second["programs"] == first["programs"] and second["cached"] == 0
    assert list((tmp_path / "cache" / "jax").iterdir())  # under ALEXNET_SEARCH_CACHE, where every process looks


@pytest.mark.backends
def test_a_cpu_worker_held_to_its_share_of_the_cores_says_so(monkeypatch):
    from alexnet_search import backend

    if backend.gpu_count():
        pytest.skip("a GPU is visible: the line names it instead")
    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "thread" not in backend.describe_device()
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    line = backend.describe_device()
    # JAX's XLA:CPU pool has no such switch, so a JAX worker must not claim one.
    assert ("1 thread(s) for this process" in line) == (backend.name() != "jax"), line
