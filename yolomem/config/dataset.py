"""Read an Ultralytics dataset YAML: objects per image and image sizes, without loading any image; and
how many classes it names (``dataset_classes``, for YAMLs Ultralytics ships too).

What is read, for ``train`` and ``val``:
- the image list, as Ultralytics builds it (``BaseDataset.get_img_files``): a directory (searched
  recursively), a ``.txt`` list of images (``./`` relative to the list), or a list of those; paths
  are relative to the YAML's ``path`` (the YAML's folder when it has none; a relative one from the
  working directory where it exists there, else from Ultralytics' ``DATASETS_DIR``: ``_dataset_root``);
- each image's YOLO label file (``img2label_paths``: the last ``/images/`` becomes ``/labels/``, the
  extension ``.txt``). Objects per image = distinct non-empty lines; a missing file is an image with
  no objects, as in Ultralytics. A line that is not ``class x y w h ...`` (at least 5 numbers, a
  whole non-negative class) raises ``UserError`` naming ``file:line``. The highest class of each
  image is kept too: Ultralytics' ``verify_image_label`` drops an image whose labels name a class
  beyond the YAML's (``DatasetSummary.dropping_classes_from``; the training loop says where, per release);
  and the widths of its rows (values per line: 5 for a box, more for a polygon or keypoints), which
  decide what the trainer of a task makes of the file (``SplitSummary.widths``, judged by the loop);
- image sizes from file headers only (PNG IHDR, JPEG SOF, BMP, GIF, WebP; no pixel is decoded),
  with the JPEG EXIF orientation applied as Ultralytics' ``exif_size`` does. Validation needs
  every val image's aspect ratio (rect batches); the RAM cache needs only the mean image size, so
  at most ``TRAIN_HEADER_SAMPLE`` train headers are read, a seeded random sample, like Ultralytics'
  own ``check_cache_ram`` (which extrapolates from 30 images).

The YAML must name ``train`` and ``val`` (or, from 8.0.149, ``validation``), as ``check_det_dataset`` requires in every
release from 8.0.35 to 8.4. A name that is not a file here is looked up as the installed Ultralytics
looks it up (``shipped_dataset``): its own copy, which the trainer would download the images of.
"""

from __future__ import annotations

import functools
import inspect
import os
import random
import re
import struct
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from yolomem.errors import UserError

TRAIN_HEADER_SAMPLE = 2000  # train images whose headers are read for the cache size
MIN_LABEL_COLUMNS = 5  # class x y w h (segments and keypoints add columns)
_EXIF_ORIENTATION = 274  # EXIF tag; 6 and 8 are 90-degree rotations (ultralytics.data.utils.exif_size)


