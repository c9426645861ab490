"""devices.py: the GPU speed options for this machine, and several devices training one model."""

import json
import os

import pytest

from alexnet_search import devices

from conftest import run_cli

def test_gpu_precision_and_xla_options_are_off_without_a_gpu():
    assert devices.precision_and_xla_options("mixed_float16", True, has_gpu=True) == ("mixed_float16", True, None)
    precision, jit, note = devices.precision_and_xla_options("mixed_bfloat16", True, has_gpu=False)
    assert (precision, jit) == ("float32", False) and "no GPU" in note
    assert devices.precision_and_xla_options("float32", False, has_gpu=False) == ("float32", False, None)


def test_jax_always_compiles_with_xla_and_says_so():
    # Uncompiled JAX runs every layer op by op: the preset's jit_compile = false is TensorFlow's.
    precision, jit, note = devices.precision_and_xla_options("float32", False, has_gpu=True, backend="jax")
    assert (precision, jit) == ("float32", True) and "JAX compiles every model" in note
    precision, jit, note = devices.precision_and_xla_options("mixed_float16", False, has_gpu=False, backend="jax")
    assert (precision, jit) == ("float32", True) and "no GPU" in note
    assert devices.precision_and_xla_options("float32", True, has_gpu=False, backend="jax") == ("float32", True, None)


@pytest.mark.slow
@pytest.mark.backends
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") != "jax", reason="Keras' DataParallel path is JAX's")
def test_several_devices_train_one_model_with_keras_data_parallel(tmp_path, cifar_dir, tiny_config):
    """The several-GPU path of one process, on two virtual CPU devices (no GPU here)."""
    import numpy as np

    done = run_cli("baseline", "--config", tiny_config, "--name", "paper", "--data-dir", cifar_dir,
                   "--results-dir", tmp_path / "results", cwd=tmp_path,
                   env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 devices per model (Keras DataParallel on JAX): global batch 128" in done.stdout  # 64 per device
    metrics = json.loads((tmp_path / "results" / "tiny" / "baselines" / "paper" / "metrics.json").read_text())
    assert np.isfinite(metrics["test_loss_mean"]) and 0 <= metrics["test_accuracy_mean"] <= 1
