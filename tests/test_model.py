"""model.py: the seed's AlexNet at 128x128, the input-size rule, and inference behaviour."""

import keras
import numpy as np
import pytest

from alexnet_search.errors import UserError
from alexnet_search.geometry import FeatureSizes, check_image_size, conv1_stride, feature_sizes, smallest_image_size
from alexnet_search.model import build_alexnet, clear_session, compile_alexnet, lr_schedule_callbacks
from alexnet_search.space import Hyperparameters

from conftest import TINY_NET


def _conv(k, cin, cout):
    return k * k * cin * cout + cout


def test_default_model_at_128_matches_the_seed_description():
    model = build_alexnet()
    shapes = {layer.name: tuple(layer.output.shape[1:]) for layer in model.layers}
    assert shapes["resize"] == (128, 128, 3)
    assert shapes["conv1"] == (30, 30, 96)  # 11x11 stride 4, valid
    assert shapes["pool1"] == (14, 14, 96)
    assert shapes["conv2"] == (14, 14, 256)
    assert shapes["pool2"] == (6, 6, 256)
    assert shapes["conv3"] == (6, 6, 384)
    assert shapes["conv4"] == (6, 6, 384)
    assert shapes["conv5"] == (6, 6, 256)
    assert shapes["pool3"] == (2, 2, 256)
    assert shapes["flatten"] == (1024,)
    assert shapes["fc1"] == (4096,) and shapes["fc2"] == (4096,)
    assert shapes["predictions"] == (10,)
    assert model.get_layer("drop1").rate == 0.5 and model.get_layer("drop2").rate == 0.5
    assert model.get_layer("conv1").strides == (4, 4)
    assert model.get_layer("bn1").momentum == model.get_layer("bn2").momentum == 0.99  # Keras' default

    convs = _conv(11, 3, 96) + _conv(5, 96, 256) + _conv(3, 256, 384) + _conv(3, 384, 384) + _conv(3, 384, 256)
    dense = (1024 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 10 + 10)
    batch_norm = 4 * 96 + 4 * 256  # gamma, beta, moving mean, moving variance
    assert model.count_params() == convs + dense + batch_norm
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == convs + dense + 2 * (96 + 256)


@pytest.mark.parametrize("size, stride, last", [(128, 4, 2), (96, 3, 2), (64, 2, 2), (32, 1, 1)])
def test_size_rule_keeps_the_stack_valid(size, stride, last):
    assert conv1_stride(size) == stride
    assert feature_sizes(size).pool3 == last
    model = build_alexnet(image_size=size)
    assert tuple(model.get_layer("pool3").output.shape[1:3]) == (last, last)


def test_a_3x3_conv1_at_32x32_keeps_the_papers_map_sizes():
    # The seed's 11x11 at 128x128 (stride 4) gives 30 -> 14, 6, 2; at 32x32 (stride 1) only a 3x3 does.
    assert feature_sizes(128) == feature_sizes(32, conv1_kernel=3) == FeatureSizes(30, 14, 6, 2)
    model = build_alexnet(TINY_NET, image_size=32, conv1_kernel=3)
    assert model.get_layer("conv1").kernel_size == (3, 3)
    assert tuple(model.get_layer("pool3").output.shape[1:3]) == (2, 2)
    with pytest.raises(UserError, match="with a 13x13 conv1 .* use image_size >= 27"):
        check_image_size(24, conv1_kernel=13)


def test_too_small_size_names_the_smallest_that_works():
    smallest = smallest_image_size()
    assert feature_sizes(smallest) is not None and feature_sizes(smallest - 1) is None
    with pytest.raises(UserError, match=f"image_size >= {smallest}"):
        check_image_size(smallest - 1)
    with pytest.raises(UserError, match="too small"):
        build_alexnet(image_size=8)


def test_batch_norm_momentum_sets_how_fast_the_inference_statistics_follow_training():
    # After a few steps at 0.9 the moving mean has left its initial 0; at 0.99 it barely moved.
    x = np.full((64, 32, 32, 3), 200, np.uint8)
    y = np.zeros(64, np.int64)
    moved = {}
    for momentum in (0.9, 0.99):
        keras.utils.set_random_seed(0)
        model = compile_alexnet(build_alexnet(TINY_NET, image_size=32, conv1_kernel=3, bn_momentum=momentum))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        bn = model.get_layer("bn1")
        assert bn.momentum == momentum
        moved[momentum] = float(np.abs(keras.ops.convert_to_numpy(bn.moving_mean)).mean())
    assert moved[0.9] > 5 * moved[0.99] > 0


