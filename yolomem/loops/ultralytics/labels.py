"""What the installed Ultralytics makes of a dataset's labels for the model's task: the images it drops
as corrupt, and the objects a segment or OBB model gets from box rows.

A label row is ``class x y w h`` (a box, 5 values), a polygon ``class x1 y1 x2 y2 ...`` (odd, above 6),
or a box and ``nkpt x ndim`` keypoint values (pose). The task decides what a row may be, and releases
differ in it (8.4.190 drops a pose row's keypoints for a box task and rejects files that mix boxes and
polygons; from 8.4.83 a segment dataset holding box rows stops, later an OBB one too). So nothing of
it is re-written here; the release is asked, on small files of the same layout:
- each image's verdict comes from ``verify_image_label`` (``ultralytics.data.utils``; it keeps or
  rejects the file, turns polygons into boxes, reads keypoints), called on a 32 x 32 image and a label
  file with one row of each width the image's own file has (``layout_verdict``). Widths above 6 stand
  for their kind: odd (a polygon) or even (never a whole number of points), except the data's
  keypoint width (``_representative``), so a dataset's thousands of polygon lengths ask a few questions;
- a segment or OBB model whose kept images hold box rows is asked of the release's dataset
  (``build_yolo_dataset``, from 8.0.89): a box image beside a polygon image, built as the trainer
  builds its dataset, raises where the release stops (``"... dataset requires equal numbers of boxes
  and segments"``), and otherwise shows whether it drops every polygon. Releases without it (up to
  8.0.88) warn and drop every polygon, the same code inline in ``YOLODataset.get_labels``.

An OBB model takes its boxes from the polygons, so box rows give it no objects; a segment model makes
its masks from them, so it trains none. The estimate then keeps the objects counted (what the run needs
once the labels fit the task), and says so.
"""

from __future__ import annotations

import contextlib
import functools
import io
import tempfile
from dataclasses import dataclass, replace
from itertools import count
from pathlib import Path

from yolomem.errors import UserError

MODEL_OF_TASK = {"detect": "a detect model", "segment": "a segment model", "pose": "a pose model", "obb": "an OBB model"}
POLYGON_ROW = {"segment": "'class x1 y1 x2 y2 ...'", "obb": "'class x1 y1 x2 y2 x3 y3 x4 y4'"}
ROW_LAYOUT = {
    "detect": "'class x y w h' (or a polygon)",
    "segment": f"a polygon, {POLYGON_ROW['segment']}",
    "obb": f"the 4 corners, {POLYGON_ROW['obb']}",
}


@dataclass(frozen=True)
class LayoutVerdict:
    """``verify_image_label``'s answer for one layout of row widths."""

    kept: bool
    message: str  # why the file is rejected, as the release logs it ('' when kept)
    polygons: bool  # its rows are read as polygons (the segments a segment or OBB model needs)


def _representative(width: int, keypoint_width: int | None) -> int:
    """A width that ``verify_image_label`` answers alike: boxes, 6-value rows and the keypoint width as
    they are; other widths by parity (an odd one is a polygon, an even one has half a point)."""
    if width <= 6 or width == keypoint_width:
        return width
    return next(w for w in count(7 if width % 2 else 8, 2) if w != keypoint_width)


@functools.cache
def layout_of(widths: frozenset[int], kpt_shape: tuple[int, int] | None) -> frozenset[int]:
    keypoint_width = 5 + kpt_shape[0] * kpt_shape[1] if kpt_shape else None
    return frozenset(_representative(w, keypoint_width) for w in widths)


@functools.cache
def layout_verdict(layout: frozenset[int], keypoint: bool, kpt_shape: tuple[int, int] | None) -> LayoutVerdict:
    """Ask the installed ``verify_image_label`` about a label file with one row of each width in
    ``layout`` (class 0, every coordinate 0.5), for a pose dataset (``keypoint``) or not."""
    from yolomem.config.dataset import verify_label_rows

    rows = ["0" + " 0.5" * (width - 1) for width in sorted(layout)]
    result = verify_label_rows(rows, keypoint=keypoint, num_cls=1, kpt_shape=kpt_shape)
    if result[0] is None:
        message = str(result[-1]).split(": ignoring corrupt image/label: ")[-1].strip()
        return LayoutVerdict(False, message, False)
    return LayoutVerdict(True, "", bool(result[3]))