@dataclass(frozen=True)
class SplitSummary:
    """One split (train or val) of a dataset."""

    name: str
    images: int
    counts: tuple[int, ...]  # objects per image, in image-list order
    missing_labels: int  # images without a label file (background)
    sizes: tuple[tuple[int, int], ...]  # (height, width) of the images whose headers were read
    sized_indices: tuple[int, ...]  # which images those are (all of them for val)
    unreadable: tuple[str, ...] = ()  # images whose header could not be read
    classes: tuple[int, ...] = ()  # the highest class id of each image (NO_CLASS: no labels), in image-list order
    dropped: int = 0  # images left out for a class beyond the dataset's (``dropping_classes_from``)
    widths: tuple[frozenset[int], ...] = ()  # the distinct row widths of each image's label file, in image-list order
    corrupt: int = 0  # images left out for labels the task's trainer rejects (``keeping(..., corrupt=True)``)

    @property
    def highest_class(self) -> int:
        return max(self.classes, default=NO_CLASS)

    def dropping_classes_from(self, first: int) -> SplitSummary:
        """The split without its images whose labels name class ``first`` or above."""
        return self.keeping([i for i, highest in enumerate(self.classes) if highest < first])

    def keeping(self, kept: list[int], *, corrupt: bool = False) -> SplitSummary:
        """The split with only the images ``kept`` (indices in image-list order); the others counted as
        left out for their class, or with ``corrupt`` for their label layout."""
        if len(kept) == len(self.counts):
            return self
        position = {index: k for k, index in enumerate(kept)}
        sized = [(size, position[i]) for size, i in zip(self.sizes, self.sized_indices) if i in position]
        left_out = len(self.counts) - len(kept)
        return replace(
            self, images=len(kept), counts=tuple(self.counts[i] for i in kept),
            sizes=tuple(size for size, _ in sized), sized_indices=tuple(i for _, i in sized),
            classes=tuple(self.classes[i] for i in kept) if self.classes else (),
            widths=tuple(self.widths[i] for i in kept) if self.widths else (),
            dropped=self.dropped + (0 if corrupt else left_out), corrupt=self.corrupt + (left_out if corrupt else 0),
        )  # fmt: skip

    @property
    def max_objects(self) -> int:
        return max(self.counts, default=0)

    @property
    def mean_objects(self) -> float:
        return sum(self.counts) / len(self.counts) if self.counts else 0.0

    def histogram(self) -> dict[int, int]:
        """Objects per image -> number of images."""
        return dict(sorted(Counter(self.counts).items()))

    def to_json(self) -> dict:
        return {
            "images": self.images,
            "mean_objects": round(self.mean_objects, 3),
            "max_objects": self.max_objects,
            "objects_histogram": {str(k): v for k, v in self.histogram().items()},
            "missing_labels": self.missing_labels,
            "headers_read": len(self.sizes),
            "unreadable": list(self.unreadable),
            "dropped": self.dropped,
            "corrupt": self.corrupt,
        }


NO_CLASS = -1  # the highest class of an image without labels


@dataclass(frozen=True)
class DatasetSummary:
    yaml_path: str
    train: SplitSummary
    val: SplitSummary | None
    classes: int | None = None  # what the YAML names (``names``, else ``nc``); None where it names none
    label_notes: tuple[str, ...] = ()  # what the task's trainer makes of the labels (the loop's ``kept_images``)

    def dropping_classes_from(self, first: int) -> DatasetSummary:
        """Both splits without the images whose labels name class ``first`` or above: Ultralytics'
        ``verify_image_label`` marks such an image corrupt, and its dataset leaves it out."""
        val = self.val.dropping_classes_from(first) if self.val is not None else None
        return replace(self, train=self.train.dropping_classes_from(first), val=val)

    def to_json(self) -> dict:
        return {"yaml": self.yaml_path, "train": self.train.to_json(), "val": self.val.to_json() if self.val else None}


def read_dataset(yaml_path: str | os.PathLike, *, seed: int = 0, train_header_sample: int = TRAIN_HEADER_SAMPLE) -> DatasetSummary:
    """Read the dataset YAML, its label files, and image headers (see the module docstring)."""
    import yaml

    path = Path(yaml_path).expanduser()
    if path.is_dir():
        raise UserError(f"data={str(yaml_path)!r} is a folder, the dataset of a classification model; detect, segment, "
                        "pose and obb models take an Ultralytics dataset YAML")  # fmt: skip
    if not path.is_file():
        raise UserError(f"data={str(yaml_path)!r} does not exist; pass an Ultralytics dataset YAML")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as error:
        raise UserError(f"data={str(yaml_path)!r} is not valid YAML: {str(error).splitlines()[0]}") from None
    data = check_split_keys(data, str(yaml_path))
    root = _dataset_root(path, data.get("path"))
    train = read_split("train", _image_files(root, data["train"], "train"), header_sample=train_header_sample, seed=seed)
    val = None
    if data.get("val"):
        val = read_split("val", _image_files(root, data["val"], "val"), header_sample=None, seed=seed)
    return DatasetSummary(str(path), train, val, _named_classes(data))


