"""Reading dataset YAMLs, label files and image headers (yolomem.config.dataset, yolomem.result.host_memory)."""

from __future__ import annotations

import struct
import time
import zlib
from pathlib import Path

import pytest

from yolomem.config.dataset import count_objects, read_dataset
from yolomem.errors import UserError
from yolomem.result.host_memory import cached_image_bytes, host_memory


def _png(path: Path, width: int, height: int) -> None:
    """A PNG signature and IHDR chunk: all a header reader needs."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk)))


def make_dataset(root: Path, train: list[tuple[int, int, int | None]], val: list[tuple[int, int, int | None]]) -> Path:
    """(width, height, objects or None for no label file) per image."""
    for split, items in (("train", train), ("val", val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i, (w, h, n) in enumerate(items):
            _png(root / "images" / split / f"{i:05d}.png", w, h)
            if n is not None:
                lines = [f"{k % 80} 0.5 0.5 {0.01 * (k + 1):.2f} 0.1" for k in range(n)]
                (root / "labels" / split / f"{i:05d}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
    yaml_path = root / "data.yaml"
    yaml_path.write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n  0: a\n")
    return yaml_path


def test_counts_sizes_missing_and_empty(tmp_path):
    yaml_path = make_dataset(tmp_path, [(640, 480, 3), (320, 320, 0), (100, 200, None), (50, 50, 7)], [(640, 427, 2)])
    data = read_dataset(yaml_path)
    assert data.train.images == 4
    assert data.train.counts == (3, 0, 0, 7)
    assert data.train.missing_labels == 1
    assert data.train.max_objects == 7
    assert data.train.histogram() == {0: 2, 3: 1, 7: 1}
    assert data.train.sizes == ((480, 640), (320, 320), (200, 100), (50, 50))
    assert data.val.counts == (2,) and data.val.sizes == ((427, 640),)


def test_duplicate_and_blank_lines(tmp_path):
    label = tmp_path / "a.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n\n0 0.5 0.5 0.1 0.1\n1 0.2 0.2 0.1 0.1 0.3 0.3\n")
    assert count_objects(str(label)) == 2
    assert count_objects(str(tmp_path / "missing.txt")) is None


@pytest.mark.parametrize(
    "line, words",
    [("0 0.5 0.5 0.1", "has 4 values"), ("0 0.5 x 0.1 0.1", "not all numbers"), ("1.5 0.5 0.5 0.1 0.1", "whole number"),
     ("-1 0.5 0.5 0.1 0.1", "whole number")],
)  # fmt: skip
def test_malformed_line_names_file_and_line(tmp_path, line, words):
    yaml_path = make_dataset(tmp_path, [(64, 64, 1)], [(64, 64, 1)])
    label = tmp_path / "labels" / "train" / "00000.txt"
    label.write_text("0 0.5 0.5 0.1 0.1\n" + line + "\n")
    with pytest.raises(UserError) as error:
        read_dataset(yaml_path)
    assert f"{label}:2" in str(error.value) and words in str(error.value)
    assert "\n" not in str(error.value)


def test_bad_yaml_inputs(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_dataset(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("names: [a]\n")
    with pytest.raises(UserError, match="no 'train' key"):
        read_dataset(bad)
    missing = tmp_path / "missing.yaml"
    missing.write_text(f"path: {tmp_path}\ntrain: images/none\n")
    with pytest.raises(UserError, match="does not exist"):
        read_dataset(missing)


def test_txt_image_list(tmp_path):
    make_dataset(tmp_path, [(64, 48, 2), (64, 64, 1)], [(64, 64, 1)])
    (tmp_path / "train.txt").write_text("./images/train/00000.png\n./images/train/00001.png\n")
    yaml_path = tmp_path / "list.yaml"
    yaml_path.write_text(f"path: {tmp_path}\ntrain: train.txt\nval: images/val\n")
    assert read_dataset(yaml_path).train.counts == (2, 1)


def test_host_memory_follows_check_cache_ram(tmp_path):
    # 1280x960 resized to long side 640 -> 640x480x3; 320x320 resized *up* to 640x640x3
    assert cached_image_bytes(960, 1280, 640) == 480 * 640 * 3
    assert cached_image_bytes(320, 320, 640) == 640 * 640 * 3
    data = read_dataset(make_dataset(tmp_path, [(1280, 960, 1), (320, 320, 1)], [(640, 640, 1)]))
    host = host_memory(data, imgsz=640, batch=2, workers=2, cache="ram")
    images = 480 * 640 * 3 + 640 * 640 * 3 + 640 * 640 * 3
    assert host.cache_ram_bytes == images
    assert host.cache_ram_required_bytes == 2 * images  # safety_margin=1.0
    assert host.cache_disk_bytes == (1280 * 960 + 320 * 320 + 640 * 640) * 3
    assert host.workers_bytes > 0


def test_train_headers_are_sampled_and_extrapolated(tmp_path):
    yaml_path = make_dataset(tmp_path, [(100, 100, 1)] * 30, [(64, 64, 0)])
    data = read_dataset(yaml_path, train_header_sample=10)
    assert len(data.train.sizes) == 10 and data.train.images == 30
    assert data.train.counts == (1,) * 30
    host = host_memory(data, imgsz=100, batch=2, workers=0, cache=None)
    # 10 sampled 100x100 train headers extrapolated to 30 images; the 64x64 val image resized up to 100x100
    assert host.cache_ram_bytes == 30 * 100 * 100 * 3 + 100 * 100 * 3


@pytest.mark.parametrize("ext", ["jpg", "png", "bmp", "gif", "webp"])
def test_image_size_from_headers(tmp_path, ext):
    import numpy as np
    from PIL import Image

    from yolomem.config.dataset import image_size

    path = tmp_path / f"a.{ext}"
    Image.fromarray(np.zeros((37, 53, 3), np.uint8)).save(path)
    assert image_size(str(path)) == (37, 53)


def test_jpeg_exif_rotation_swaps_sides(tmp_path):
    import numpy as np
    from PIL import Image

    from yolomem.config.dataset import image_size

    image = Image.fromarray(np.zeros((37, 53, 3), np.uint8))
    exif = image.getexif()
    exif[274] = 6  # rotated 90 degrees: Ultralytics' exif_size swaps width and height
    image.save(tmp_path / "r.jpg", exif=exif)
    assert image_size(str(tmp_path / "r.jpg")) == (53, 37)


def test_reading_2000_images_is_fast(tmp_path):
    yaml_path = make_dataset(tmp_path, [(640, 480, 5)] * 2000, [(640, 480, 5)] * 200)
    started = time.perf_counter()
    data = read_dataset(yaml_path)
    assert data.train.images == 2000 and data.train.mean_objects == 5
    assert time.perf_counter() - started < 10
