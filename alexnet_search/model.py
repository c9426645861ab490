"""AlexNet for CIFAR-10, built from explicit arguments.

This module knows nothing of Keras Tuner: every knob is a field of `space.Hyperparameters`, whose
defaults are the seed script's values, so `build_alexnet()` is the hand-picked model the project
started from.

The model takes raw CIFAR images, uint8 of shape (N, 32, 32, 3). Scaling and the resize to
`image_size` happen inside the graph, per batch: the data stays uint8 at 32x32 in memory (30 MB for
10,000 images instead of 2 GB of float32 at 128x128), and an exported model needs no preprocessing
code on the caller's side.

Augmentation is not in the model but in the input pipeline (`data.augment`), as the paper did it:
Keras' RandomTranslation cannot be XLA-compiled (it would silently turn `jit_compile` off for the
whole model), and random layers inside a model default to training mode when exported.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import layers

from .batchnorm import BatchNormalization, to_keras_layers
from .geometry import POOL, POOL_STRIDE, check_image_size, conv1_stride
from .space import BOUNDS, SEED_BN_MOMENTUM, SEED_CONV1_KERNEL, Hyperparameters

CIFAR_SHAPE = (32, 32, 3)
NUM_CLASSES = 10
CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

def build_alexnet(
    hp: Hyperparameters = Hyperparameters(),
    image_size: int = 128,
    width_multiplier: float = 1.0,
    num_classes: int = NUM_CLASSES,
    precision: str = "float32",
    conv1_kernel: int = SEED_CONV1_KERNEL,
    bn_momentum: float = SEED_BN_MOMENTUM,
) -> keras.Model:
    """The seed's single-branch AlexNet, uncompiled, with `hp`'s widths and dropout.

    `width_multiplier` scales every conv and dense width (CPU presets search the paper's widths
    on a narrower network); `conv1_kernel` is conv1's square kernel, the seed's 11 by default.
    `bn_momentum` is how much of its moving statistics batch norm keeps per step (Keras' 0.99 by
    default): validation and inference use those statistics, which after n steps still hold
    momentum^n of their initial 0 and 1.
    Input: uint8 images (N, 32, 32, 3). Output: class probabilities,
    float32 even when `precision` is "mixed_float16" or "mixed_bfloat16" (layers compute in 16
    bits, keep float32 weights), so losses and exported scores keep full precision.
    """
    check_image_size(image_size, conv1_kernel)
    stride = conv1_stride(image_size)
    width = lambda paper_width: max(1, round(paper_width * width_multiplier))  # noqa: E731
    prec = {"dtype": precision}  # per layer, not Keras' global policy: clear_session() between trials resets that

    inputs = keras.Input(shape=CIFAR_SHAPE, dtype="uint8", name="image")
    x = layers.Rescaling(1.0 / 255, name="scale", **prec)(inputs)
    if image_size != CIFAR_SHAPE[0]:
        x = layers.Resizing(image_size, image_size, name="resize", **prec)(x)

    # Batch norm sits where the paper had local response normalisation: after conv1 and conv2;
    # Keras' layer, through one fused kernel on TensorFlow (`batchnorm`).
    x = layers.Conv2D(width(hp.conv1_filters), conv1_kernel, strides=stride, activation="relu", name="conv1", **prec)(x)
    x = BatchNormalization(momentum=bn_momentum, name="bn1", **prec)(x)
    x = layers.MaxPooling2D(POOL, strides=POOL_STRIDE, name="pool1", **prec)(x)
    x = layers.Conv2D(width(hp.conv2_filters), 5, padding="same", activation="relu", name="conv2", **prec)(x)
    x = BatchNormalization(momentum=bn_momentum, name="bn2", **prec)(x)
    x = layers.MaxPooling2D(POOL, strides=POOL_STRIDE, name="pool2", **prec)(x)
    x = layers.Conv2D(width(hp.conv3_filters), 3, padding="same", activation="relu", name="conv3", **prec)(x)
    x = layers.Conv2D(width(hp.conv4_filters), 3, padding="same", activation="relu", name="conv4", **prec)(x)
    x = layers.Conv2D(width(hp.conv5_filters), 3, padding="same", activation="relu", name="conv5", **prec)(x)
    x = layers.MaxPooling2D(POOL, strides=POOL_STRIDE, name="pool3", **prec)(x)
    x = layers.Flatten(name="flatten", **prec)(x)
    x = layers.Dense(width(hp.dense_units), activation="relu", name="fc1", **prec)(x)
    x = layers.Dropout(hp.dropout, name="drop1", **prec)(x)
    x = layers.Dense(width(hp.dense_units), activation="relu", name="fc2", **prec)(x)
    x = layers.Dropout(hp.dropout, name="drop2", **prec)(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="alexnet")


def compile_alexnet(
    model: keras.Model,
    hp: Hyperparameters = Hyperparameters(),
    jit_compile: bool | str = "auto",
    precision: str = "float32",
) -> keras.Model:
    """Compile with `hp`'s SGD and loss: by default the seed's, lr 0.001, Keras' default momentum
    of 0, the plain sparse cross-entropy.

    `weight_decay` is SGD's decoupled decay (the paper used 5e-4). With `ema` the optimiser keeps
    an exponential moving average of the weights; fit with `ema_callbacks` to validate and keep it. `label_smoothing` trains against
    targets of 1 - e on the true class and e / 10 on every class (`SmoothedCrossentropy`; labels
    stay class indices). Under "mixed_float16" the loss is scaled, so small float16 gradients do
    not flush to zero.
    """
    optimizer = keras.optimizers.SGD(
        learning_rate=hp.lr, momentum=hp.momentum, nesterov=bool(hp.nesterov),
        weight_decay=hp.weight_decay or None, use_ema=hp.ema > 0, ema_momentum=hp.ema or 0.99,
    )
    if precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    # Keywords, not positions: Keras 3 reads a third positional argument as loss_weights.
    model.compile(
        optimizer=optimizer,
        loss=SmoothedCrossentropy(hp.label_smoothing) if hp.label_smoothing else "sparse_categorical_crossentropy",
        metrics=["accuracy"],
        jit_compile=jit_compile,
    )
    return model


@keras.saving.register_keras_serializable(package="alexnet_search")
class SmoothedCrossentropy(keras.losses.Loss):
    """Cross-entropy against label-smoothed targets, from class-index labels.

    Keras' own label smoothing needs one-hot labels (CategoricalCrossentropy); this keeps the
    pipeline's class indices: (1 - e) x the usual loss + e x the mean of -log p over the classes.
    Exports are compiled with the plain loss instead (`for_export`), so they load without this class.
    """

    def __init__(self, smoothing: float = 0.1, name: str = "smoothed_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.smoothing = float(smoothing)

    def call(self, y_true, y_pred):
        from keras import ops

        plain = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        uniform = -ops.mean(ops.log(ops.clip(y_pred, keras.backend.epsilon(), 1.0)), axis=-1)
        return (1.0 - self.smoothing) * plain + self.smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "smoothing": self.smoothing}


def for_export(model: keras.Model, tta: bool = False) -> keras.Model:
    """The trained `model` as it is exported: with Keras' own batch norm layers (`batchnorm.to_keras_layers`)
    and compiled with the plain cross-entropy, so it loads with Keras alone (no custom layer or
    loss; no optimizer state: it is for inference and evaluation), and with `tta` wrapped in a
    model averaging the class probabilities of each image and its mirror image (test-time
    augmentation). `model` itself is left as it was.

    The mirror is built from Keras' own layers (a fixed width-reversing Dense between two
    Permutes), not a Lambda, so the export loads with `safe_mode=True` on every backend.
    """
    model = to_keras_layers(model)
    # Every model in the file carries its compile config, the wrapped one included.
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    exported = model
    if tta:
        inputs = keras.Input(shape=CIFAR_SHAPE, dtype="uint8", name="image")
        width = CIFAR_SHAPE[1]
        x = layers.Permute((1, 3, 2), name="width_last")(inputs)
        mirror = layers.Dense(width, use_bias=False, trainable=False, name="mirror")
        x = mirror(x)
        x = layers.Permute((1, 3, 2), name="width_back")(x)
        mirror.set_weights([np.eye(width, dtype="float32")[::-1]])  # exact: whole pixel values times 0 or 1
        outputs = layers.Average(name="tta_mean")([model(inputs), model(x)])
        exported = keras.Model(inputs, outputs, name="alexnet_tta")
        exported.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return exported


def clear_session() -> int:
    """`keras.backend.clear_session()`, plus what it misses (`drop_backend_caches`); call it only
    when no model built so far will be trained or differentiated again (between retrain seeds).
    Returns how many TensorFlow registrations were dropped."""
    dropped = drop_backend_caches()
    keras.backend.clear_session()  # and a garbage collection, which frees what was just let go
    return dropped


def drop_backend_caches() -> int:
    """What `keras.backend.clear_session()` leaves behind of the models built so far; a garbage
    collection must follow (Keras' clear_session makes one) for the memory to come back.

    Every traced train step passes its gradients through `ReplicaContext.all_reduce`, whose
    graph-mode `tf.custom_gradient` registers a closure in TensorFlow's global gradient registry
    that is never removed. The closure pins the step's FuncGraphs, so every trial left its graphs
    behind: `make bench`'s tiny study grew 13.7 MB a trial, 2.5 MB with them dropped
    (tensorflow#97697, tf-keras#286). A registration is read only while differentiating the graph
    that made it, so dropping it once its model is discarded is safe.
    On JAX, the compiled programs of every model so far stay in JAX's in-memory caches (13 MB a
    trial in `make bench`'s tiny study): they are cleared too. A later trial of the same widths
    reads its program back from the persistent compilation cache (see `backend.start`).
    Returns how many TensorFlow registrations were dropped.
    """
    dropped = 0
    if keras.backend.backend() == "jax":
        import jax

        jax.clear_caches()
    if keras.backend.backend() == "tensorflow":
        try:
            from tensorflow.python.framework import ops

            registry = ops._gradient_registry._registry
        except (ImportError, AttributeError):  # a TensorFlow that moved it: nothing to drop here
            registry = {}
        for name in [n for n in registry if n.startswith("CustomGradient-")]:
            del registry[name]
            dropped += 1
    return dropped


class Warmup(keras.callbacks.Callback):
    """Raises the learning rate linearly to `lr` over the first `epochs` epochs: lr x k / (epochs + 1)
    in epoch k (from 1), then `lr` (unless `restore` is off: a cosine schedule then takes over)."""

    def __init__(self, lr: float, epochs: int, restore: bool = True):
        super().__init__()
        self.lr, self.epochs, self.restore = lr, epochs, restore

    def on_epoch_begin(self, epoch, logs=None):
        if epoch < self.epochs:
            self.model.optimizer.learning_rate.assign(self.lr * (epoch + 1) / (self.epochs + 1))
        elif epoch == self.epochs and self.restore:
            self.model.optimizer.learning_rate.assign(self.lr)


def ema_callbacks(hp: Hyperparameters) -> list[keras.callbacks.Callback]:
    """With `hp.ema`, Keras' swap of the averaged weights into the model for each validation and at
    each epoch's end, so that what is scored, checkpointed and kept is the average. Put it before
    any checkpoint callback: it swaps at epoch end in list order."""
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if hp.ema else []


def lr_schedule_callbacks(hp: Hyperparameters, horizon: int,
                          monitor: str = "val_loss") -> list[keras.callbacks.Callback]:
    """`hp.lr_schedule` and `hp.warmup_epochs` as callbacks (none for the seed's constant rate).

    "plateau": divide by 10 when validation loss (`monitor`) has not improved for about a tenth of
    the run, as the paper did by hand. "cosine": anneal from `hp.lr` towards 0 over `horizon` epochs. A
    warmup sets the rate itself in its first epochs (`Warmup`), over whatever the schedule set.
    All key on the epoch index, so a Hyperband trial continuing from epoch k picks up where its
    parent left off.
    """
    kind, lr = hp.lr_schedule, hp.lr
    if kind == "constant":
        schedule = []
    elif kind == "plateau":
        schedule = [keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.1, patience=max(2, horizon // 10), min_lr=lr * 1e-3, verbose=0
        )]
    elif kind == "cosine":
        schedule = [keras.callbacks.LearningRateScheduler(
            lambda epoch: lr * 0.5 * (1 + math.cos(math.pi * min(epoch, horizon) / horizon)), verbose=0
        )]
    else:
        raise ValueError(f"unknown learning-rate schedule {kind!r}; use one of {', '.join(BOUNDS['lr_schedule'].names)}")
    if hp.warmup_epochs:
        schedule.append(Warmup(lr, int(hp.warmup_epochs), restore=kind != "cosine"))
    return schedule