def test_takes_uint8_images_and_predicts_deterministically_at_inference():
    model = build_alexnet(TINY_NET, image_size=32)
    assert model.inputs[0].dtype == "uint8"
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    a = np.asarray(model(x, training=False))
    b = np.asarray(model(x, training=False))
    np.testing.assert_allclose(a, b)  # dropout is off, and nothing else is random
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)
    assert not np.allclose(np.asarray(model(x, training=True)), a)  # dropout is on in training


def test_the_model_can_be_xla_compiled():
    # Keras turns jit_compile off for a whole model holding a layer that cannot be compiled
    # (RandomTranslation is one), which is why augmentation lives in the input pipeline.
    from keras.src.trainers.trainer import model_supports_jit

    assert model_supports_jit(build_alexnet(TINY_NET, image_size=32))


def test_compile_uses_sgd_with_the_given_settings():
    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32),
                            Hyperparameters(lr=0.01, momentum=0.9, weight_decay=5e-4))
    opt = model.optimizer
    assert opt.__class__.__name__ == "SGD"
    assert float(opt.learning_rate) == pytest.approx(0.01)
    assert opt.momentum == pytest.approx(0.9) and opt.weight_decay == pytest.approx(5e-4)
    x = np.zeros((2, 32, 32, 3), np.uint8)
    history = model.fit(x, np.array([0, 1]), epochs=1, verbose=0)
    assert "accuracy" in history.history


def test_learning_rate_schedules():
    def schedule(kind, horizon):
        found = lr_schedule_callbacks(Hyperparameters(lr=0.1, lr_schedule=kind), horizon)
        return found[0] if found else None

    assert schedule("constant", 10) is None
    cosine = schedule("cosine", 10)
    assert cosine.schedule(0) == pytest.approx(0.1)
    assert cosine.schedule(5) == pytest.approx(0.05)
    assert cosine.schedule(12) == pytest.approx(0.0)  # a continued run stays at the end
    plateau = schedule("plateau", 64)
    assert plateau.monitor == "val_loss" and plateau.factor == pytest.approx(0.1) and plateau.patience == 6
    with pytest.raises(ValueError, match="unknown learning-rate schedule"):
        schedule("linear", 10)


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_computes_in_16_bits_and_outputs_float32(precision):
    model = compile_alexnet(
        build_alexnet(TINY_NET, image_size=32, precision=precision),
        precision=precision,
    )
    assert model.get_layer("conv1").compute_dtype == precision.split("_")[1]
    assert model.get_layer("conv1").variable_dtype == "float32"
    assert model.get_layer("predictions").compute_dtype == "float32"
    if precision == "mixed_float16":
        assert model.optimizer.__class__.__name__ == "LossScaleOptimizer"
    x = np.zeros((4, 32, 32, 3), np.uint8)
    model.fit(x, np.arange(4), epochs=1, verbose=0)
    assert model.predict(x, verbose=0).dtype == np.float32


def _between_trials() -> int:
    """What a search does between trials: ours (no garbage collection), then Keras Tuner's
    `_try_build` (Keras' clear_session, gc.collect)."""
    import gc

    import keras

    from alexnet_search.model import drop_backend_caches

    dropped = drop_backend_caches()
    keras.backend.clear_session()
    gc.collect()
    return dropped


@pytest.mark.parametrize("clear", [clear_session, _between_trials], ids=["between seeds", "between trials"])
def test_clear_session_frees_the_graphs_of_a_trained_model(clear):
    """Keras' clear_session alone leaves TensorFlow holding every trained model's step graphs (about
    6 MB a trial, for the whole search); ours frees them."""
    import gc
    import weakref

    from tensorflow.python.framework.func_graph import FuncGraph

    def graphs():
        return {id(o): o for o in gc.get_objects() if isinstance(o, FuncGraph)}

    before = graphs()
    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32), Hyperparameters(lr=0.01))
    x = np.random.default_rng(0).integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    model.fit(x, np.arange(32) % 10, batch_size=8, epochs=1, validation_split=0.25, verbose=0)
    made = [weakref.ref(g) for i, g in graphs().items() if i not in before]
    assert made  # the train and test steps were traced
    del model
    assert clear() >= 1
    assert [r for r in made if r() is not None] == []