def check_split_keys(data: object, shown: str) -> dict:
    """The YAML's keys as ``check_det_dataset`` checks them (8.0.35 to 8.4 alike): ``train`` and ``val`` must
    both be there, and a ``validation`` key stands for a missing ``val`` where the release renames it
    (``renames_validation_key``); anything else is refused, as
    Ultralytics refuses it ("'val:' key missing ❌"). Returns the mapping with ``val`` in place."""
    if not isinstance(data, dict):
        raise UserError(f"data={shown!r} is not a dataset YAML (a mapping with train and val keys)")
    for key in ("train", "val"):
        if key in data:
            continue
        if key == "val" and "validation" in data and renames_validation_key():
            data = {k: v for k, v in data.items() if k != "validation"} | {"val": data["validation"]}
            continue
        raise UserError(f"data={shown!r} has no '{key}' key; Ultralytics requires 'train' and 'val' in every dataset "
                        f"YAML (its check_det_dataset stops: \"'{key}:' key missing\")")  # fmt: skip
    return data


def _named_classes(data: dict) -> int | None:
    """The classes ``check_det_dataset`` gives the dataset: as many as ``names``, else ``nc``."""
    names = data.get("names")
    if isinstance(names, (list, dict)) and names:
        return len(names)
    nc = data.get("nc")
    return nc if isinstance(nc, int) and nc > 0 else None


@dataclass(frozen=True)
class ClassifyFolder:
    """A classification dataset as Ultralytics reads it (``check_cls_dataset``): ``train/`` with one
    subfolder per class, and ``val/`` (else ``test/``) beside it."""

    path: str
    classes: int
    train_images: int
    val_images: int


@functools.lru_cache(maxsize=4)  # asked for the classes, then for the epoch: ImageNet's train/ is 1.28 M files
def read_classify_folder(folder: str | os.PathLike) -> ClassifyFolder:
    """Count the classes (subfolders of ``train/``) and the images of each split; no image is opened."""
    from ultralytics.data.utils import IMG_FORMATS

    root = Path(folder).expanduser()
    train = root / "train"
    if not train.is_dir():
        raise UserError(f"data={str(folder)!r} has no train/ folder; a classification dataset is train/ and val/, "
                        "one subfolder per class in each")  # fmt: skip
    val = next((root / split for split in ("val", "test") if (root / split).is_dir()), None)
    classes = sum(1 for entry in train.iterdir() if entry.is_dir())
    train_images = len(_walk_images(train, IMG_FORMATS))
    if not classes or not train_images:
        raise UserError(f"data={str(folder)!r}: no class subfolders with images in {str(train)!r}")
    return ClassifyFolder(str(root), classes, train_images, len(_walk_images(val, IMG_FORMATS)) if val else 0)


def dataset_classes(data: str) -> int | None:
    """How many classes a dataset YAML names (``names`` or ``nc``): the file, else Ultralytics' copy of
    it; None where there is neither (a classification folder, a URL) or it names none."""
    content = _dataset_yaml(data)
    return None if content is None else _named_classes(content)


def dataset_kpt_shape(data: str) -> tuple[int, int] | None:
    """The keypoint layout a dataset YAML gives (``kpt_shape: [17, 3]``), which PoseTrainer builds the
    model with; None where the YAML gives none (or is not there)."""
    content = _dataset_yaml(data)
    shape = None if content is None else content.get("kpt_shape")
    if isinstance(shape, (list, tuple)) and len(shape) == 2 and all(isinstance(v, int) for v in shape):
        return int(shape[0]), int(shape[1])
    return None


def _dataset_yaml(data: str) -> dict | None:
    """A dataset YAML's content: the file, else Ultralytics' copy of it; None where there is neither (a
    classification folder, a URL) or it is not a mapping."""
    import yaml

    path = Path(data).expanduser()
    if not path.is_file():
        found = shipped_dataset(data)
        if found is None:
            return None
        path = Path(found)
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        return None  # read_dataset says what is wrong with it, with its own error
    return content if isinstance(content, dict) else None


