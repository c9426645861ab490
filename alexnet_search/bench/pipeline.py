"""Benchmark 1, the input pipeline: our way against the seed's, images/s and peak memory.

The same AlexNet (the seed's hyperparameters) trains the same steps at the same batch size in
each variant, each in its own process so that its peak resident memory (ru_maxrss) is its own:
- seed's way: every image resized up front into one float32 numpy array (/255), `model.fit(x, y)`,
  augmentation by in-model Keras layers (RandomFlip, RandomTranslation);
- ours: uint8 32x32 images, augmentation in numpy batches (`data.TrainingSet`), scale and resize
  in the model.
Beside each, its arithmetic ceiling: fp32 matmul GFLOP/s measured in the same process over the
FLOPs of one trained image (3x the forward pass, counted from the model's layers).
"""

from __future__ import annotations

import math
import resource
import time

import numpy as np

from ..errors import UserError
from .common import columns, rss_mb, secs

VARIANTS = {"seed": "seed's way: upfront resize, numpy arrays", "ours": "ours: uint8 + numpy batches, resize in model"}


def forward_flops(model) -> int:
    """One image's forward pass: 2 x the multiply-adds of every Conv2D and Dense, from the built
    shapes. Batch norm, pooling, activations and the resize add a few percent and are left out."""
    from keras import layers

    macs = 0
    for layer in model.layers:
        if isinstance(layer, layers.Conv2D):
            kh, kw, cin, _ = layer.kernel.shape
            macs += math.prod(layer.output.shape[1:]) * kh * kw * cin
        elif isinstance(layer, layers.Dense):
            macs += math.prod(layer.kernel.shape)
    return 2 * macs


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul here, best of `repeats` (the machine may be shared)."""
    from keras import ops, random

    a, b = random.normal((n, n), seed=1), random.normal((n, n), seed=2)
    float(ops.matmul(a, b)[0, 0])  # warm-up: thread pools, kernel choice
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        float(ops.matmul(a, b)[0, 0])  # reading a value waits for the product
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def throughput(start: float, ends: list[float], sizes: list[int], steps_per_epoch: int) -> tuple[float, float]:
    """(first epoch, steady) images/s from `fit`'s start and each step's end.

    The first epoch counts from the call, tracing included. Steady is a full batch over the median
    duration of the full-batch steps after the first (the tracing one): a median, because a shared
    machine's load spikes would otherwise decide a short run's figure.
    """
    k = min(steps_per_epoch, len(ends))
    first = sum(sizes[:k]) / (ends[k - 1] - start)
    full = [ends[i] - ends[i - 1] for i in range(1, len(ends)) if sizes[i] == max(sizes)]
    return first, (max(sizes) / float(np.median(full)) if full else first)


def training_images(n: int, data_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` CIFAR-10 training images, or random uint8 ones where no folder is given."""
    from ..cifar import source_from

    source = source_from(data_dir)
    if source.folder is None:  # never Keras' download: a benchmark must run offline
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
    x, y = source.train()
    if len(x) < n:
        raise UserError(f"--images {n} is more than the {len(x)} training images in {source.folder}")
    return x[:n].copy(), y[:n].copy()  # copies, so the rest of the batch files is freed


def upfront_resize(x: np.ndarray, size: int, chunk: int = 500) -> np.ndarray:
    """The seed's preprocessing: all images at size x size, float32 in [0, 1], in one array.

    Filled a chunk at a time into one preallocated array, the most frugal form of the seed's way
    (resizing the whole array at once holds two more full copies): the memory ratio printed is a
    lower bound on the saving.
    """
    from keras import ops

    out = np.empty((len(x), size, size, 3), np.float32)
    for i in range(0, len(x), chunk):
        resized = ops.image.resize(ops.cast(x[i:i + chunk], "float32"), (size, size))
        out[i:i + chunk] = ops.convert_to_numpy(resized) / 255
    return out


