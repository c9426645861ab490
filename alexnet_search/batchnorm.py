"""Batch norm as one TensorFlow kernel where it can be, Keras' own layer everywhere else.

Keras 3 assembles batch norm from its parts on every backend (`ops.moments`, then
`ops.batch_normalization`): on TensorFlow, about ten element-wise ops per layer in the forward pass
and as many in the gradient, each a pass over the activations (keras-core#225). TensorFlow's
FusedBatchNormV3 does the same arithmetic in one kernel (oneDNN's on a CPU, cuDNN's on a GPU).
On cpu.toml's network, one thread of this project's CPU, Keras' batch norm was 22% of a training
step; fused, an epoch trains about 15% faster (`make bench BENCH_ARGS=--only-batchnorm`).

`BatchNormalization` here is a `keras.layers.BatchNormalization` whose `call` takes the fused
kernel for what it covers (TensorFlow, 4-D channels-last inputs, no mask, renorm or synchronized
statistics, an epsilon above the kernel's 1e-5) and is Keras' own otherwise: same weights, same moving-statistics update (Keras 3
keeps the biased batch variance, so the kernel's unbiased one is scaled back). It is a training
detail, never exported: `to_keras_layers` swaps it back first, so a `.keras` file loads with
Keras alone, on any backend. It keeps Keras' class name because a weights file keys each layer
by it: checkpoints written before it existed (a study resumed, a retrain continued) load into it,
and its own load into Keras' layer.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="alexnet_search")
class BatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` (same arguments), through TensorFlow's fused kernel where it applies.

    Registered, so a model saved straight from `model.build_alexnet` loads where this package is
    imported, like any model with a custom layer; exports (`model.for_export`) need only Keras."""

    def _fusable(self, inputs, mask) -> bool:
        return (keras.backend.backend() == "tensorflow" and mask is None and len(inputs.shape) == 4
                and self.axis in (-1, 3) and not self.renorm and not self.synchronized
                and self.epsilon > 1.001e-5)  # the kernel's floor

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, "float32")  # as Keras does: statistics in float32 whatever the policy
        channels = x.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        if training and self.trainable:
            y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=self.epsilon, data_format="NHWC", is_training=True)
            n = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), "float32")
            variance = variance * (n - 1.0) / n  # the kernel's is unbiased; Keras 3 averages the biased one
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(
                self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(
                x, gamma, beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


def to_keras_layers(model: keras.Model) -> keras.Model:
    """`model` with every `BatchNormalization` replaced by Keras' own layer, weights copied;
    `model` itself where it has none."""
    if not any(isinstance(layer, BatchNormalization) for layer in model._flatten_layers()):
        return model

    def clone(layer):
        if isinstance(layer, BatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    return plain
