"""The Keras backend a run uses: TensorFlow (the default), JAX or PyTorch, chosen the Keras way.

`KERAS_BACKEND=jax` (or `BACKEND=jax` for make) picks JAX; nothing else in the package needs to
know which one it runs on, except through this module: the device it trains on, the backend's
version for results, what an out-of-memory error looks like, and whether TensorFlow is there for
the one thing that needs it (the SavedModel serving export).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from .errors import UserError

BACKENDS = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}  # backend -> module it needs
DEFAULT = "tensorflow"


def chosen() -> str:
    """The backend Keras will load, read without importing Keras (so it can be checked first)."""
    name = os.environ.get("KERAS_BACKEND")
    if name is None:
        import json
        from pathlib import Path

        home = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
        try:
            name = json.loads((Path(home) / "keras.json").read_text()).get("backend")
        except (OSError, ValueError, AttributeError):
            name = None
    return name or DEFAULT


def check() -> str:
    """The chosen backend, or a UserError saying how to install it or choose another."""
    name = chosen()
    if name not in BACKENDS:
        raise UserError(f"KERAS_BACKEND={name!r} is not one of {', '.join(BACKENDS)}; set it to one of those")
    if importlib.util.find_spec(BACKENDS[name]) is None:
        others = [b for b in installed() if b != name]
        hint = f" or run with KERAS_BACKEND={others[0]} (installed here)" if others else ""
        raise UserError(f"the Keras backend is {name} but {BACKENDS[name]} is not installed; "
                        f"`BACKEND={name} make env` installs it{hint}")
    return name


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of returning it to the kernel at once.

    Every training batch allocates arrays of a few hundred KB (the gathered images, their
    augmentation, the copies the backend makes). Above glibc's mmap threshold each is a fresh
    mapping that is unmapped when freed, so every batch faulted its memory in again: a cpu.toml
    search spent a third of its CPU time in the kernel, and on 2 cores an epoch of our pipeline
    trained at 162 images/s, 250 with this (2.4 million page faults per 32 batches, 0.45 million;
    `make bench` measures it). The process holds on to its peak memory instead. Returns False where
    there is no glibc (macOS, musl), or with ALEXNET_SEARCH_MALLOC=glibc (glibc's own behaviour,
    for a machine short of memory, and for the bench's comparison): nothing changes then.
    """
    import ctypes
    import ctypes.util

    if os.environ.get("ALEXNET_SEARCH_MALLOC") == "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # glibc's malloc.h
    return all(mallopt(param, value) == 1 for param, value in (
        (m_mmap_threshold, 64 << 20), (m_trim_threshold, 1 << 30), (m_top_pad, 64 << 20)))


def keep_compiled_programs() -> None:
    """On JAX, keep XLA's compiled programs on disk (`cache_dir()`); effective before JAX is imported.

    Every new model is compiled by XLA (seconds on a CPU, more on a GPU). The persistent cache lets
    a promoted Hyperband trial, a resumed study and each retrain seed reuse the programs an earlier
    process compiled for the same layer widths.
    """
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache_dir() / "jax"))
    # Every program, however quick its compile (JAX's default skips those under 1 s): a rerun then
    # compiles nothing (docs/experiments/2026-11-28-jax-persistent-compilation-cache-cpu.md). XLA's GPU autotuning
    # results are kept beside them, JAX's default; its kernel cache ("all") stays off until a GPU
    # run has measured it (it needs nvlink, which pip-installed CUDA may lack: jax#28247).
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # Unbounded, as JAX's default. JAX bounds it only in its LRU mode (JAX_COMPILATION_CACHE_MAX_SIZE,
    # with the filelock package), which warned on every write into a cache made before: its
    # entries lack the access-time files that mode reads (seen in make test).


class Compiles:
    """What XLA compiled in this process and what it read from the persistent cache instead,
    counted from JAX's monitoring events (JAX only; `compiles()` makes the one per process).
    A new model costs seconds of compilation on a GPU, more than its short trial may train."""

    _EVENTS = {"/jax/compilation_cache/cache_hits": "from_cache", "/jax/compilation_cache/cache_misses": "cached"}
    _DURATIONS = {"/jax/core/compile/backend_compile_duration": "compile_s"}

    def __init__(self):
        from jax import monitoring

        self.counts = {"from_cache": 0, "cached": 0, "programs": 0, "compile_s": 0.0}
        monitoring.register_event_listener(self._event)
        monitoring.register_event_duration_secs_listener(self._duration)

    def _event(self, event: str, **_) -> None:
        if event in self._EVENTS:
            self.counts[self._EVENTS[event]] += 1

    def _duration(self, event: str, seconds: float, **_) -> None:
        if event in self._DURATIONS:  # every program XLA built or loaded, with the time it took
            self.counts["programs"] += 1
            self.counts["compile_s"] += seconds

    def snapshot(self) -> dict:
        return dict(self.counts)

    def since(self, earlier: dict) -> dict:
        return {k: v - earlier[k] for k, v in self.counts.items()}

    @staticmethod
    def describe(counts: dict) -> str:
        """`XLA 12 programs in 8.3 s, 9 from the cache`: what a trial or a run compiled."""
        return (f"XLA {counts['programs']} programs in {counts['compile_s']:.1f} s, {counts['from_cache']} from the "
                f"cache")


