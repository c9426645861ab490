"""data.py: splits, the numpy batches and their augmentation."""

import numpy as np
import pytest

from alexnet_search import data
from alexnet_search.errors import UserError
from alexnet_search.space import Hyperparameters





def test_splits_take_validation_from_further_images_when_there_are_some():
    x = np.arange(100).reshape(100, 1)
    y = np.arange(100) % 10
    s = data.make_splits(x, y, train_size=60, val_size=30)
    assert len(s.x_train) == 60 and len(s.x_val) == 30
    assert set(s.x_train.ravel()).isdisjoint(s.x_val.ravel())
    assert s.x_val.ravel()[0] == 60 and s.x_val.ravel()[-1] == 89
    assert "validating on images 60-89 (90 of 100 used)" in s.note


def test_splits_carve_validation_from_the_subset_and_say_so():
    x = np.arange(100).reshape(100, 1)
    s = data.make_splits(x, np.zeros(100), train_size=100, val_size=20)
    assert len(s.x_train) == 80 and len(s.x_val) == 20
    assert set(s.x_train.ravel()).isdisjoint(s.x_val.ravel())
    assert "carved" in s.note
    with pytest.raises(UserError, match="need more than the 100 training images"):
        data.make_splits(x, np.zeros(100), train_size=200, val_size=20)


def _epoch(ds) -> list:
    """One epoch's batches, as Keras' fit loop draws them (the epoch ends after the last)."""
    batches = [ds[i] for i in range(len(ds))]
    ds.on_epoch_end()
    return batches


def test_dataset_yields_uint8_batches_reshuffled_each_epoch():
    x = np.arange(64, dtype=np.uint8).reshape(64, 1, 1, 1) * np.ones((1, 32, 32, 3), np.uint8)
    ds = data.Batches(x, np.arange(64), batch_size=16, shuffle=True, seed=3)
    first = [int(v) for xb, yb in _epoch(ds) for v in yb]
    second = [int(v) for xb, yb in _epoch(ds) for v in yb]
    assert sorted(first) == list(range(64)) and sorted(second) == list(range(64)) and first != second
    xb, yb = ds[0]
    assert xb.dtype == np.uint8 and tuple(xb.shape) == (16, 32, 32, 3)
    assert all(np.all(img == label) for img, label in zip(xb, yb))  # images stay with their labels


def test_evaluation_batches_keep_every_image_in_order_and_training_drops_the_partial_batch():
    x = np.arange(40, dtype=np.uint8).reshape(40, 1, 1, 1) * np.ones((1, 32, 32, 3), np.uint8)
    plain = data.Batches(x, np.arange(40), batch_size=16)
    assert [len(yb) for _, yb in _epoch(plain)] == [16, 16, 8]
    assert [int(v) for _, yb in _epoch(plain) for v in yb] == list(range(40))
    # A differently shaped last batch would compile the train step twice per model under XLA.
    train = data.Batches(x, np.arange(40), batch_size=16, shuffle=True, seed=1)
    assert [len(yb) for _, yb in _epoch(train)] == [16, 16]
    tiny = data.Batches(x[:10], np.arange(10), batch_size=16, shuffle=True, seed=1)
    assert [len(yb) for _, yb in _epoch(tiny)] == [10]  # fewer images than a batch: still trains