def seed_model(ours, image_size: int, hp, jit_compile: bool):
    """The seed's model: float32 input at image_size, in-model augmentation, then the *same layer
    objects* as `ours` from conv1 on (shared, not replicated), so the two stacks cannot differ."""
    import keras
    from keras import layers

    from ..model import compile_alexnet

    inputs = keras.Input((image_size, image_size, 3), name="resized_image")
    x = layers.RandomFlip("horizontal")(inputs)
    x = layers.RandomTranslation(hp.translate, hp.translate)(x)  # reflect fill, like ours' reflect-padded crops
    names = [layer.name for layer in ours.layers]
    for layer in ours.layers[names.index("conv1"):]:
        x = layer(x)
    return compile_alexnet(keras.Model(inputs, x, name="alexnet_seed_way"), hp, jit_compile=jit_compile)


def measure_variant(variant: str, images: int, image_size: int, batch_size: int, steps: int,
                    width: float, data_dir: str | None = None, say=print) -> dict:
    """Train one variant for `steps` steps in this process; its figures, JSON-ready."""
    import keras

    from ..data import TrainingSet
    from ..model import build_alexnet, compile_alexnet
    from ..space import Hyperparameters

    start_rss = rss_mb()
    keras.utils.set_random_seed(1)
    # float32, and XLA only where the backend always uses it (JAX): this compares input pipelines,
    # and on a CPU the search turns XLA and mixed precision off anyway (devices.precision_and_xla_options).
    jit = keras.backend.backend() == "jax"
    hp = Hyperparameters()  # the seed's
    model = compile_alexnet(build_alexnet(hp, image_size=image_size, width_multiplier=width), hp, jit_compile=jit)
    flops, gflops = forward_flops(model), matmul_gflops()
    say(f"    matmul {gflops:.0f} GFLOP/s; model {flops / 1e9:.3f} GFLOP forward per image")
    x, y = training_images(images, data_dir)

    prep = time.perf_counter()
    if variant == "seed":
        model = seed_model(model, image_size, hp, jit)
        say(f"    resizing {images} images to {image_size}x{image_size} float32 up front")
        x = upfront_resize(x, image_size)
        train = lambda **kw: model.fit(x, y, batch_size=batch_size, shuffle=True, **kw)  # noqa: E731
    else:
        batches = TrainingSet(x, y, batch_size, seed=1).batches(hp)
        train = lambda **kw: model.fit(batches, shuffle=False, **kw)  # noqa: E731
    prep = time.perf_counter() - prep

    ends: list[float] = []

    class StepTimer(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())
            if len(ends) >= steps:
                self.model.stop_training = True  # Keras 3 stops mid-epoch

        def on_epoch_end(self, epoch, logs=None):
            say(f"    epoch {epoch + 1}: {len(ends)}/{steps} steps, {ends[-1] - start:.1f}s")

    per_epoch = math.ceil(images / batch_size)
    say(f"    training {steps} steps of {batch_size} ({per_epoch} per epoch)")
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    train(epochs=math.ceil(steps / per_epoch), verbose=0, callbacks=[StepTimer()])
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
    sizes = [min(batch_size, images - (i % per_epoch) * batch_size) for i in range(len(ends))]
    first, steady = throughput(start, ends, sizes, per_epoch)
    return {
        "variant": variant, "backend": keras.backend.backend(), "images": images, "image_size": image_size, "batch_size": batch_size,
        "steps": len(ends), "width": width, "forward_flops": flops, "matmul_gflops": gflops,
        "prep_s": prep, "fit_s": ends[-1] - start, "first_epoch_images_per_s": first, "images_per_s": steady,
        "start_rss_mb": start_rss, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "data_mb": x.nbytes / 1e6, "data_kind": f"{x.dtype} {x.shape[1]}x{x.shape[2]}",
        "page_faults_per_step": faults / max(1, len(ends)),
    }


def ceiling_images_per_s(result: dict) -> float | None:
    """A variant's arithmetic limit: its process's matmul GFLOP/s over one trained image's FLOPs
    (3 x forward). Measured per process, so the limit moves with the load of a shared machine."""
    if "matmul_gflops" not in result:
        return None
    return result["matmul_gflops"] * 1e9 / (3 * result["forward_flops"])


