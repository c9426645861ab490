"""hypermodel.py: the preset's space on `hp`, seed defaults, every corner builds, fit forwards."""

import keras
import keras_tuner
import numpy as np
import pytest

from alexnet_search.config import load_config
from alexnet_search.hypermodel import AlexNetHyperModel

from conftest import REPO

PAPER = load_config(REPO / "tuning" / "paper.toml")


def _layer_widths(model):
    return {name: model.get_layer(name).filters for name in ("conv1", "conv2", "conv3", "conv4", "conv5")} | {
        "dense": model.get_layer("fc1").units}


def test_the_seeds_values_build_the_seed_model_wherever_the_space_starts():
    from alexnet_search.retrain import hyperparameters_with

    # paper.toml's ranges leave some seed values out (no momentum, no decay): its searches start
    # elsewhere, but the seed's baseline is still the seed's model.
    assert PAPER.space["momentum"]["default"] == 0.9
    model = AlexNetHyperModel.from_config(PAPER).build(hyperparameters_with(PAPER, {}))
    assert _layer_widths(model) == {"conv1": 96, "conv2": 256, "conv3": 384, "conv4": 384, "conv5": 256, "dense": 4096}
    assert model.get_layer("drop1").rate == 0.5
    opt = model.optimizer
    assert float(opt.learning_rate) == pytest.approx(1e-3)
    assert opt.momentum == 0.0 and not opt.weight_decay
    # The same network as the model builder's own defaults (the seed's script), weight for weight.
    from alexnet_search.model import build_alexnet

    assert [w.shape for w in model.weights] == [w.shape for w in build_alexnet().weights]


def test_a_baseline_differs_from_the_seed_in_its_own_values_alone():
    from alexnet_search.retrain import hyperparameters_with
    from alexnet_search.space import SEED_SCRIPT

    recipe = PAPER["baselines"]["paper"]
    hp = hyperparameters_with(PAPER, recipe)
    assert AlexNetHyperModel.from_config(PAPER).hyperparameters(hp).as_dict() == {**SEED_SCRIPT, **recipe}
    assert hp.values["label_smoothing"] == 0.0  # the seed's, not the space's starting 0.1


def test_values_outside_the_bounds_fail_before_any_weight_is_made():
    """A trial's values may come from a chief over the wire: a width of a billion is refused, not allocated."""
    from alexnet_search.retrain import hyperparameters_with

    hypermodel = AlexNetHyperModel.from_config(PAPER)
    for name, value, message in (("conv3_filters", 10**9, "conv3_filters = 1000000000 is out of range"),
                                 ("dropout", 1.5, "dropout = 1.5 is out of range"),
                                 ("lr_schedule", "exponential", "lr_schedule = 'exponential' is not one of")):
        hp = hyperparameters_with(PAPER, {})
        hp.values[name] = value  # as a trial's values arrive: set, not declared
        with pytest.raises(ValueError, match=message):
            hypermodel.build(hp)


def test_the_presets_conv1_kernel_reaches_the_model(tmp_path):
    preset = tmp_path / "k.toml"
    preset.write_text(f'extends = "{REPO / "tuning" / "cpu.toml"}"\n[model]\nconv1_kernel = 5\n')
    model = AlexNetHyperModel.from_config(load_config(preset)).build(keras_tuner.HyperParameters())
    assert model.get_layer("conv1").kernel_size == (5, 5)


def test_names_the_space_does_not_search_keep_the_seed_value():
    from alexnet_search.space import SEED_SCRIPT

    narrow = AlexNetHyperModel({"lr": PAPER.space["lr"]}, image_size=32, width_multiplier=0.125)
    hp = keras_tuner.HyperParameters()
    narrow.build(hp)
    hp.values["lr"] = 0.05
    assert narrow.hyperparameters(hp).as_dict() == {**SEED_SCRIPT, "lr": 0.05}
    model = narrow.build(hp)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.05)
    assert model.get_layer("drop1").rate == 0.5 and model.get_layer("conv1").filters == 12  # 96 / 8


def _corner(space, end):
    values = {}
    for name, entry in space.items():
        if entry["type"] == "choice":
            values[name] = sorted(entry["values"])[0 if end == "min" else -1]
        else:
            values[name] = entry[end]
    return values


@pytest.mark.parametrize("end", ["min", "max"])
def test_every_corner_of_the_space_builds_and_trains(end):
    values = _corner(PAPER.space, end)
    hp = keras_tuner.HyperParameters()
    hypermodel = AlexNetHyperModel.from_config(PAPER)
    hypermodel.build(hp)  # declare the space
    hp.values.update(values)
    model = hypermodel.build(hp)  # at the paper's 128x128
    assert model.get_layer("conv3").filters == values["conv3_filters"]
    assert model.get_layer("fc1").units == values["dense_units"]
    small = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125).build(hp)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    small.fit(x, np.arange(4), epochs=1, verbose=0)


