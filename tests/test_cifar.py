"""cifar.py: the batch reader (safe), folder sources, and what each bad input says."""

import os
import pickle

import numpy as np
import pytest

from alexnet_search import cifar
from alexnet_search.errors import UserError

from conftest import synthetic_images, write_batch



def test_reads_a_batch_as_cifar_shaped_uint8(tmp_path):
    images, labels = synthetic_images(5, seed=0)
    images[0, 1, 2] = [10, 20, 30]  # distinct red, green and blue planes
    write_batch(tmp_path / "data_batch_1", images, labels)
    x, y = cifar.load_batch(tmp_path / "data_batch_1")
    assert x.shape == (5, 32, 32, 3) and x.dtype == np.uint8
    assert list(x[0, 1, 2]) == [10, 20, 30]
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, labels)


def test_same_result_as_keras_own_reader(tmp_path, shared_cifar):
    from keras.src.datasets.cifar import load_batch as keras_load_batch

    ours_x, ours_y = cifar.load_batch(shared_cifar / "test_batch")
    keras_x, keras_y = keras_load_batch(str(shared_cifar / "test_batch"))
    np.testing.assert_array_equal(ours_x, keras_x.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(ours_y, keras_y)
    assert ours_x.shape == (10000, 32, 32, 3)


def test_shared_folder_loads_with_its_single_training_batch(shared_cifar):
    x, y = cifar.Source(shared_cifar).train()
    assert x.shape == (10000, 32, 32, 3) and set(np.unique(y)) == set(range(10))


def test_any_number_of_training_batches_in_numeric_order(tmp_path):
    for n in (1, 2, 10):
        images = np.full((3, 32, 32, 3), n, np.uint8)
        write_batch(tmp_path / f"data_batch_{n}", images, [n % 10] * 3)
    x, y = cifar.Source(tmp_path).train()
    assert list(x[::3, 0, 0, 0]) == [1, 2, 10]  # 10 after 2, not after 1


def test_flag_beats_environment_variable_and_parent_folder_is_accepted(tmp_path, cifar_dir, monkeypatch):
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path / "elsewhere"))
    assert cifar.resolve_data_dir(str(cifar_dir)) == cifar_dir
    monkeypatch.setenv("CIFAR10_DIR", str(cifar_dir))
    assert cifar.resolve_data_dir(None) == cifar_dir
    assert cifar.resolve_data_dir(str(cifar_dir.parent)) == cifar_dir  # where the tarball was unpacked
    monkeypatch.delenv("CIFAR10_DIR")
    assert cifar.resolve_data_dir(None) is None


def test_missing_or_empty_folders_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        cifar.resolve_data_dir(str(tmp_path / "missing"))
    with pytest.raises(UserError, match="no data_batch_N files"):
        cifar.Source(tmp_path).train()
    with pytest.raises(UserError, match="no test_batch"):
        cifar.Source(tmp_path).test()


def test_corrupt_and_truncated_batches_are_clear_errors(tmp_path, cifar_dir):
    good = (cifar_dir / "data_batch_1").read_bytes()
    (tmp_path / "data_batch_1").write_bytes(good[: len(good) // 2])
    with pytest.raises(UserError, match="corrupt or truncated"):
        cifar.Source(tmp_path).train()
    (tmp_path / "data_batch_1").write_bytes(b"this is not a pickle at all")
    with pytest.raises(UserError, match="corrupt or truncated"):
        cifar.load_batch(tmp_path / "data_batch_1")
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(UserError, match=r"shape \(N, 3072\)"):
        cifar.load_batch(tmp_path / "data_batch_1")
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, f)
    with pytest.raises(UserError, match="labels"):
        cifar.load_batch(tmp_path / "data_batch_1")

class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_would_run_a_command_is_refused_unrun(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "data_batch_1", "wb") as f:
        pickle.dump({b"data": _Exploit(marker), b"labels": []}, f)
    with pytest.raises(UserError, match="asks to load code .*(posix|os).system"):
        cifar.load_batch(tmp_path / "data_batch_1")
    assert not marker.exists()


def test_failed_download_says_how_to_work_offline(monkeypatch):
    import keras

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.cifar10, "load_data", offline)
    with pytest.raises(UserError, match="--data-dir PATH or set CIFAR10_DIR"):
        cifar.Source(None).train()