class _Found(Exception):
    """Stops ``check_det_dataset`` at the file it settled on (``shipped_dataset``)."""

    def __init__(self, found: object):
        super().__init__(found)
        self.found = found


def shipped_dataset(data: str) -> str | None:
    """The file the installed Ultralytics takes ``data=`` for when it is not a file here: its own copy of
    a dataset YAML (``ultralytics/cfg/datasets``), whose images its trainer then downloads; None where
    it finds none (its trainer stops: "'my.yaml' does not exist"). URLs are not looked up (None).

    Asked of ``check_det_dataset`` itself, up to where it has settled on a file: its ``check_file`` is
    swapped, for the call, for one that only searches (``download=False``) and stops the function with
    what it found. Releases differ here: 8.1.0 searches ``ultralytics/cfg`` only, later releases the whole
    package; 8.4 also tries a bare name with ``.yaml`` and ``.yml`` (``coco8`` -> ``coco8.yaml``)."""
    from unittest import mock

    from ultralytics.data import utils as data_utils

    if "://" in data:
        return None
    search = data_utils.check_file

    # what the installed check_file takes: ``download`` from 8.0.36, ``hard`` from 8.0.55 (before, it raises
    # where it finds nothing)
    accepts = inspect.signature(search).parameters
    quiet = {key: False for key in ("download", "hard") if key in accepts}

    def search_only(file, *args, hard: bool = True, **kwargs):
        try:
            found = search(file, **quiet)
        except FileNotFoundError:
            found = None
        if hard:  # the call whose answer check_det_dataset reads
            raise _Found(found)
        return found

    with mock.patch.object(data_utils, "check_file", search_only):
        try:
            data_utils.check_det_dataset(data)
        except _Found as stop:
            return str(stop.found) if stop.found else None
    raise RuntimeError(f"the installed check_det_dataset({data!r}) read a dataset without asking check_file for it")


def dataset_here(data: str) -> tuple[str | None, str | None]:
    """A dataset a resumed run names (its saved options), as this machine has it: the file; else the
    installed Ultralytics' copy of that name (``coco128.yaml``, whose published statistics stand in); else
    None. And a note where it is not the file itself."""
    if Path(data).is_file():
        return data, None
    name = re.split(r"[\\/]", data)[-1]
    if name in shipped_dataset_names():
        return name, f"its data={data} is not on this machine: Ultralytics' {name} stands in"
    return None, f"its data={data} is not on this machine: objects per image as instances= says"


def shipped_dataset_names() -> list[str]:
    """The dataset YAMLs the installed Ultralytics ships, sorted without case."""
    import ultralytics

    from yolomem.loops.ultralytics.legacy_layout import yaml_dir

    folder = yaml_dir(Path(ultralytics.__file__).parent, "datasets")
    return sorted((p.name for p in folder.glob("*.y*ml")), key=str.lower)


def unknown_dataset(data: str) -> UserError:
    """``data=`` names neither a file here nor a dataset the installed Ultralytics ships: the nearest
    shipped name (compared without the suffix and case: ``VisDrone.yml`` -> ``VisDrone.yaml``), and a few."""
    import difflib

    import ultralytics

    names = shipped_dataset_names()
    stems = {name.rsplit(".", 1)[0].lower(): name for name in names}
    stem = data.rsplit(".", 1)[0] if data.lower().endswith((".yaml", ".yml")) else data
    close = difflib.get_close_matches(stem.lower(), list(stems), n=1, cutoff=NEAREST_CUTOFF)
    hint = f"; did you mean {stems[close[0]]!r}?" if close else ";"
    listed = ", ".join(names[:SHOWN_NAMES]) + (f", ... ({len(names)} in all)" if len(names) > SHOWN_NAMES else "")
    return UserError(f"data={data!r} is not a local file, nor a dataset YAML that ultralytics {ultralytics.__version__} "
                     f"ships (its trainer would stop: \"'{data}' does not exist\"){hint} shipped: {listed}")  # fmt: skip


