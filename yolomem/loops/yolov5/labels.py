"""What the yolov5 repo's loaders make of a dataset's label rows: the images they reject as corrupt.

``LoadImagesAndLabels`` (train.py's and, through ``LoadImagesAndLabelsAndMasks``, segment/train.py's)
keeps an image when ``verify_image_label`` (``utils/dataloaders.py``, v7.0) passes its label file. That
check reads a file with any row longer than 6 values as polygons (``class x1 y1 x2 y2 ...``, boxes made
with ``segments2boxes``), so a row with half a point (an even width: a 6-value row, a pose row of 17 x 3
keypoints) fails it; otherwise every row must be ``class x y w h``. ``rows_verdict`` is a copy of its
label half, asked, as ``yolomem.loops.ultralytics.labels`` asks the installed Ultralytics, once per
layout of row widths (every coordinate 0.5; widths above 6 stand for their parity).
``tests/test_yolov5_matches_repo.py`` checks it against the repo's own function on real files.

An image it rejects is left out (logged as "ignoring corrupt image/label"); when it rejects every image
of a split, ``zip(*cache.values())`` of an empty cache stops the dataset.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import numpy as np

from yolomem.errors import UserError

ROW_LAYOUT = "'class x y w h' or a polygon 'class x1 y1 x2 y2 ...'"


def rows_verdict(rows: list[str]) -> str | None:
    """The label half of the repo's ``verify_image_label`` for a file of ``rows``: None where it keeps the
    file, else the reason it logs."""
    try:
        lb = [x.split() for x in rows if len(x)]
        if any(len(x) > 6 for x in lb):  # is segment
            classes = np.array([x[0] for x in lb], dtype=np.float32)
            segments = [np.array(x[1:], dtype=np.float32).reshape(-1, 2) for x in lb]  # (cls, xy1...)
            lb = np.concatenate((classes.reshape(-1, 1), _segments2boxes(segments)), 1)  # (cls, xywh)
        lb = np.array(lb, dtype=np.float32)
        if len(lb) and lb.shape[1] != 5:  # the repo's assert, which python -O would strip here
            raise ValueError(f"labels require 5 columns, {lb.shape[1]} columns detected")
        return None
    except Exception as error:  # the repo's own catch-all: any failure marks the image corrupt
        return str(error)


def _segments2boxes(segments: list[np.ndarray]) -> np.ndarray:
    """``utils/general.py: segments2boxes``: one (x, y, w, h) box per polygon."""
    boxes = np.array([[s[:, 0].min(), s[:, 1].min(), s[:, 0].max(), s[:, 1].max()] for s in segments])
    return np.concatenate(((boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]), 1)


@functools.cache
def layout_verdict(widths: frozenset[int]) -> str | None:
    """``rows_verdict`` for a file with one row of each width in ``widths`` (widths above 6 by parity)."""
    return _verdict_of(frozenset(w if w <= 6 else 7 + (w + 1) % 2 for w in widths))


def _verdict_of(widths: frozenset[int]) -> str | None:
    return rows_verdict(["0" + " 0.5" * (width - 1) for width in sorted(widths)])


def judge_labels(dataset):
    """``dataset`` (``yolomem.config.dataset.DatasetSummary``) without the images the repo rejects, with a
    note where it rejects some; a one-line ``UserError`` where it rejects every image of a split."""
    splits, notes = {"train": dataset.train, "val": dataset.val}, []
    for split in (dataset.train, dataset.val):
        if split is None or not split.widths:
            continue
        verdicts = [layout_verdict(widths) if widths else None for widths in split.widths]
        kept = [i for i, verdict in enumerate(verdicts) if verdict is None]
        if len(kept) == len(verdicts):
            continue
        first = next(i for i, verdict in enumerate(verdicts) if verdict is not None)
        why = _verdict_of(split.widths[first])  # its own widths: the words the repo logs for it
        if not kept:
            raise UserError(f"data={dataset.yaml_path}: the yolov5 repo's verify_image_label rejects the labels of every "
                            f"{split.name} image ({why!r}), and its dataset then stops (\"not enough values to unpack\"); "
                            f"its label row is {ROW_LAYOUT}")  # fmt: skip
        notes.append(f"data={dataset.yaml_path}: the yolov5 repo's verify_image_label rejects the labels of "
                     f"{len(verdicts) - len(kept)} of {len(verdicts)} {split.name} images ({why!r}) and leaves them "
                     "out, so they are not counted")  # fmt: skip
        splits[split.name] = split.keeping(kept, corrupt=True)
    return replace(dataset, train=splits["train"], val=splits["val"], label_notes=dataset.label_notes + tuple(notes))