def format_malloc(kept: dict, glibc: dict) -> str:
    """Our pipeline with freed memory kept for reuse (what every command does, backend.keep_freed_memory)
    against glibc's default malloc, each in its own process."""
    if "error" in kept or "error" in glibc:
        return "freed memory kept against glibc's default malloc: a run failed (see above)"
    rows = [("ours, malloc", "steady img/s", "1st epoch img/s", "page faults per step", "peak RSS"),
            *((name, f"{r['images_per_s']:.1f}", f"{r['first_epoch_images_per_s']:.1f}",
               f"{r['page_faults_per_step']:,.0f}", f"{r['peak_rss_mb']:,.0f} MB")
              for name, r in (("glibc's default (ALEXNET_SEARCH_MALLOC=glibc)", glibc), ("freed memory kept", kept)))]
    return "\n".join(columns(rows) + [
        f"freed memory kept / glibc's default: {kept['images_per_s'] / glibc['images_per_s']:.2f}x images/s steady, "
        f"{kept['page_faults_per_step'] / max(1.0, glibc['page_faults_per_step']):.2f}x page faults, peak memory "
        f"{kept['peak_rss_mb'] / glibc['peak_rss_mb']:.2f}x"])


def format_table(seed: dict, ours: dict) -> str:
    ok = "error" not in seed and "error" not in ours
    rows = [("variant", "prep", "matmul GFLOP/s", "1st epoch img/s", "steady img/s", "ours/seed", "of ceiling",
             "peak RSS", "above start", "images held")]
    lines, limits = [], []
    for name, r in (("seed", seed), ("ours", ours)):
        if "error" in r:
            lines.append(f"{VARIANTS[name]}: failed ({r['error']})")
            continue
        ceiling = ceiling_images_per_s(r)
        limits.append(f"{name} {ceiling:.1f} images/s ({r['matmul_gflops']:.0f} GFLOP/s)")
        rows.append((VARIANTS[name], secs(r["prep_s"]), f"{r['matmul_gflops']:.0f}",
                     f"{r['first_epoch_images_per_s']:.1f}", f"{r['images_per_s']:.1f}",
                     f"{r['images_per_s'] / seed['images_per_s']:.2f}" if ok else "-",
                     f"{r['images_per_s'] / ceiling:.0%}", f"{r['peak_rss_mb']:,.0f} MB",
                     f"{r['peak_rss_mb'] - r['start_rss_mb']:,.0f} MB", f"{r['data_mb']:,.1f} MB {r['data_kind']}"))
    lines = columns(rows) + lines
    if limits:
        flops = (ours if "error" not in ours else seed)["forward_flops"]
        lines.append(f"arithmetic ceiling = fp32 2048x2048 matmul GFLOP/s in each variant's process / "
                     f"{3 * flops / 1e9:.2f} GFLOP per trained image (3 x {flops / 1e9:.3f} forward): "
                     + ", ".join(limits))
    if ok:
        above = (ours["peak_rss_mb"] - ours["start_rss_mb"]) / (seed["peak_rss_mb"] - seed["start_rss_mb"])
        lines.append(f"ours/seed: {ours['images_per_s'] / seed['images_per_s']:.2f}x images/s steady, "
                     f"{ours['first_epoch_images_per_s'] / seed['first_epoch_images_per_s']:.2f}x over the first "
                     f"epoch; peak memory {ours['peak_rss_mb'] / seed['peak_rss_mb']:.2f}x ({above:.2f}x above start)")
    ref = seed if "error" not in seed else ours
    if ref.get("images", 10_000) < 10_000:
        size = ref["image_size"]
        lines.append(f"memory grows with --images: at 10,000 images the seed's float32 array alone is "
                     f"{10_000 * size * size * 12 / 1e9:.2f} GB, ours {10_000 * 3072 / 1e6:.1f} MB of uint8; "
                     f"the issue's 0.2x target is stated there (--images 10000)")
    return "\n".join(lines)
