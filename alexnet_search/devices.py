"""What a training process trains on: several GPUs in one trial (TensorFlow's MirroredStrategy,
Keras' DataParallel on JAX), the speed options (mixed precision, XLA) for this machine, and the
GPUs nvidia-smi lists (read without importing a backend, for the launcher).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import NamedTuple

from .backend import gpu_count


def strategy():
    """MirroredStrategy over every visible GPU when there are several on TensorFlow, else None.

    On JAX several devices train one model through Keras' distribution API instead, which
    applies process-wide (`keras.distribution.DataParallel`, set here); None is returned there
    too, as the model needs no scope. JAX's devices are its GPUs where it has any, else its CPU
    devices: one, unless XLA_FLAGS=--xla_force_host_platform_device_count=N asks for N (how the
    several-device path is tested without GPUs). PyTorch trains on one GPU.
    """
    import keras

    if keras.backend.backend() == "jax":
        import jax

        if jax.device_count() > 1:
            keras.distribution.set_distribution(keras.distribution.DataParallel())
        return None
    if gpu_count() < 2 or keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    return tf.distribute.MirroredStrategy()


def replicas(strategy_) -> int:
    """Devices one training step is split over (the batch is scaled by it)."""
    if strategy_ is not None:
        return strategy_.num_replicas_in_sync
    import keras

    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    return int(dist.device_mesh.devices.size) if dist is not None else 1


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU has bfloat16 instructions TensorFlow's oneDNN kernels use (x86's avx512_bf16
    or amx_bf16, as Linux lists them in /proc/cpuinfo). False where that cannot be read: ARM's bf16
    and other systems are not measured."""
    try:
        text = open(cpuinfo, encoding="utf-8", errors="replace").read()
    except OSError:
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool({"avx512_bf16", "amx_bf16"} & set(line.partition(":")[2].split()))
    return False


def precision_and_xla_options(precision: str, jit_compile: bool, has_gpu: bool,
                              backend: str = "tensorflow", cpu_bf16: bool = False) -> tuple[str, bool, str | None]:
    """The precision and XLA settings to use here, and a note when the preset's were changed.

    Mixed precision and XLA pay on GPUs. On a CPU float16 has no fast kernels, and XLA compiled
    this model slower than TensorFlow's default kernels (measured on 2 AVX2 cores), so both are
    switched off where no GPU is visible; mixed_bfloat16 stays on for TensorFlow where the CPU has
    bfloat16 instructions (`cpu_bf16`), where a training step took 0.65x float32's time (2
    AVX-512 cores with avx512_bf16). On JAX, XLA is always on: compiling is JAX's only fast path,
    and without it Keras runs every layer op by op.
    """
    notes = []
    if not has_gpu:
        if precision == "mixed_bfloat16" and not (cpu_bf16 and backend == "tensorflow"):
            why = ("this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16)" if backend == "tensorflow"
                   else f"bfloat16 on a CPU is only used on TensorFlow, not {backend}")
            notes.append(f"no GPU: running in float32 (the preset asks for mixed_bfloat16; {why})")
            precision = "float32"
        elif precision == "mixed_float16":
            notes.append("no GPU: running in float32 (the preset asks for mixed_float16, which has no fast CPU kernels)")
            precision = "float32"
        if jit_compile and backend != "jax":
            notes.append("no GPU: running without XLA (the preset asks for jit_compile, which only pays on a GPU)")
            jit_compile = False
    if backend == "jax" and not jit_compile:
        notes.append("JAX compiles every model with XLA (the preset's jit_compile = false applies to TensorFlow)")
        jit_compile = True
    return precision, jit_compile, "; ".join(notes) or None


def precision_and_xla(config) -> tuple[str, bool, str | None]:
    """`precision_and_xla_options` for a preset on this machine and backend: what its runs train with."""
    from . import backend

    m = config["model"]
    has_gpu = gpu_count() > 0
    return precision_and_xla_options(m["precision"], m["jit_compile"], has_gpu, backend.name(),
                                     cpu_bf16=not has_gpu and cpu_has_bf16())


class Gpu(NamedTuple):
    index: str  # as CUDA_VISIBLE_DEVICES names it
    memory_gib: float


def visible_gpus() -> list[Gpu]:
    """The GPUs nvidia-smi lists, without importing a backend in the launcher."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    gpus = []
    for line in out.splitlines():
        index, _, mib = line.partition(",")
        try:
            gpus.append(Gpu(index.strip(), float(mib) / 1024))
        except ValueError:  # "[N/A]" and the like: a GPU nvidia-smi cannot size
            gpus.append(Gpu(index.strip(), 0.0))
    return gpus

