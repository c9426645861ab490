"""batchnorm.py: the fused layer computes what Keras' own does, and never reaches an export."""

import json
import zipfile

import keras
import numpy as np
import pytest

from alexnet_search import batchnorm
from alexnet_search.batchnorm import to_keras_layers
from alexnet_search.model import build_alexnet, for_export

from conftest import TINY_NET

pytestmark = pytest.mark.backends  # on JAX the layer is Keras' own: the same checks hold


def _pair(x, momentum=0.9, **kwargs):
    """Keras' layer and the fused one, built alike and holding the same (non-default) weights."""
    ours, theirs = batchnorm.BatchNormalization(momentum=momentum, **kwargs), keras.layers.BatchNormalization(momentum=momentum, **kwargs)
    ours.build(x.shape), theirs.build(x.shape)
    weights = [w + 0.3 * (i + 1) for i, w in enumerate(theirs.get_weights())]  # gamma, beta, moving mean, variance
    ours.set_weights(weights), theirs.set_weights(weights)
    return ours, theirs


def _grads(layer, x):
    """Output, and gradients of a loss that weighs every output differently, for input, gamma and beta."""
    weights = np.linspace(-1.0, 2.0, x.size, dtype="float32").reshape(x.shape)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        xt = tf.constant(x)
        with tf.GradientTape() as tape:
            tape.watch(xt)
            y = layer(xt, training=True)
            loss = tf.reduce_sum(y * y * weights)
        return [np.asarray(v) for v in (y, *tape.gradient(loss, [xt, layer.gamma, layer.beta]))]
    import jax
    import jax.numpy as jnp

    def loss(x, gamma, beta):
        y, _ = layer.stateless_call([gamma, beta], [layer.moving_mean.value, layer.moving_variance.value],
                                    x, training=True)
        return jnp.sum(y * y * weights), y

    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(x, layer.gamma.value, layer.beta.value)
    layer(x, training=True)  # the moving statistics' update, as a training step makes it
    return [np.asarray(v) for v in (y, *grads)]


def test_training_step_matches_keras_batch_norm():
    x = np.random.default_rng(0).normal(2.0, 3.0, (16, 6, 6, 8)).astype("float32")
    ours, theirs = _pair(x)
    got, want = _grads(ours, x), _grads(theirs, x)
    for name, a, b in zip(("output", "d input", "d gamma", "d beta"), got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(np.abs(b).max()), err_msg=name)
    # Keras 3 averages the biased batch variance into its moving statistics, and so must we.
    for a, b in zip(ours.get_weights()[2:], theirs.get_weights()[2:]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_inference_uses_the_moving_statistics_like_keras():
    x = np.random.default_rng(1).normal(-1.0, 2.0, (4, 5, 5, 3)).astype("float32")
    ours, theirs = _pair(x)
    np.testing.assert_allclose(np.asarray(ours(x, training=False)), np.asarray(theirs(x, training=False)),
                               rtol=1e-5, atol=1e-5)
    assert ours.get_weights()[2].tolist() == theirs.get_weights()[2].tolist()  # inference updates nothing


def test_what_the_kernel_cannot_take_falls_back_to_keras():
    flat = np.random.default_rng(2).normal(size=(8, 5)).astype("float32")  # 2-D: no fused kernel
    ours, theirs = _pair(flat)
    np.testing.assert_allclose(np.asarray(ours(flat, training=True)), np.asarray(theirs(flat, training=True)),
                               rtol=1e-5, atol=1e-5)
    x = np.zeros((2, 3, 3, 4), "float32")
    assert not batchnorm.BatchNormalization(axis=1)._fusable(x, None)  # channels first
    assert not batchnorm.BatchNormalization(epsilon=1e-6)._fusable(x, None)  # under the kernel's floor
    assert batchnorm.BatchNormalization()._fusable(x, None) == (keras.backend.backend() == "tensorflow")


def test_exports_carry_keras_own_layer_and_predict_the_same(tmp_path):
    model = build_alexnet(TINY_NET, image_size=32, conv1_kernel=3)
    assert isinstance(model.get_layer("bn1"), batchnorm.BatchNormalization)
    images = np.random.default_rng(3).integers(0, 256, (8, 32, 32, 3), dtype="uint8")
    model(images, training=True)  # moves the statistics off their initial 0 and 1
    exported = for_export(model)
    kinds = {type(layer) for layer in exported.layers}
    assert batchnorm.BatchNormalization not in kinds and keras.layers.BatchNormalization in kinds
    assert isinstance(model.get_layer("bn1"), batchnorm.BatchNormalization)  # the trained model is left alone
    np.testing.assert_allclose(exported.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)

    exported.save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        saved = json.loads(archive.read("config.json"))
    assert "alexnet_search" not in json.dumps(saved)  # loads where this package is not installed
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_model_saved_straight_from_the_builder_loads_back_with_this_package(tmp_path):
    images = np.random.default_rng(5).integers(0, 256, (4, 32, 32, 3), dtype="uint8")
    model = build_alexnet(TINY_NET, image_size=32, conv1_kernel=3)
    model.save(tmp_path / "raw.keras")
    reloaded = keras.models.load_model(tmp_path / "raw.keras", safe_mode=True)
    assert isinstance(reloaded.get_layer("bn1"), batchnorm.BatchNormalization)
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5, atol=1e-6)


def test_a_model_without_the_fused_layer_is_returned_as_it_is():
    plain = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.BatchNormalization()])
    assert to_keras_layers(plain) is plain


def test_weights_files_load_across_keras_layer_and_ours(tmp_path):
    """A weights file keys layers by class name: checkpoints written with Keras' layer (studies
    from before the fused one) must load into ours, and the other way round."""
    images = np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3), dtype="uint8")
    ours = build_alexnet(TINY_NET, image_size=32, conv1_kernel=3)
    ours(images, training=True)
    plain = to_keras_layers(ours)
    plain.save_weights(tmp_path / "plain.weights.h5")
    again = build_alexnet(TINY_NET, image_size=32, conv1_kernel=3)
    again.load_weights(tmp_path / "plain.weights.h5")
    for a, b in zip(again.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)
    ours.save_weights(tmp_path / "ours.weights.h5")
    fresh_plain = to_keras_layers(build_alexnet(TINY_NET, image_size=32, conv1_kernel=3))
    fresh_plain.load_weights(tmp_path / "ours.weights.h5")
    for a, b in zip(fresh_plain.get_weights(), ours.get_weights()):
        np.testing.assert_array_equal(a, b)
