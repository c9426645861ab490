"""Benchmark 3, batch norm: Keras' layer against the fused one (`alexnet_search.batchnorm`).

Two copies of the preset's network (its image size, width and conv1 kernel; the seed's
hyperparameters; the same initial weights) differ only in their batch norm layers: Keras' own in
one, the fused kernel in the other. They train the same random batches in one process, a step of
each in turn, so a shared machine's load falls on both alike; the figures are each one's median
step time and their ratio. On JAX both are Keras' layer: the ratio is 1 by construction, which the
run shows rather than assumes.
"""

from __future__ import annotations

import time

import numpy as np


def measure_batchnorm(config_path: str, steps: int, batch_size: int, say=print) -> dict:
    import keras

    from ..batchnorm import to_keras_layers
    from ..config import load_config
    from ..model import build_alexnet, compile_alexnet
    from ..space import Hyperparameters

    config = load_config(config_path)
    model_cfg, image_size = config["model"], config["data"]["image_size"]
    hp = Hyperparameters()
    keras.utils.set_random_seed(0)
    fused = build_alexnet(hp, image_size=image_size, width_multiplier=model_cfg["width_multiplier"],
                          conv1_kernel=model_cfg["conv1_kernel"])
    models = {"keras": to_keras_layers(fused), "fused": fused}  # the same weights, copied
    jit = model_cfg["jit_compile"]
    for model in models.values():
        compile_alexnet(model, hp, jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, batch_size).astype(np.int32)
    times: dict[str, list[float]] = {name: [] for name in models}
    say(f"    {config_path}'s network at {image_size}x{image_size}, width {model_cfg['width_multiplier']}, batch "
        f"{batch_size}: {steps} steps of each, in turn (the first, traced, left out)")
    for step in range(steps + 1):
        for name, model in models.items():
            start = time.perf_counter()
            model.train_on_batch(x, y)
            if step:
                times[name].append(time.perf_counter() - start)
    keras_s, fused_s = (float(np.median(times[n])) for n in ("keras", "fused"))
    return {"config": config_path, "backend": keras.backend.backend(), "batch_size": batch_size, "steps": steps,
            "image_size": image_size, "width": model_cfg["width_multiplier"],
            "keras_step_s": keras_s, "fused_step_s": fused_s, "ratio": fused_s / keras_s}


def format_batchnorm(result: dict) -> str:
    return (f"batch norm on {result['backend']} ({result['config']}'s network, batch {result['batch_size']}, median of "
            f"{result['steps']} steps): Keras' layer {result['keras_step_s'] * 1000:.1f} ms a step, fused "
            f"{result['fused_step_s'] * 1000:.1f} ms: {result['ratio']:.2f}x the time")