NEAREST_CUTOFF = 0.6  # difflib ratio of the stems: 'sku110k' finds 'SKU-110K'; 'my_data' finds nothing
SHOWN_NAMES = 12


@functools.cache
def keeps_class_equal_to_count() -> bool:
    """Whether the installed ``verify_image_label`` keeps an image labelled with class ``nc`` (one past the
    last): up to 8.3.40 at least its check reads ``max_cls <= num_cls``, by 8.3.189 ``max_cls < num_cls``.
    Asked of the function itself: a 32 x 32 image with one label of class 1, in a dataset of 1 class."""
    return verify_label_rows(["1 0.5 0.5 0.1 0.1"], keypoint=False, num_cls=1)[0] is not None


def verify_label_rows(rows: list[str], *, keypoint: bool, num_cls: int, kpt_shape: tuple[int, int] | None = None):
    """The installed ``verify_image_label``'s result for a 32 x 32 image whose label file holds ``rows``:
    ``(im_file, lb, shape, segments, keypoints, nm, nf, ne, nc, msg)``, the first five None when it
    rejects the file."""
    import tempfile

    from ultralytics.data.utils import verify_image_label

    nkpt, ndim = kpt_shape or (0, 0)
    with tempfile.TemporaryDirectory() as folder:
        image, label = Path(folder) / "a.png", Path(folder) / "a.txt"
        write_label_image(image, label, rows)
        # (im_file, lb_file, prefix, keypoint, num_cls), nkpt and ndim from 8.0.6x, and single_cls from 8.3.x on
        args = (str(image), str(label), "", keypoint, num_cls)
        for extra in ((), (nkpt, ndim), (nkpt, ndim, False)):
            try:
                return verify_image_label(args + extra)
            except ValueError:  # its first line unpacks the arguments: another count
                continue
    raise RuntimeError("the installed verify_image_label takes neither 5, 7 nor 8 arguments")


def write_label_image(image: Path, label: Path, rows: list[str]) -> None:
    """A 32 x 32 PNG and its label file of ``rows``: what ``verify_image_label`` and a dataset read."""
    from PIL import Image

    Image.new("RGB", (32, 32)).save(image)
    label.write_text("".join(f"{row}\n" for row in rows), encoding="utf-8")


def read_split(name: str, images: list[str], *, header_sample: int | None, seed: int = 0) -> SplitSummary:
    """Objects per image for ``images`` and the header sizes of all of them or of a seeded sample."""
    counts, classes, widths, missing = [], [], [], 0
    interned: dict[frozenset[int], frozenset[int]] = {}  # a dataset has few layouts: one set each
    for label_file in _label_paths(images):
        read = read_labels(label_file)
        if read is None:
            missing += 1
            read = (0, NO_CLASS, frozenset())
        counts.append(read[0])
        classes.append(read[1])
        widths.append(interned.setdefault(read[2], read[2]))
    indices = list(range(len(images)))
    if header_sample is not None and len(images) > header_sample:
        indices = sorted(random.Random(seed).sample(indices, header_sample))
    sizes, sized, unreadable = [], [], []
    for index in indices:
        size = image_size(images[index])
        if size is None:
            unreadable.append(images[index])
        else:
            sizes.append(size)
            sized.append(index)
    return SplitSummary(name, len(images), tuple(counts), missing, tuple(sizes), tuple(sized), tuple(unreadable),
                        tuple(classes), widths=tuple(widths))  # fmt: skip


def count_objects(label_file: str) -> int | None:
    """Distinct labelled objects in a YOLO label file; None when the file does not exist."""
    read = read_labels(label_file)
    return None if read is None else read[0]