def test_width_multiplier_scales_every_width_but_not_the_hyperparameters():
    hp = keras_tuner.HyperParameters()
    model = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.25).build(hp)
    assert _layer_widths(model) == {"conv1": 24, "conv2": 64, "conv3": 96, "conv4": 96, "conv5": 64, "dense": 1024}
    assert hp.get("conv3_filters") == 384


def test_fit_forwards_callbacks_and_hyperband_epochs():
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    history = hypermodel.fit(hp, model, x, np.arange(4), epochs=3, initial_epoch=1, verbose=0, callbacks=[Record()])
    assert seen == [1, 2]
    assert len(history.history["loss"]) == 2


def test_with_ema_keras_tuners_checkpoint_callback_sees_the_averaged_weights():
    saved = []

    class Checkpoint(keras.callbacks.Callback):  # where Keras Tuner's sits: among fit's callbacks
        def on_epoch_end(self, epoch, logs=None):
            saved.append(self.model.get_weights())

    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125)
    hp = keras_tuner.HyperParameters()
    hp.values.update({"ema": 0.9, "lr": 0.05, "momentum": 0.9})
    model = hypermodel.build(hp)
    x = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    hypermodel.fit(hp, model, x, np.arange(8), batch_size=2, epochs=1, verbose=0, callbacks=[Checkpoint()])
    # fit ends with the average in the model (Keras' finalize_variable_values): the checkpoint had it too
    for kept, final in zip(saved[-1], model.get_weights()):
        np.testing.assert_array_equal(kept, final)


def test_a_searched_choice_of_booleans_reaches_the_optimiser_as_a_boolean():
    space = {**PAPER.space, "nesterov": {"type": "choice", "values": [True], "default": True}}
    hypermodel = AlexNetHyperModel(space, image_size=32, width_multiplier=0.125)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    assert hp.values["nesterov"] == 1  # how Keras Tuner keeps it
    assert hypermodel.hyperparameters(hp).nesterov is True and model.optimizer.nesterov is True


def test_fit_builds_the_augmented_pipeline_from_hp():
    from alexnet_search.data import TrainingSet

    asked = []

    class Recording(TrainingSet):
        def batches(self, hp):
            asked.append(hp.translate)
            return super().batches(hp)

    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hp.values["translate"] = 0.15
    train = Recording(np.zeros((8, 32, 32, 3), np.uint8), np.arange(8) % 10, batch_size=4)
    history = hypermodel.fit(hp, model, train, epochs=1, verbose=0)
    assert asked == [0.15] and len(history.history["loss"]) == 1


def test_a_seeded_fit_repeats_exactly():
    """Same seed, same weights, batches and augmentation draws: the same losses to the last bit."""
    from alexnet_search.data import TrainingSet

    rng = np.random.default_rng(0)
    train = TrainingSet(rng.integers(0, 256, (128, 32, 32, 3), dtype=np.uint8), np.arange(128) % 10,
                        batch_size=32, seed=4)
    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125)

    def losses():
        keras.utils.set_random_seed(4)
        hp = keras_tuner.HyperParameters()
        model = hypermodel.build(hp)
        hp.values["translate"] = 0.2
        return hypermodel.fit(hp, model, train, epochs=2, verbose=0).history["loss"]

    assert losses() == losses()


def test_fit_applies_the_learning_rate_schedule_over_the_horizon():
    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125, horizon=4)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)
    hp.values.update({"lr_schedule": "cosine", "lr": 0.01})
    model = hypermodel.build(hp)
    x = np.zeros((4, 32, 32, 3), np.uint8)
    hypermodel.fit(hp, model, x, np.arange(4), epochs=3, initial_epoch=1, verbose=0, callbacks=[])
    # epochs 1 and 2 of a 4-epoch cosine: the rate in force at epoch 2 is 0.01 * (1 + cos(pi/2)) / 2
    assert float(model.optimizer.learning_rate) == pytest.approx(0.005, rel=1e-5)


@pytest.mark.parametrize("validated, monitor", [(True, "val_loss"), (False, "loss")])
def test_a_plateau_schedule_watches_the_validation_loss_or_without_one_the_training_loss(validated, monitor):
    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32, width_multiplier=0.125, horizon=4)
    hp = keras_tuner.HyperParameters()
    hp.values.update({"lr_schedule": "plateau", "lr": 0.01})
    model = hypermodel.build(hp)
    x, y = np.zeros((4, 32, 32, 3), np.uint8), np.arange(4)
    seen = []

    fit = model.fit

    def spy(*args, callbacks=(), **kwargs):
        seen.extend(c.monitor for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau))
        return fit(*args, callbacks=callbacks, **kwargs)

    model.fit = spy
    hypermodel.fit(hp, model, x, y, epochs=1, verbose=0, validation_data=(x, y) if validated else None)
    assert seen == [monitor]


def test_stepped_floats_are_clean():
    hp = keras_tuner.HyperParameters()
    hypermodel = AlexNetHyperModel(PAPER.space, image_size=32)
    hypermodel.build(hp)
    hp.values["dropout"] = 0.6000000000000001
    assert hypermodel.values(hp)["dropout"] == 0.6
