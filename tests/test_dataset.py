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
    missing.write_text(f"path: {tmp_path}\ntrain: images/none\nval: images/none\n")
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


# --- data= as Ultralytics reads it: names it can find, the keys it requires, the batch it makes, the labels it keeps ---


def _images_and_labels(root: Path, split: str, labels: list[list[int] | None], size: tuple[int, int] = (64, 48)) -> None:
    """Real PNGs (Ultralytics' verify_image_label opens them), with one label row per class id listed
    (None: no label file)."""
    from PIL import Image

    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "labels" / split).mkdir(parents=True, exist_ok=True)
    for i, classes in enumerate(labels):
        Image.new("RGB", size).save(root / "images" / split / f"{i:05d}.png")
        if classes is not None:
            rows = [f"{c} {0.2 + 0.01 * k:.2f} 0.5 0.1 0.1" for k, c in enumerate(classes)]
            (root / "labels" / split / f"{i:05d}.txt").write_text("".join(f"{row}\n" for row in rows))


def _data_yaml(root: Path, train: list, val: list, names: list[str], keys: str | None = None) -> Path:
    _images_and_labels(root, "train", train)
    _images_and_labels(root, "val", val)
    path = root / "data.yaml"
    path.write_text(f"path: {root}\n{keys if keys is not None else 'train: images/train' + chr(10) + 'val: images/val'}\n"
                    f"names: {names}\n")  # fmt: skip
    return path


