"""backend.py: how this process runs, whatever the backend."""

import subprocess
import sys

import pytest

from conftest import REPO

# A buffer above glibc's largest dynamic mmap threshold (32 MB on 64-bit), allocated, written and
# freed again and again, counting the page faults of the repeats. Whether real training batches
# fault depends on the machine (on AVX2 cores a cpu.toml search spent a third of its CPU in the
# kernel; on AVX-512 ones glibc's own thresholds kept up): `make bench` measures that. This pins
# the mechanism: kept, the freed memory is reused; plain, every repeat maps and faults it afresh.
_FAULTS = """
import resource, sys
sys.path.insert(0, {repo!r})
from alexnet_search import backend
kept = backend.keep_freed_memory() if {keep} else False
import numpy as np
def touch():
    a = np.empty(10_000_000, np.float32)  # 40 MB, through malloc
    a.fill(1.0)
    del a
touch()  # the first one faults either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch()
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    def faults(keep: bool) -> tuple[str, int]:
        code = _FAULTS.format(repo=str(REPO), keep=keep)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        kept, count = done.stdout.split()[-2:]
        return kept, int(count)

    (_, plain), (kept, reused) = faults(False), faults(True)
    print(f"page faults over 5 repeats of a 40 MB buffer: {plain} plain, {reused} with freed memory kept")
    assert kept == "True"  # glibc accepted the settings
    # Each repeat faulted its memory in again: 9,800 pages at 4 KB, 20 at 2 MB (transparent huge pages).
    assert plain >= 5 * 20, plain
    assert reused < plain / 10, (plain, reused)


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
