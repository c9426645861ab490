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


def test_bfloat16_stays_on_a_cpu_with_bfloat16_instructions_on_tensorflow_only():
    # oneDNN's bfloat16 kernels made a step 0.65x float32's on avx512_bf16 cores; elsewhere emulated.
    assert devices.precision_and_xla_options("mixed_bfloat16", False, has_gpu=False, cpu_bf16=True) == (
        "mixed_bfloat16", False, None)
    precision, jit, note = devices.precision_and_xla_options("mixed_bfloat16", True, has_gpu=False, cpu_bf16=True)
    assert (precision, jit) == ("mixed_bfloat16", False) and "XLA" in note and "float32" not in note
    precision, _, note = devices.precision_and_xla_options("mixed_bfloat16", False, has_gpu=False)
    assert precision == "float32" and "no bfloat16 instructions (avx512_bf16, amx_bf16)" in note
    precision, _, note = devices.precision_and_xla_options("mixed_bfloat16", True, has_gpu=False,
                                                           backend="jax", cpu_bf16=True)
    assert precision == "float32" and "only used on TensorFlow, not jax" in note
    precision, _, note = devices.precision_and_xla_options("mixed_float16", False, has_gpu=False, cpu_bf16=True)
    assert precision == "float32" and "no fast CPU kernels" in note


def test_cpu_bfloat16_is_read_from_the_flags_line(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: x\nflags\t\t: fpu avx2 avx512f avx512_bf16 sse\n")
    assert devices.cpu_has_bf16(str(info))
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\nbugs\t\t: avx512_bf16\n")
    assert not devices.cpu_has_bf16(str(info))  # only the flags line counts
    info.write_text("flags\t\t: fpu amx_bf16 amx_tile\n")
    assert devices.cpu_has_bf16(str(info))
    assert not devices.cpu_has_bf16(str(tmp_path / "absent"))


def test_a_preset_asking_bfloat16_gets_it_where_the_cpu_has_it(monkeypatch, tmp_path, tiny_config):
    from alexnet_search.config import load_config

    preset = tmp_path / "bf16.toml"
    preset.write_text(f'extends = "{tiny_config.name}"\n[model]\nprecision = "mixed_bfloat16"\n')
    config = load_config(preset)
    monkeypatch.setattr(devices, "gpu_count", lambda: 0)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: True)
    assert devices.precision_and_xla(config)[:2] == ("mixed_bfloat16", False)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: False)
    assert devices.precision_and_xla(config)[0] == "float32"


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