def read_labels(label_file: str) -> tuple[int, int, frozenset[int]] | None:
    """(distinct labelled objects, the highest class id or NO_CLASS, the distinct row widths) of a YOLO
    label file; None when the file does not exist."""
    try:
        with open(label_file, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read label file {label_file}: {type(error).__name__}") from None
    seen, highest, widths = set(), NO_CLASS, set()
    for number, line in enumerate(text.splitlines(), start=1):
        row = line.strip()
        if not row or row in seen:
            continue  # Ultralytics drops duplicate rows
        _check_row(row, label_file, number)
        seen.add(row)
        tokens = row.split()
        highest = max(highest, int(float(tokens[0])))
        widths.add(len(tokens))
    return len(seen), highest, frozenset(widths)


_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_VALID_ROW = re.compile(rf"\d+(?:\.0*)?(?:\s+{_NUMBER}){{{MIN_LABEL_COLUMNS - 1},}}")  # the fast path


def _check_row(row: str, label_file: str, number: int) -> None:
    if _VALID_ROW.fullmatch(row):
        return
    tokens = row.split()
    if len(tokens) < MIN_LABEL_COLUMNS:
        raise UserError(f"{label_file}:{number}: {row!r} has {len(tokens)} values; a YOLO label line is 'class x y w h'")
    try:
        values = [float(token) for token in tokens]
    except ValueError:
        raise UserError(f"{label_file}:{number}: {row!r} is not all numbers; a YOLO label line is 'class x y w h'") from None
    if values[0] < 0 or values[0] != int(values[0]):
        raise UserError(f"{label_file}:{number}: class {tokens[0]!r} must be a whole number >= 0")


def image_size(image_file: str) -> tuple[int, int] | None:
    """(height, width) from the file header (PNG, JPEG, BMP, GIF, WebP); None if unreadable.

    Our own parsers, not ``PIL.Image.open``: Ultralytics replaces that function at import with one
    that tries to install a package when a file is not recognised."""
    try:
        with open(image_file, "rb") as handle:
            head = handle.read(HEADER_BYTES)
            if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
                width, height = struct.unpack(">II", head[16:24])
                return height, width
            if head[:2] == b"\xff\xd8":
                return _jpeg_size(handle)
            if head[:2] == b"BM" and len(head) >= 26:
                width, height = struct.unpack("<ii", head[18:26])
                return abs(height), abs(width)
            if head[:6] in {b"GIF87a", b"GIF89a"}:
                width, height = struct.unpack("<HH", head[6:10])
                return height, width
            if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                return _webp_size(head)
    except (OSError, struct.error):
        return None
    return None


HEADER_BYTES = 32
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def _jpeg_size(handle) -> tuple[int, int] | None:
    """Walk the JPEG markers to the frame header (SOFn); apply the EXIF orientation (APP1)."""
    handle.seek(2)
    rotated = False
    while True:
        byte = handle.read(1)
        while byte and byte != b"\xff":
            byte = handle.read(1)
        while byte == b"\xff":
            byte = handle.read(1)
        if not byte:
            return None
        marker = byte[0]
        if marker in {0xD8, 0x01} or 0xD0 <= marker <= 0xD7:
            continue  # no length
        (length,) = struct.unpack(">H", handle.read(2))
        if marker in _JPEG_SOF:
            _precision, height, width = struct.unpack(">BHH", handle.read(5))
            return (width, height) if rotated else (height, width)
        body = handle.read(length - 2)
        if marker == 0xE1 and body[:6] == b"Exif\x00\x00":
            rotated = _exif_orientation(body[6:]) in {6, 8}


def _exif_orientation(tiff: bytes) -> int | None:
    """The Orientation tag (274) of the first IFD of an EXIF TIFF block."""
    if len(tiff) < 8:
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", tiff[4:8])
    if offset + 2 > len(tiff):
        return None
    (entries,) = struct.unpack(order + "H", tiff[offset : offset + 2])
    for k in range(entries):
        at = offset + 2 + 12 * k
        if at + 12 > len(tiff):
            return None
        tag, _kind, _count = struct.unpack(order + "HHI", tiff[at : at + 8])
        if tag == _EXIF_ORIENTATION:
            return struct.unpack(order + "H", tiff[at + 8 : at + 10])[0]
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return height & 0x3FFF, width & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return height, width
    return None


def _dataset_root(yaml_path: Path, declared: object) -> Path:
    """The dataset root as the installed ``check_det_dataset`` resolves it: the YAML's folder when it
    names no ``path``; a relative ``path`` from the working directory where it exists there (8.3 and
    later), else from ``DATASETS_DIR`` (the only place 8.2 and earlier look). Not from the YAML's folder:
    ``path: .`` is the directory ``yolo train`` runs in."""
    if not declared:
        return yaml_path.parent
    root = Path(str(declared)).expanduser()
    if root.is_absolute():
        return root
    from ultralytics.utils import DATASETS_DIR

    if relative_path_from_working_directory() and root.exists():
        return root.resolve()
    in_datasets = (Path(DATASETS_DIR) / root).resolve()
    if in_datasets.exists():
        return in_datasets
    where = f"the working directory ({Path.cwd()}) nor in " if relative_path_from_working_directory() else ""
    raise UserError(f"dataset path {str(declared)!r} of {yaml_path} not found in {where}{DATASETS_DIR}, where "
                    "Ultralytics resolves a relative path (make it absolute, or run from the folder it is "
                    "relative to)")  # fmt: skip


def renames_validation_key() -> bool:
    """Whether the installed ``check_det_dataset`` takes a ``validation`` key for a missing ``val`` (from
    8.0.149), read in its source."""
    source = _check_det_dataset_source()
    return '"validation"' in source or "'validation'" in source


def relative_path_from_working_directory() -> bool:
    """Whether the installed ``check_det_dataset`` keeps a relative ``path`` that exists from the working
    directory (8.3: ``if not path.exists() and not path.is_absolute()``; 8.2 and earlier always join it to
    ``DATASETS_DIR``), read in its source."""
    return "not path.exists()" in _check_det_dataset_source()


@functools.cache
def _check_det_dataset_source() -> str:
    import inspect

    from ultralytics.data.utils import check_det_dataset

    return inspect.getsource(check_det_dataset)


def _image_files(root: Path, entry: object, split: str) -> list[str]:
    from ultralytics.data.utils import IMG_FORMATS

    entries = entry if isinstance(entry, (list, tuple)) else [entry]
    files: list[str] = []
    for item in entries:
        path = Path(str(item)).expanduser()
        path = path if path.is_absolute() else root / path
        if path.is_dir():
            files.extend(_walk_images(path, IMG_FORMATS))
        elif path.is_file() and path.suffix == ".txt":
            parent = path.parent
            for line in path.read_text(encoding="utf-8-sig").splitlines():
                line = line.strip()
                if line:
                    files.append(str(parent / line[2:]) if line.startswith("./") else line)
        elif path.is_file():
            files.append(str(path))
        else:
            raise UserError(f"{split}: {str(path)!r} does not exist (from the dataset YAML)")
    files = sorted(f for f in files if f.rsplit(".", 1)[-1].lower() in IMG_FORMATS)
    if not files:
        raise UserError(f"{split}: no images found in {entries!r}")
    return files


def _walk_images(directory: Path, formats) -> list[str]:
    found, stack = [], [str(directory)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=True):
                    stack.append(entry.path)
                elif entry.name.rsplit(".", 1)[-1].lower() in formats:
                    found.append(entry.path)
    return found


def _label_paths(images: list[str]) -> list[str]:
    from ultralytics.data.utils import img2label_paths

    return img2label_paths(images)