def judge_labels(dataset, task: str, kpt_shape: tuple[int, int] | None):
    """``dataset`` (``yolomem.config.dataset.DatasetSummary``) without the images the release rejects for
    ``task``, with notes saying what it made of the rest; a one-line ``UserError`` where its dataset stops."""
    from yolomem.loops.ultralytics.release import release

    version = release().version
    keypoint = task == "pose"
    splits, notes, box_rows, with_polygons = {"train": dataset.train, "val": dataset.val}, [], [], False
    for split in (dataset.train, dataset.val):
        if split is None or not split.widths:
            continue
        verdicts = [layout_verdict(layout_of(widths, kpt_shape), keypoint, kpt_shape) if widths else None
                    for widths in split.widths]  # fmt: skip
        kept = [i for i, verdict in enumerate(verdicts) if verdict is None or verdict.kept]
        rejected = [verdict for verdict in verdicts if verdict is not None and not verdict.kept]
        if rejected:
            why = rejected[0].message
            shown = f"ultralytics {version} rejects the labels of"
            if not kept:
                raise UserError(f"data={dataset.yaml_path}: {shown} every {split.name} image for {MODEL_OF_TASK[task]} "
                                f"(verify_image_label: {why!r}), and its dataset then stops (\"No valid images found\"); "
                                f"its label row is {_row_layout(task, kpt_shape)}")  # fmt: skip
            notes.append(f"data={dataset.yaml_path}: {shown} {len(rejected)} of {len(verdicts)} {split.name} images for "
                         f"{MODEL_OF_TASK[task]} (verify_image_label: {why!r}) and leaves them out, so they are not counted")  # fmt: skip
        boxes_only = sum(1 for i in kept if verdicts[i] is not None and not verdicts[i].polygons)
        if task in ("segment", "obb") and boxes_only:
            box_rows.append(f"{boxes_only} of {len(kept)} {split.name}")
            with_polygons = with_polygons or boxes_only < len(kept)
        splits[split.name] = split.keeping(kept, corrupt=True)
    if box_rows:
        drops_every_polygon = _check_boxes_for_polygon_task(dataset.yaml_path, task, version)
        notes.append(_box_rows_note(dataset.yaml_path, task, " and ".join(box_rows)))
        if drops_every_polygon and with_polygons:
            notes.append(f"data={dataset.yaml_path}: with box rows beside polygons, ultralytics {version}'s dataset drops "
                         f"every polygon (box and segment counts differ), so no image gives {MODEL_OF_TASK[task]} its "
                         f"{'objects' if task == 'obb' else 'masks'}")  # fmt: skip
    return replace(dataset, train=splits["train"], val=splits["val"], label_notes=dataset.label_notes + tuple(notes))


def _row_layout(task: str, kpt_shape: tuple[int, int] | None) -> str:
    if task == "pose":
        shape = kpt_shape or (17, 3)
        return f"'class x y w h' and {shape[0]} x {shape[1]} keypoint values ({5 + shape[0] * shape[1]} values)"
    return ROW_LAYOUT.get(task, ROW_LAYOUT["detect"])


def _box_rows_note(data: str, task: str, images: str) -> str:
    gets = "no objects (it reads each object's 4 corners" if task == "obb" else "no masks (it makes them from polygons"
    return (f"data={data}: {images} images have box rows ('class x y w h'), from which {MODEL_OF_TASK[task]} gets "
            f"{gets}, {POLYGON_ROW[task]}); estimated with their objects counted, as once the "
            f"labels are {'corners' if task == 'obb' else 'polygons'}")  # fmt: skip


def _check_boxes_for_polygon_task(data: str, task: str, version: str) -> bool:
    """Build the release's dataset of one box-row image beside one polygon image, for ``task``; where the
    release stops on it, refuse in one line with its words. Whether it drops every polygon instead."""
    try:
        from ultralytics.data.build import build_yolo_dataset
    except ImportError:  # up to 8.0.88: get_labels warns and drops the polygons inline
        return True
    from ultralytics.cfg import get_cfg
    from ultralytics.utils import DEFAULT_CFG

    from yolomem.config.dataset import write_label_image
    from yolomem.loops.ultralytics.step import quiet_ultralytics

    with tempfile.TemporaryDirectory() as folder:
        images = Path(folder) / "images"
        labels = Path(folder) / "labels"
        images.mkdir()
        labels.mkdir()
        write_label_image(images / "box.png", labels / "box.txt", ["0 0.5 0.5 0.2 0.2"])
        write_label_image(images / "polygon.png", labels / "polygon.txt", ["0 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6"])
        cfg = get_cfg(DEFAULT_CFG, {"task": task, "imgsz": 32})
        try:  # quiet: its LOGGER, and the scan's progress bar on stderr
            with quiet_ultralytics(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
                built = build_yolo_dataset(cfg, str(images), 2, {"names": {0: "object"}, "nc": 1, "channels": 3}, mode="val")
            return not any(len(label["segments"]) for label in built.labels)
        except ValueError as error:
            if "segments" not in str(error):
                raise  # not the release's answer to box rows: the two images do not suit it (a yolomem bug)
            said = str(error).split(", but got")[0]  # the counts are of the two images asked about
            raise UserError(f"data={data}: ultralytics {version} stops on box rows for {MODEL_OF_TASK[task]} (\"{said}\"); "
                            f"its label row is {_row_layout(task, None)}") from None  # fmt: skip