_compiles: Compiles | None = None


def compiles() -> Compiles | None:
    """This process's `Compiles` on JAX (made on first call: call it before training), else None."""
    global _compiles
    if _compiles is None and name() == "jax":
        _compiles = Compiles()
    return _compiles


def start() -> str:
    """Import Keras on the chosen backend with its start-up chatter held back; returns the backend.

    TensorFlow's C++ start-up lines (CPU features, absent CUDA) are written to file descriptor 2
    before any log level applies, so they are caught there, and shown after all where they explain
    something: when the import fails, or when nvidia-smi sees a GPU that the backend does not.
    """
    import logging
    import shutil
    import tempfile
    import warnings

    name = check()
    keep_freed_memory()
    if name == "jax":
        keep_compiled_programs()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # Hyperband's promoted trials load weights only, by design; Keras warns about the optimizer.
    warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
    sys.stderr.flush()
    saved = os.dup(2)
    gpus = []
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        ok = False
        try:
            if has_tensorflow():  # imported sooner or later (Keras Tuner, TensorBoard) whatever the backend
                import tensorflow  # noqa: F401
            import keras  # noqa: F401  (loads the backend)

            gpus = gpu_names()
            ok = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            chatter = caught.read().decode(errors="replace")
            if not ok or (not gpus and shutil.which("nvidia-smi")):
                sys.stderr.write(chatter)
    if name == "tensorflow":
        import tensorflow as tf

        tf.get_logger().setLevel(logging.ERROR)  # e.g. retracing notes, one per new trial model
    return name


def cache_dir():
    """Where compiled programs are kept between runs: $ALEXNET_SEARCH_CACHE, else ~/.cache/alexnet-search."""
    from pathlib import Path

    return Path(os.environ.get("ALEXNET_SEARCH_CACHE") or Path.home() / ".cache" / "alexnet-search")


def name() -> str:
    import keras

    return keras.backend.backend()


def version() -> str:
    """`jax 0.10.2`: the backend and its library's version."""
    backend = name()
    module = __import__(BACKENDS[backend])
    return f"{backend} {module.__version__}"


def installed() -> list[str]:
    """The Keras backends whose library is installed here."""
    return [b for b, module in BACKENDS.items() if importlib.util.find_spec(module) is not None]


def has_tensorflow() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def gpu_names() -> list[str]:
    """The GPUs the backend trains on (empty on a CPU)."""
    backend = name()
    if backend == "tensorflow":
        import tensorflow as tf

        names = []
        for gpu in tf.config.list_physical_devices("GPU"):
            try:
                names.append(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name))
            except Exception:  # details are best-effort; the count is what matters
                names.append(gpu.name)
        return names
    if backend == "jax":
        import jax

        return [getattr(d, "device_kind", str(d)) for d in jax.devices() if d.platform == "gpu"]
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def gpu_count() -> int:
    return len(gpu_names())


def describe_device() -> str:
    gpus = gpu_names()
    if not gpus:
        # A CPU worker of `--workers N` is held to its share of the cores (launcher.placement).
        threads = os.environ.get("TF_NUM_INTRAOP_THREADS" if name() == "tensorflow" else "OMP_NUM_THREADS")
        held = f", {threads} thread(s) for this process" if threads and name() != "jax" else ""
        return f"CPU ({os.cpu_count()} cores{held}; no GPU visible to {name()})"
    return f"{len(gpus)} GPU(s): " + ", ".join(gpus)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is the backend saying a device (or the host) ran out of memory."""
    if isinstance(exc, MemoryError):
        return True
    kind = type(exc).__name__
    if kind in ("ResourceExhaustedError", "OutOfMemoryError"):  # TensorFlow; torch.cuda
        return True
    # JAX/XLA: XlaRuntimeError (or JaxRuntimeError) whose message starts with the status code.
    return "RuntimeError" in kind and "RESOURCE_EXHAUSTED" in str(exc)[:200]