@pytest.mark.parametrize("name, nearest", [("VisDrone.yml", "VisDrone.yaml"), ("nothere.yaml", None), ("my_data.yaml", None)])
def test_a_dataset_name_ultralytics_would_not_find_is_refused_in_one_line(name, nearest, tmp_path, monkeypatch, capsys):
    """Ultralytics fetches only the dataset YAMLs it ships (check_det_dataset -> check_file's search):
    any other name that is not a file here stops its trainer ("'nothere.yaml' does not exist")."""
    from ultralytics.data import utils as data_utils

    from yolomem.cli.main import main
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    monkeypatch.chdir(tmp_path)
    search = data_utils.check_file
    with pytest.raises(UserError) as error:
        prepare(EstimateConfig(model="yolov8n.yaml", data=name))
    message = str(error.value)
    assert f"data={name!r} is not a local file, nor a dataset YAML that ultralytics" in message
    assert "shipped: " in message and "in all)" in message and "\n" not in message
    assert (f"did you mean {nearest!r}?" in message) if nearest else "did you mean" not in message
    assert data_utils.check_file is search  # the search swapped in for the lookup is undone
    assert main(["estimate", "yolov8n.yaml", f"data={name}"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    # a name Ultralytics ships is still looked up, not refused: its published statistics stand in
    shipped = prepare(EstimateConfig(model="yolov8n.yaml", data="VisDrone.yaml"))
    assert any(note.startswith("data=VisDrone.yaml is not a local file (Ultralytics would download it)") for note in shipped.notes)


def test_a_yaml_without_val_is_refused_as_check_det_dataset_refuses_it(tmp_path):
    """check_det_dataset (8.0.59 to 8.4): "'val:' key missing ❌"; a 'validation' key is renamed to 'val'
    (from 8.0.149: ``renames_validation_key`` reads it in the installed source)."""
    yaml_path = _data_yaml(tmp_path, [[0]], [[0], [0]], ["a"], keys="train: images/train")
    with pytest.raises(UserError, match=r"has no 'val' key; Ultralytics requires 'train' and 'val'"):
        read_dataset(yaml_path)
    yaml_path.write_text(f"path: {tmp_path}\ntrain: images/train\nvalidation: images/val\nnames: [a]\n")
    assert read_dataset(yaml_path).val.images == 2


def test_a_batch_larger_than_the_dataset_trains_at_its_size(tmp_path):
    """build_dataloader: ``batch = min(batch, len(dataset))``, for training and for validation (asked
    for 2x the batch as asked, not as cut)."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    small = _data_yaml(tmp_path / "small", [[0]] * 3, [[0]] * 2, ["a"])
    cut = prepare(EstimateConfig(model="yolov8n.yaml", data=str(small), batch=64, imgsz=64))
    assert cut.config.batch == 3 and cut.request.hook.val_batch == 2 and cut.request.batches.limit == 3
    assert any(note.startswith(f"batch=64 is more than the 3 train images of data={small}: the dataloader makes batches "
                               "of min(batch, len(dataset)) = 3") for note in cut.notes)  # fmt: skip
    within = prepare(EstimateConfig(model="yolov8n.yaml", data=str(small), batch=2, imgsz=64))
    assert within.config.batch == 2 and within.request.hook.val_batch == 2  # 4 asked, 2 val images
    assert any("validation batches hold its 2 val images, not the 4 of batch=2" in note for note in within.notes)
    many_val = _data_yaml(tmp_path / "many_val", [[0]] * 3, [[0]] * 20, ["a"])
    wide = prepare(EstimateConfig(model="yolov8n.yaml", data=str(many_val), batch=64, imgsz=64))
    assert wide.config.batch == 3 and wide.request.hook.val_batch == 20  # min(2 x 64, 20), not 2 x 3
    assert wide.request.batches.limit == 10  # validation at 2 x 10 holds all 20
    ddp = prepare(EstimateConfig(model="yolov8n.yaml", data=str(many_val), batch=16, world_size=2, imgsz=64))
    assert ddp.config.batch == 4  # 8 per GPU asked; each GPU draws ceil(3 / 2) = 2 images an epoch


def test_the_estimate_of_a_batch_past_the_dataset_is_the_estimate_at_its_size(tmp_path):
    from yolomem.result.estimate import estimate

    yaml_path = _data_yaml(tmp_path, [[0, 0], [0], [0, 0, 0]], [[0], [0]], ["a"])
    over = estimate("yolov8n.yaml", data=str(yaml_path), batch=64, imgsz=64, iterations=1)
    at = estimate("yolov8n.yaml", data=str(yaml_path), batch=3, imgsz=64, iterations=1)
    assert over.config.batch == 3 and over.peak_reserved_bytes == at.peak_reserved_bytes
    assert over.steady_reserved_bytes == at.steady_reserved_bytes


def test_epochs_of_one_batch_never_run_two_training_iterations_back_to_back(tmp_path):
    """Three train images at batch 3: each epoch is one batch, then validation. The step is its first
    iteration alone (the traced second one would follow it directly), and the figures agree: the GPU_mem
    column is at least that step, and the breakdown adds up to the peak."""
    from yolomem.result.estimate import estimate

    yaml_path = _data_yaml(tmp_path, [[0, 0], [0], [0, 0, 0]], [[0], [0]], ["a"])
    one = estimate("yolov8n.yaml", data=str(yaml_path), batch=3, imgsz=64)
    assert one.config.iterations == 2 and one.epochs.plan.batches_per_epoch == 1
    assert len(one.reserved_per_iteration) == 1
    assert one.peak_reserved_bytes == max(one.reserved_per_iteration[0], one.epochs.peak_reserved.median)
    column = max(one.epoch1_reserved_bytes, one.steady_reserved_bytes)
    assert column >= one.reserved_per_iteration[0]
    assert sum(size for part, size in one.breakdown.items() if part != "cuda_context") == one.peak_reserved_bytes
    two = estimate("yolov8n.yaml", data=str(yaml_path), batch=2, imgsz=64)  # two batches an epoch: back to back
    assert two.epochs.plan.batches_per_epoch == 2 and len(two.reserved_per_iteration) == 2


def test_fit_with_data_stops_at_the_batch_that_holds_the_whole_dataset(tmp_path, capsys):
    """A clamped run at 209 is the run at the dataset's size: fit answers that size, and says every
    larger batch fits as the same run (before, it answered the search's limit)."""
    import json

    from yolomem.cli.main import main

    yaml_path = _data_yaml(tmp_path, [[0, 0], [0], [0, 0, 0]], [[0], [0]], ["a"])
    assert main(["fit", "yolov8n.yaml", "gpu_mem=40", f"data={yaml_path}", "imgsz=64", "iterations=1", "batch=64", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["max_batch"] == 3 and payload["whole_dataset"] is True and payload["at_search_cap"] is False
    assert "batch=3 " in payload["train_command"]
    assert any(note.startswith(f"every batch from 3 up fits, as the same run: data={yaml_path} has 3 train images")
               for note in payload["estimate_at_max"]["notes"])  # fmt: skip
    assert "strategies" not in payload  # batch=64 trains at 3, which fits: no ladder of savings


def test_a_search_capped_below_its_bracket_answers_without_a_line():
    """A dataset of 3 images caps fit's search below its first bracket batch (4): one probe decides."""
    from yolomem.sweeps.fit import Probe, _LINEAR, _search

    def probe_under(capacity):
        return lambda unit: Probe(unit, 64, unit * 100, unit * 100 <= capacity, 0.0)

    assert _search(probe_under(10_000), _LINEAR, 4, 16, 3, 10_000) == (3, 3, True)
    assert _search(probe_under(250), _LINEAR, 4, 16, 3, 250) == (2, 3, False)
    assert _search(probe_under(50), _LINEAR, 4, 16, 3, 50)[0] is None


def test_images_labelled_beyond_the_yamls_classes_are_left_out_as_the_installed_ultralytics_leaves_them(tmp_path):
    """verify_image_label marks an image whose labels name a class the YAML does not "corrupt", and the
    dataset drops it: yolomem counts what the installed release's YOLODataset keeps, image for image."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset

    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    # one class named; class 1 is one past it (kept by releases up to 8.3.40 at least), class 2 never
    train = [[0, 0], [2] * 40, [1, 0], None, [0]]
    yaml_path = _data_yaml(tmp_path, train, [[0], [2], [0, 0]], ["a"])
    prepared = prepare(EstimateConfig(model="yolov8n.yaml", data=str(yaml_path), batch=2, imgsz=64))
    dataset = prepared.request.dataset
    truth = {}
    for split in ("train", "val"):
        built = YOLODataset(img_path=str(tmp_path / "images" / split), imgsz=64, augment=False, hyp=get_cfg(),
                            data={"names": {0: "a"}, "nc": 1, "channels": 3}, prefix=f"{split}: ", batch_size=2)  # fmt: skip
        truth[split] = [len(label["cls"]) for label in built.labels]
    assert list(dataset.train.counts) == truth["train"] and list(dataset.val.counts) == truth["val"]
    assert dataset.train.max_objects < 40  # the densest image named class 2: not trained
    dropped = 5 - len(truth["train"])
    assert any(f"{dropped} of 5 train and 1 of 3 val images have a label of a class beyond the 1 its YAML names" in note
               for note in prepared.notes)  # fmt: skip
    assert len(dataset.train.sizes) == len(truth["train"])  # headers of the kept images only


def test_a_split_left_without_images_is_refused(tmp_path):
    """Every val image labelled beyond the YAML's classes: Ultralytics' dataset stops ("No valid images found")."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    yaml_path = _data_yaml(tmp_path, [[0]], [[2], [2, 0]], ["a"])
    with pytest.raises(UserError, match="every val image has a label of a class beyond the 1 its YAML names"):
        prepare(EstimateConfig(model="yolov8n.yaml", data=str(yaml_path), batch=2, imgsz=64))


def test_the_yolov5_repos_train_py_stops_on_a_class_beyond_the_yamls(tmp_path):
    """The yolov5 repo keeps such images and then asserts: ``Label class 2 exceeds nc=1``."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    yaml_path = _data_yaml(tmp_path, [[0], [2]], [[0]], ["a"])
    with pytest.raises(UserError, match=r"the yolov5 repo's train.py stops \(\"Label class 2 exceeds nc=1\"\)"):
        prepare(EstimateConfig(model="yolov5n", data=str(yaml_path), batch=2, imgsz=64))


def test_keys_the_labels_override_are_named_as_ignored(tmp_path):
    """max_instances= changed nothing with data= (the labels give the densest image) and was not named."""
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import resolve_model
    from yolomem.result.epochs import epoch_request

    yaml_path = make_dataset(tmp_path, [(64, 64, 3), (64, 64, 1)], [(64, 64, 1)])
    config = EstimateConfig(model="yolov8n.yaml", data=str(yaml_path), batch=2, imgsz=64, max_instances=5, tail="COCO")
    notes = " ".join(epoch_request(config, resolve_model("yolov8n.yaml")).notes)
    assert f"tail= and max_instances= ignored: the labels of data={yaml_path} give them" in notes


def test_a_relative_path_is_the_working_directorys_not_the_yamls(tmp_path, monkeypatch):
    """``path: .`` is where ``yolo train`` runs (check_det_dataset keeps a relative path that exists from
    the working directory), not the YAML's folder: from elsewhere Ultralytics finds no images."""
    make_dataset(tmp_path, [(64, 64, 1)], [(64, 64, 1)])
    yaml_path = tmp_path / "rel.yaml"
    yaml_path.write_text("path: .\ntrain: images/train\nval: images/val\nnames: ['a']\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(tmp_path)
    assert read_dataset(yaml_path).train.images == 1
    monkeypatch.chdir(elsewhere)
    with pytest.raises(UserError, match=f"{elsewhere / 'images' / 'train'}' does not exist"):
        read_dataset(yaml_path)


def test_a_shipped_name_is_found_through_a_check_file_of_any_signature(monkeypatch):
    """``check_file`` took no ``download`` in 8.0.35 and no ``hard`` up to 8.0.54 (it raised where it found
    nothing): the search asks for what the installed signature takes, and finds the same file."""
    from ultralytics.data import utils as data_utils

    from yolomem.config.dataset import shipped_dataset

    found = shipped_dataset("coco8.yaml")
    assert found and found.endswith("coco8.yaml")
    real = data_utils.check_file

    def check_file(file, suffix=""):  # 8.0.35's signature and behaviour
        result = real(file, suffix, download=False, hard=False)
        if not result:
            raise FileNotFoundError(f"'{file}' does not exist")
        return result

    monkeypatch.setattr(data_utils, "check_file", check_file)
    assert shipped_dataset("coco8.yaml") == found
    assert shipped_dataset("no-such-dataset.yaml") is None
