"""predict.py: images and model files from anyone, refused in one line when they are not ours to open."""

import struct
import zlib

import numpy as np
import pytest

from alexnet_search.errors import UserError
from alexnet_search.predict import load_exported, load_images

from conftest import run_cli


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (nothing more is needed to trip the size check)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


def test_png_and_jpeg_of_any_size_are_read_as_cifar_images(tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(np.zeros((300, 100), np.uint8)).save(tmp_path / "b.jpg")
    images = load_images([str(tmp_path / "a.png"), str(tmp_path / "b.jpg")])
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8


def test_formats_other_than_png_and_jpeg_are_not_opened(tmp_path):
    """An EPS named .png would make Pillow run Ghostscript; GIF, BMP... are refused the same way."""
    eps = tmp_path / "cat.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n")
    with pytest.raises(UserError, match="cat.png is not a PNG or JPEG image"):
        load_images([str(eps)])
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.gif")
    with pytest.raises(UserError, match="x.gif is not a PNG or JPEG image"):
        load_images([str(tmp_path / "x.gif")])


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    _png_header_only(tmp_path / "bomb.png", 16000, 16000)
    with pytest.raises(UserError, match="bomb.png is too large to open safely"):
        load_images([str(tmp_path / "bomb.png")])
    _png_header_only(tmp_path / "big.png", 10000, 10000)  # between Pillow's limit and twice it: a warning there
    with pytest.raises(UserError, match="big.png is too large"):
        load_images([str(tmp_path / "big.png")])


def test_a_damaged_image_is_one_line(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "cut.png")
    data = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cut.png is a damaged image"):
        load_images([str(tmp_path / "cut.png")])


def test_model_files_that_are_not_keras_exports_are_refused_in_one_line(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a model")
    with pytest.raises(UserError, match="notes.txt is not a .keras file"):
        load_exported(notes)
    fake = tmp_path / "model.keras"
    fake.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(UserError, match="model.keras is not a loadable Keras model"):
        load_exported(fake)


@pytest.mark.slow
def test_predict_refuses_a_study_name_outside_the_results_folder(tmp_path):
    for name in ("../x", str(tmp_path / "elsewhere")):
        result = run_cli("predict", "--study", name, "--results-dir", tmp_path / "results", tmp_path / "a.png",
                         cwd=tmp_path)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1 and "is invalid: use a plain folder name" in lines[0], \
            result.stderr