def test_pipeline_switches_change_threads_and_queue_not_the_data():
    x = np.random.default_rng(0).integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    fast = data.Batches(x, np.arange(48), batch_size=8, shuffle=True, seed=2, translate=0.1)
    plain = data.Batches(x, np.arange(48), batch_size=8, shuffle=True, seed=2, translate=0.1,
                              parallel_map=False, prefetch=False)
    assert fast.workers > 1 and plain.workers == 1 and fast.max_queue_size > plain.max_queue_size
    for a, b in zip(_epoch(fast), _epoch(plain)):
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_keras_threads_hand_back_the_same_batches_in_order():
    """Keras' enqueuer builds batches on worker threads: what the model sees must not depend on
    which thread finished first."""
    import keras

    x = np.random.default_rng(0).integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)
    # An identity model: predict returns exactly the (augmented) images it was fed, in order.
    model = keras.Sequential([keras.Input((32, 32, 3), dtype="uint8"), keras.layers.Rescaling(1.0)])

    def seen(parallel_map):
        ds = data.Batches(x, np.arange(96) % 10, 16, shuffle=True, seed=4, translate=0.25,
                               parallel_map=parallel_map)
        first = model.predict(ds, verbose=0)
        ds.on_epoch_end()
        return first, model.predict(ds, verbose=0)

    threaded, ordered = seen(True), seen(False)
    assert threaded[0].shape == (96, 32, 32, 3)
    assert all(np.array_equal(a, b) for a, b in zip(threaded, ordered))
    assert not np.array_equal(threaded[0], threaded[1])


def test_augmented_epochs_are_the_same_in_every_run_and_differ_from_each_other():
    x = np.random.default_rng(0).integers(0, 256, (96, 32, 32, 3), dtype=np.uint8)

    def epochs(seed, parallel_map=True):
        ds = data.TrainingSet(x, np.arange(96) % 10, 16, seed=seed, parallel_map=parallel_map).batches(Hyperparameters(translate=0.25))
        return [np.concatenate([xb for xb, _ in _epoch(ds)]) for _ in range(2)]

    a, b = epochs(5), epochs(5, parallel_map=False)
    assert all(np.array_equal(p, q) for p, q in zip(a, b))
    assert not np.array_equal(a[0], a[1])
    assert not np.array_equal(a[0], epochs(6)[0])


def test_augmentation_flips_and_shifts_without_inventing_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    batch = np.repeat(image[None], 20, axis=0)
    flips = data.augment(batch, 0.0, np.random.default_rng(1))
    assert all(np.array_equal(f, image) or np.array_equal(f, image[:, ::-1]) for f in flips)
    assert any(np.array_equal(f, image[:, ::-1]) for f in flips) and any(np.array_equal(f, image) for f in flips)
    assert np.array_equal(batch[0], image)  # the caller's array is left alone

    shifted = data.augment(batch, 0.25, np.random.default_rng(2))
    assert any(not np.array_equal(s, image) and not np.array_equal(s, image[:, ::-1]) for s in shifted)
    assert shifted.dtype == np.uint8 and shifted.shape == (20, 32, 32, 3)
    # a shift by up to 8 pixels keeps the centre 16x16 of the image somewhere in the output
    centre = image[8:24, 8:24]
    for s in shifted:
        found = any(
            np.array_equal(s[i:i + 16, j:j + 16], c) for c in (centre, centre[:, ::-1])
            for i in range(17) for j in range(17)
        )
        assert found


def test_cutout_greys_a_square_of_its_fraction_and_nothing_without_it():
    images = np.zeros((64, 32, 32, 3), np.uint8)
    plain = data.augment(images, 0.0, np.random.default_rng(1))
    assert (plain == 0).all()
    cut = data.augment(images, 0.0, np.random.default_rng(1), cutout=0.25)
    grey = (cut[..., 0] == 128).sum(axis=(1, 2))
    assert grey.max() == 64 and grey.min() > 0  # an 8x8 square, clipped where it overhangs an edge
    # The flips and shifts draw first: with cutout the rest of the augmentation is unchanged.
    x = np.random.default_rng(2).integers(0, 128, (16, 32, 32, 3), dtype=np.uint8)
    a = data.augment(x, 0.1, np.random.default_rng(3))
    b = data.augment(x, 0.1, np.random.default_rng(3), cutout=0.25)
    assert ((a == b) | (b == 128)).all()


def test_training_batches_take_cutout_from_the_hyperparameters():
    x = np.zeros((32, 32, 32, 3), np.uint8)
    batches = data.TrainingSet(x, np.arange(32) % 10, 16, seed=1).batches(Hyperparameters(translate=0.0, cutout=0.5))
    images, _ = batches[0]
    assert (images == 128).any() and batches.cutout == 0.5