def test_smoothed_crossentropy_is_the_plain_one_at_zero_and_mixes_in_the_uniform_target():
    from alexnet_search.model import SmoothedCrossentropy

    y = np.array([0, 2])
    p = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    plain = -np.log([0.7, 0.8]).mean()
    uniform = -np.log(p).mean(axis=1).mean()
    assert float(SmoothedCrossentropy(0.0)(y, p)) == pytest.approx(plain, rel=1e-5)
    assert float(SmoothedCrossentropy(0.1)(y, p)) == pytest.approx(0.9 * plain + 0.1 * uniform, rel=1e-5)


def test_label_smoothing_compiles_its_loss_and_trains():
    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32), Hyperparameters(label_smoothing=0.1))
    assert model.loss.smoothing == pytest.approx(0.1)
    history = model.fit(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert compile_alexnet(build_alexnet(TINY_NET, image_size=32)).loss == "sparse_categorical_crossentropy"


def test_warmup_ramps_the_rate_then_hands_over():
    from alexnet_search.model import Warmup, lr_schedule_callbacks

    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32), Hyperparameters(lr=0.04))
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(round(float(self.model.optimizer.learning_rate), 6))

    callbacks = lr_schedule_callbacks(Hyperparameters(lr=0.04, warmup_epochs=3), horizon=10)
    assert [type(c) for c in callbacks] == [Warmup]
    model.fit(np.zeros((4, 32, 32, 3), np.uint8), np.arange(4), epochs=5, verbose=0, callbacks=[*callbacks, Record()])
    assert seen == [0.01, 0.02, 0.03, 0.04, 0.04]
    cosine = lr_schedule_callbacks(Hyperparameters(lr=0.04, warmup_epochs=2, lr_schedule="cosine"), horizon=10)
    assert not cosine[-1].restore  # after the warmup the cosine sets the rate, not the warmup


def test_the_export_loads_with_keras_alone_and_tta_averages_the_mirror(tmp_path):
    from alexnet_search.model import for_export

    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32), Hyperparameters(label_smoothing=0.2))
    x = np.random.default_rng(1).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    model.fit(x, np.arange(6), epochs=1, verbose=0)
    exported = for_export(model, tta=True)
    want = (model.predict(x, verbose=0) + model.predict(x[:, :, ::-1], verbose=0)) / 2
    np.testing.assert_allclose(exported.predict(x, verbose=0), want, atol=1e-6)
    exported.save(tmp_path / "m.keras")
    import subprocess
    import sys

    # A process that never imports alexnet_search, so none of its classes are registered with Keras.
    script = ("import keras, numpy as np; m = keras.models.load_model(r'%s', safe_mode=True); "
              "print(m.predict(np.zeros((2, 32, 32, 3), np.uint8), verbose=0).shape)" % (tmp_path / "m.keras"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "(2, 10)" in done.stdout, done.stderr[-2000:]


@pytest.mark.backends
def test_ema_scores_checkpoints_and_keeps_the_average_of_the_weights():
    from alexnet_search.model import ema_callbacks

    hp = Hyperparameters(lr=0.05, momentum=0.9, nesterov=True, ema=0.5)
    model = compile_alexnet(build_alexnet(TINY_NET, image_size=32), hp)
    assert model.optimizer.nesterov and model.optimizer.use_ema
    raw, at_epoch_end = [], []

    class Record(keras.callbacks.Callback):  # after the swap, as a checkpoint callback is
        def on_train_batch_end(self, batch, logs=None):
            raw.append([w.copy() for w in self.model.get_weights()])

        def on_epoch_end(self, epoch, logs=None):
            at_epoch_end.append(self.model.get_weights())

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8), np.arange(12) % 10
    model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0, callbacks=[*ema_callbacks(hp), Record()])

    trainable = [i for i, w in enumerate(model.weights) if w.trainable]
    average = raw[0]
    for step, weights in enumerate(raw[1:], start=2):
        average = [0.5 * a + 0.5 * w if i in trainable else w for i, (a, w) in enumerate(zip(average, weights))]
        if step % 3 == 0:  # an epoch's end: what a checkpoint saves is the average
            for i in trainable:
                np.testing.assert_allclose(at_epoch_end[step // 3 - 1][i], average[i], rtol=1e-5, atol=1e-6)
    for i in trainable:  # and the model keeps it after fit
        np.testing.assert_allclose(model.get_weights()[i], average[i], rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.get_weights()[trainable[0]], raw[-1][trainable[0]])
    assert ema_callbacks(Hyperparameters()) == [] and not compile_alexnet(
        build_alexnet(TINY_NET, image_size=32)).optimizer.use_ema
