"""Objects per training sample, and the densest batch of an epoch.

Why it matters: the detection losses pad a batch's targets to (batch, n_max, ...), n_max being the most
objects in any one training sample of the batch, and Ultralytics' TaskAlignedAssigner builds
(batch, n_max, anchors) tensors from them. ``memory_reserved()`` only grows within an epoch, so epoch
1's GPU_mem is set by the densest batch of the epoch, not by a typical one.

1. Objects per image. ``data=`` gives them (the label files). Otherwise they are drawn from a
   Poisson distribution whose rate is lognormal: mean ``instances=``, log-sd ``sigma``. That family fits
   the published per-image tables of the named datasets below (quantiles p25-p99.9 to a log-rms error of
   at most 0.14; a negative binomial misses their tails by 2-4x). ``sigma`` is fitted per dataset
   (``NAMED_SHAPES``); ``tail=`` picks one, otherwise the default is the median over them
   (``DEFAULT_SIGMA``) and the upper figure takes CrowdHuman's (``UPPER_SHAPE``). ``max_instances=`` caps
   the count of an image and puts one image at the cap. ``data=`` naming a dataset Ultralytics ships a
   YAML for, not on disk, sets these from its published statistics (``NAMED_DATASETS``).
2. Training samples. Ultralytics' training pipeline (``ultralytics.data.augment.v8_transforms``; the
   yolov5 repo's ``load_mosaic`` is the same geometry) puts 4 images in a 2s x 2s mosaic (``Mosaic(n=4)``,
   probability ``hyp.mosaic=1.0``, switched off for the last ``close_mosaic=10`` epochs), then
   ``RandomPerspective(scale=0.5, translate=0.1)`` zooms by U(0.5, 1.5) about the canvas centre, shifts
   by U(0.4, 0.6) s and crops s x s. Without mosaic the single image goes through the same affine.
   Modelled: an object of image i survives with the share of image i inside the crop window (objects as
   points, images square). Checked against Ultralytics' own transforms in ``tests/test_density.py``; the
   real ``box_candidates`` also keeps boxes with >= 10 % in view and drops sides < 2 px, which moves the
   mean by about +10 %, the tail less.
3. An epoch. Every image starts one sample and its 3 mosaic partners are random (Ultralytics picks them
   from a buffer of recent images); the samples are shuffled into ceil(images / batch) batches. Without
   ``data=`` the dataset has ``images=`` images: ``DEFAULT_TRAIN_IMAGES`` when not given, and then
   ``UPPER_TRAIN_IMAGES`` for the upper figure (the densest batch grows with the epoch).

Sources (per-image statistics; shared/reference/dataset_object_density.md, copied with their origin in
``tests/data/dataset_object_density.csv``): Dataset Ninja per-image tables (github.com/dataset-ninja,
``stats/classes_per_image.json`` at the commits listed there) for SKU-110K, GWHD 2021, KITTI, Cityscapes,
PASCAL VOC 2012, VisDrone2019-DET, CrowdHuman, xView, WIDER FACE and DOTA v2.0; COCO 2017 from its mean
(7.27, Liu et al. IJCV 2020 Table 3), median 4 and "99 % of images between 1 and 33 instances"
(Lextal/SotA-CV coco_detection.md) and a maximum between 90 and 128 (YOLOX issue 499,
pytorch_simple_CenterNet_45 issue 10).
"""

from __future__ import annotations

import functools
import hashlib
import math
import statistics
from collections.abc import Sequence
from dataclasses import astuple, dataclass

import numpy as np

from yolomem.loops.batches import BOX_SIDE_RANGE, box_side_limit


@dataclass(frozen=True)
class CountShape:
    """The tail of a dataset's objects-per-image distribution: log-sd of a Poisson-lognormal."""

    dataset: str
    sigma: float
    mean: float  # the dataset's own mean (for reference; estimates scale to instances=)
    source: str


# sigma: least squares on log(1 + quantile) over the published p25..p99.9 (tests check the fit)
NAMED_SHAPES: dict[str, CountShape] = {
    shape.dataset: shape
    for shape in (
        CountShape("SKU-110K", 0.35, 147.0, "Dataset Ninja sku110k, train"),
        CountShape("GWHD-2021", 0.45, 42.3, "Dataset Ninja gwhd, all"),
        CountShape("KITTI", 0.45, 5.42, "Dataset Ninja kitti-object-detection, train, no DontCare"),
        CountShape("Cityscapes", 0.60, 17.7, "Dataset Ninja cityscapes, train, 10 thing classes"),
        CountShape("VOC", 0.70, 2.38, "Dataset Ninja pascal-voc-2012, seg. trainval"),
        CountShape("VisDrone", 0.70, 53.3, "Dataset Ninja vis-drone-2019-det, train"),
        CountShape("COCO", 0.65, 7.27, "mean 7.27, p99 ~33, max 90-128 (see module docstring); its median 4 comes out 6"),
        CountShape("CrowdHuman", 0.85, 29.2, "Dataset Ninja crowdhuman, train, full-body boxes"),
        CountShape("xView", 1.55, 711.3, "Dataset Ninja xview, train"),
        CountShape("WIDER-FACE", 1.70, 12.4, "Dataset Ninja wider-face, train"),
        CountShape("DOTA-v2", 1.90, 146.7, "Dataset Ninja dota, train (full-size images)"),
    )
}
DEFAULT_SIGMA = statistics.median(s.sigma for s in NAMED_SHAPES.values())  # 0.70
# The upper figure's tail: the heaviest among datasets of ground-level photos. Aerial images and faces
# (xView, DOTA, WIDER FACE) have far heavier tails; for those, pass data= or max_instances=.
UPPER_SHAPE = NAMED_SHAPES["CrowdHuman"]


@dataclass(frozen=True)
class NamedDataset:
    """A dataset Ultralytics ships a YAML for (``data=VisDrone.yaml``), by its published statistics: the
    stand-in for its labels when they are not on disk."""

    name: str
    mean: float  # objects per image
    source: str  # the row of shared/reference/dataset_object_density.md
    images: int | None = None  # train images, as the YAML trains on them
    densest: int | None = None  # the most objects in one image of the train split, where published
    tail: str | None = None  # the NAMED_SHAPES entry of its per-image spread, where one was fitted


# Train splits as the YAMLs train on them; means, densest images and tails from the reference table
# (d: instances / images); image counts from the reference rows or, where marked, the YAML's own comment.
NAMED_DATASETS: dict[str, NamedDataset] = {
    d.name.lower(): d
    for d in (
        NamedDataset("coco.yaml", 7.27, "COCO 2017 train2017, 860,001 boxes on 118,287 images", 118_287, tail="COCO"),
        NamedDataset("coco128.yaml", 7.26, "coco128: 929 boxes on 128 images", 128, tail="COCO"),
        NamedDataset("VOC.yaml", 2.42, "PASCAL VOC 07+12 trainval, 40,058 boxes on 16,551 images", 16_551, tail="VOC"),
        NamedDataset("VisDrone.yaml", 53.27, "VisDrone2019-DET train, Dataset Ninja: median 42, p99 212, max 902",
                     6_471, 902, "VisDrone"),
        NamedDataset("SKU-110K.yaml", 147.0, "SKU-110K train, Dataset Ninja: median 138, p99 302, max 576",
                     8_185, 576, "SKU-110K"),
        NamedDataset("kitti.yaml", 5.42, "KITTI 2D object train without DontCare, Dataset Ninja: max 22; kitti.yaml "
                     "trains on 5,985 of its 7,481 images", 5_985, 22, "KITTI"),
        NamedDataset("GlobalWheat2020.yaml", 41.2, "Global Wheat Head 2020, 193,634 boxes on 4,700 images; the YAML "
                     "trains on 3,422, spread as GWHD 2021", 3_422, tail="GWHD-2021"),
        NamedDataset("Argoverse.yaml", 18.8, "Argoverse-HD train+val, 1,025,715 boxes on 54,446 images"),
        NamedDataset("Objects365.yaml", 15.0, "Objects365 v2, about 30M boxes on about 2M images (upstream totals); "
                     "1,742,289 train images", 1_742_289),
        NamedDataset("lvis.yaml", 12.68, "LVIS v1 train, 1,270,141 instances on 100,170 images", 100_170),
        NamedDataset("open-images-v7.yaml", 8.3, "Open Images V7 boxed subset, about 16M boxes on 1.9M images"),
    )
}


def named_dataset(data: str) -> NamedDataset | None:
    return NAMED_DATASETS.get(str(data).strip().lower())


DEFAULT_TRAIN_IMAGES = 2000  # dataset size without data=: between coco128/brain-tumor and VisDrone/SKU-110K
UPPER_TRAIN_IMAGES = 10000  # the upper figure's dataset size when not known (the densest batch grows with the epoch)
# The most images an epoch is drawn with: 11 seeds of 100,000 (and as many for the upper figure) take
# 1.4 s on one core. A longer epoch is drawn at this length, and the plan's source says so.
MAX_DRAWN_IMAGES = 100_000
REFERENCE_BATCH = 16  # a typical batch's densest sample is taken over this many samples (Ultralytics' default batch)
SEEDS = 11  # epochs drawn per figure: the expected figure takes their median, the upper their 90th percentile
UPPER_PERCENTILE = 90


def named_shape(tail: str | None) -> CountShape | None:
    """The named dataset's spread that ``tail=`` names, matched without case; None when not given."""
    if tail is None:
        return None
    return next(shape for name, shape in NAMED_SHAPES.items() if name.lower() == tail.lower())


def tail_sigma(tail: str | None) -> float | None:
    shape = named_shape(tail)
    return None if shape is None else shape.sigma


def epoch_images(rng: np.random.Generator, instances: float, sigma: float | None, images: int | None,
                 cap: int | None) -> np.ndarray:  # fmt: skip
    """Objects in each image of an epoch without labels: ``images`` of them (``DEFAULT_TRAIN_IMAGES``;
    at most ``MAX_DRAWN_IMAGES`` drawn), spread with ``sigma`` (``DEFAULT_SIGMA``)."""
    n = min(images or DEFAULT_TRAIN_IMAGES, MAX_DRAWN_IMAGES)
    return image_counts(rng, instances, DEFAULT_SIGMA if sigma is None else sigma, n, cap)


@dataclass(frozen=True)
class Augmentation:
    """The label geometry of Ultralytics' training augmentation (``cfg/default.yaml``). Left out:
    ``RandomPerspective`` also drops boxes under 2 px a side, which no box drawn here becomes at 640 px
    and the default zoom (the smallest is 0.02 x 640 x 0.5 = 6.4 px)."""

    mosaic: float = 1.0  # probability of a 4-image mosaic
    scale: float = 0.5  # zoom U(1 - scale, 1 + scale)
    translate: float = 0.1  # shift U(0.5 - translate, 0.5 + translate) * imgsz

    @staticmethod
    def for_epoch(epoch: int, epochs: int | None, mosaic: float = 1.0, close_mosaic: int = 10, scale: float = 0.5,
                  translate: float = 0.1, closes_when_short: bool = True) -> Augmentation:  # fmt: skip
        """BaseTrainer closes the mosaic at the first epoch (0-based) of the last ``close_mosaic`` and keeps
        it closed. A run of fewer epochs: from epoch 0 where ``closes_when_short`` (Ultralytics 8.4.157+,
        ``epoch >= epochs - close_mosaic``), never before that (``epoch == epochs - close_mosaic``)."""
        total = epochs if epochs is not None else 100  # Ultralytics' default epochs
        reached = epoch >= total - close_mosaic and (closes_when_short or total >= close_mosaic)
        return Augmentation(0.0 if close_mosaic > 0 and reached else mosaic, scale, translate)

    @staticmethod
    def of_config(config, epoch: int) -> Augmentation:
        """Epoch ``epoch``'s augmentation under ``config`` (an ``EstimateConfig`` whose framework is resolved):
        the mosaic closed for the last ``close_mosaic`` epochs as the installed Ultralytics closes it, except in
        the yolov5 repo's train.py, which has no ``close_mosaic`` and keeps it on."""
        if config.framework == "yolov5":
            return Augmentation.for_epoch(epoch, config.epochs, config.mosaic, 0, config.scale, config.translate)
        from yolomem.loops.ultralytics.trainer_source import mosaic_close_rule

        return Augmentation.for_epoch(epoch, config.epochs, config.mosaic, config.close_mosaic, config.scale,
                                      config.translate, mosaic_close_rule())  # fmt: skip


def image_counts(rng: np.random.Generator, mean: float, sigma: float, n: int, cap: int | None = None) -> np.ndarray:
    """Objects in ``n`` images: Poisson with a lognormal rate of the given mean and log-sd. ``cap``:
    no image holds more, and one holds exactly that many (``max_instances=``). A cap at or below the mean
    leaves no room for a spread: every image holds the cap (``instances=50 max_instances=50``: 50 in each;
    capping the draw would lower its mean below what the user said)."""
    if cap is not None and 0 < mean and cap <= mean:
        return np.full(n, cap, dtype=np.int64)
    if mean <= 0 or n == 0:
        counts = np.zeros(n, dtype=np.int64)
    else:
        rate = np.exp(math.log(mean) - sigma * sigma / 2 + sigma * rng.standard_normal(n))
        counts = rng.poisson(rate).astype(np.int64)
    if cap is not None and n:
        counts = np.minimum(counts, cap)
        counts[int(np.argmax(counts))] = cap
    return counts


KEEP_VISIBLE = 0.10  # RandomPerspective.box_candidates: area_thr=0.10, kept when >= 10 % of a box is in view


def _mean_side(counts: np.ndarray) -> np.ndarray:
    """Mean object side (image units) in an image of ``counts`` objects, as ``SyntheticBatch`` draws
    them: log-uniform between 0.02 and ``box_side_limit(count)``."""
    low, high = BOX_SIDE_RANGE[0], box_side_limit(counts)
    return (high - low) / np.log(high / low)


def _window_shares(rng: np.random.Generator, mosaic: np.ndarray, margin: np.ndarray, aug: Augmentation) -> np.ndarray:
    """(m, 4) share of each image of a sample that lies inside the crop window (image side = 1).

    Mosaic (``Mosaic`` n=4, then ``RandomPerspective``): centre (xc, yc) ~ U(0.5, 1.5) of a 2 x 2
    canvas; image 0 ends at the centre (top-left), 1 top-right, 2 bottom-left, 3 bottom-right. The
    canvas centre goes to the origin, is zoomed by z and shifted by t, so the window is
    [1 - t/z, 1 + (1 - t)/z] per axis. A single image: its centre (0.5) instead of the canvas's; columns
    1-3 are 0. ``margin`` (m, 4) widens the window per image: a box whose centre lies up to
    (0.5 - KEEP_VISIBLE) of its side outside still shows >= 10 % of itself and is kept."""
    m = len(mosaic)
    z = rng.uniform(1 - aug.scale, 1 + aug.scale, m)[:, None]
    t = rng.uniform(0.5 - aug.translate, 0.5 + aug.translate, (m, 2))
    centre = rng.uniform(0.5, 1.5, (m, 2))
    origin = np.where(mosaic, 1.0, 0.5)[:, None]
    window_lo, window_hi = origin - t / z, origin + (1 - t) / z  # (m, 2)
    shares = np.zeros((m, 4))
    for q in range(4):
        corner = np.stack([centre[:, 0] - (q % 2 == 0), centre[:, 1] - (q < 2)], axis=1)  # image's top-left
        start = np.where(mosaic[:, None], corner, 0.0)
        lo = np.maximum(np.maximum(start, 0.0), window_lo - margin[:, q : q + 1])  # the canvas cuts images too
        hi = np.minimum(np.minimum(start + 1, 1.0 + mosaic[:, None]), window_hi + margin[:, q : q + 1])
        seen = np.clip(hi - lo, 0.0, None)
        shares[:, q] = np.where(mosaic | (q == 0), seen[:, 0] * seen[:, 1], 0.0)
    return np.clip(shares, 0.0, 1.0)


def sample_counts(rng: np.random.Generator, per_image: np.ndarray, first: np.ndarray, aug: Augmentation) -> np.ndarray:
    """Objects in the training samples that start with images ``first`` (indices into ``per_image``)."""
    per_image = np.asarray(per_image, dtype=np.int64)
    m = len(first)
    if m == 0:
        return np.zeros(0, dtype=np.int64)
    mosaic = rng.uniform(size=m) < aug.mosaic
    partners = rng.integers(0, len(per_image), size=(m, 3))
    images = np.concatenate([per_image[first][:, None], per_image[partners]], axis=1)  # (m, 4) objects
    margin = (0.5 - KEEP_VISIBLE) * _mean_side(images)
    return rng.binomial(images, _window_shares(rng, mosaic, margin, aug)).sum(axis=1)


@dataclass(frozen=True)
class DensityPlan:
    """The batches a traced run uses: a typical one, epoch 1's densest, and the upper figure's densest."""

    typical: tuple[int, ...]  # objects per sample of a median batch
    densest: tuple[int, ...]  # the densest batch of epoch 1 (the seed with the median maximum)
    densest_upper: tuple[int, ...]  # the upper figure's densest batch (90th percentile over seeds)
    batches_per_epoch: int
    images: int
    source: str  # where the objects per image come from, in words
    mosaic: bool  # whether epoch 1 trains on mosaics
    # what the traced batches hold (``iteration_counts``); neither depends on the batch size:
    typical_sample: int = 0  # the median sample of epoch 1
    typical_densest: int = 0  # a typical batch's densest sample: the median over REFERENCE_BATCH-sample cuts

    @property
    def n_max(self) -> int:
        return max(self.densest, default=0)

    @property
    def n_max_upper(self) -> int:
        return max(self.densest_upper, default=0)

    def to_json(self) -> dict:
        return {
            "n_max": self.n_max, "n_max_upper": self.n_max_upper, "typical_n_max": self.typical_densest,
            "batches_per_epoch": self.batches_per_epoch, "images": self.images, "source": self.source,
            "mosaic": self.mosaic,
        }  # fmt: skip


def plan_density(
    *, batch: int, instances: float, seed: int = 0, train_counts: Sequence[int] | None = None,
    max_instances: int | None = None, aug: Augmentation = Augmentation(), images: int | None = None,
    tail: str | None = None,
) -> DensityPlan:  # fmt: skip
    """Draw epoch 1 ``SEEDS`` times and pick the batches to trace (see the module docstring). ``images``
    and ``tail`` (a named dataset's spread), when known, hold for the upper figure too."""
    counts = None if train_counts is None else tuple(int(c) for c in train_counts)
    shape = named_shape(tail)
    drawn = _drawn_samples(instances, seed, counts, max_instances, aug, None if shape is None else shape.sigma, images)
    typical_batches, densest, upper = [], [], []
    for samples, upper_samples in drawn:
        maxima, sums = batch_maxima_and_sums(samples, batch)
        densest.append(_batch(samples, batch, _densest_index(maxima, sums)))
        typical_batches.append(_batch(samples, batch, int(np.argsort(maxima, kind="stable")[len(maxima) // 2])))
        upper_maxima, upper_sums = batch_maxima_and_sums(upper_samples, batch)
        upper.append(_batch(upper_samples, batch, _densest_index(upper_maxima, upper_sums)))
    typical_batches = [_full(b, batch, b) for b in typical_batches]
    densest = [_full(b, batch, typical_batches[k]) for k, b in enumerate(densest)]  # a short last batch, filled
    upper = [_full(b, batch, typical_batches[k]) for k, b in enumerate(upper)]
    order = np.argsort([max(b, default=0) for b in densest], kind="stable")
    chosen = int(order[len(order) // 2])
    upper_maxima = [max(b, default=0) for b in upper]
    target = np.percentile(upper_maxima, UPPER_PERCENTILE, method="inverted_cdf")
    upper_pick = next(b for b in upper if max(b, default=0) == target)
    if max(upper_pick, default=0) < max(densest[chosen], default=0):
        upper_pick = densest[chosen]
    epoch = drawn[chosen][0]
    cuts = batch_maxima_and_sums(epoch, REFERENCE_BATCH)[0]
    n_images = len(counts) if counts is not None else (images or DEFAULT_TRAIN_IMAGES)
    drawn_note = f" (its densest batch: of {MAX_DRAWN_IMAGES:,} of them)" if n_images > MAX_DRAWN_IMAGES else ""
    if counts is not None:
        source = f"the dataset's labels ({n_images} images, densest image {max(counts, default=0)})"
    else:
        spread = (f"spread as {shape.dataset} (sigma {shape.sigma:.2f})" if shape is not None else
                  f"tail of a Poisson-lognormal (sigma {DEFAULT_SIGMA:.2f}, median of {len(NAMED_SHAPES)} named datasets)")
        cap = f", at most max_instances={max_instances} in one image" if max_instances is not None else ""
        source = f"instances={instances:g} per image{cap}, {spread}, {n_images} images{drawn_note}"
    return DensityPlan(
        typical=tuple(typical_batches[chosen]), densest=tuple(densest[chosen]), densest_upper=tuple(upper_pick),
        batches_per_epoch=math.ceil(n_images / batch), images=n_images, source=source, mosaic=aug.mosaic > 0,
        typical_sample=int(np.median(epoch)) if len(epoch) else 0,
        typical_densest=int(np.median(cuts)) if len(cuts) else 0,
    )  # fmt: skip


@functools.lru_cache(maxsize=4)  # up to 11 seeds x 2 x MAX_DRAWN_IMAGES int64 (18 MB) each
def _drawn_samples(instances: float, seed: int, train_counts: tuple[int, ...] | None, max_instances: int | None,
                   aug: Augmentation, sigma: float | None, images: int | None) -> tuple[tuple[np.ndarray, np.ndarray], ...]:  # fmt: skip
    """Objects per sample of epoch 1 in each seed's order, and of the upper figure's epoch: neither
    depends on the batch size, so a sweep over batches draws them once."""
    drawn = []
    for k in range(SEEDS):
        rng = np.random.default_rng(seed + 1000 * k)
        if train_counts is not None:
            per_image = np.asarray(train_counts, dtype=np.int64)
            upper_images = per_image
        else:
            per_image = epoch_images(rng, instances, sigma, images, max_instances)
            # a known epoch length and spread hold for the upper figure too
            upper_n = len(per_image) if images is not None else max(len(per_image), UPPER_TRAIN_IMAGES)
            upper_sigma = UPPER_SHAPE.sigma if sigma is None else sigma
            upper_images = image_counts(rng, instances, upper_sigma, upper_n, max_instances)
        samples = sample_counts(rng, per_image, rng.permutation(len(per_image)), aug)
        upper = samples
        if upper_images is not per_image:
            upper = sample_counts(rng, upper_images, rng.permutation(len(upper_images)), aug)
        samples.flags.writeable = upper.flags.writeable = False  # kept for later calls
        drawn.append((samples, upper))
    return tuple(drawn)


def batch_maxima_and_sums(samples: np.ndarray, batch: int) -> tuple[np.ndarray, np.ndarray]:
    """The most objects in one sample, and all of them, of each batch of consecutive samples (the last
    batch may be short)."""
    size = -(-len(samples) // batch) * batch
    padded = np.full(size, -1, dtype=np.int64)
    padded[: len(samples)] = samples
    rows = padded.reshape(-1, batch)
    return rows.max(axis=1), np.where(rows < 0, 0, rows).sum(axis=1)


def _densest_index(maxima: np.ndarray, sums: np.ndarray) -> int:
    """The first batch with the densest sample, the most objects among those."""
    tied = np.flatnonzero(maxima == maxima.max())
    return int(tied[np.argmax(sums[tied])])


def _batch(samples: np.ndarray, batch: int, index: int) -> tuple[int, ...]:
    return tuple(int(c) for c in samples[index * batch : (index + 1) * batch])


def _full(counts: tuple[int, ...], batch: int, filler: tuple[int, ...]) -> tuple[int, ...]:
    """``counts`` topped up to ``batch`` samples from ``filler`` (the traced step always has a full batch)."""
    missing = batch - len(counts)
    return counts if missing <= 0 else counts + tuple((filler * (missing // max(len(filler), 1) + 1))[:missing])


def plan_for(config, batch: int, train_counts: Sequence[int] | None = None) -> DensityPlan:
    """The density plan of a config (``yolomem.config.settings.EstimateConfig``) at ``batch`` images per
    GPU. The yolov5 repo's train.py has no ``close_mosaic``: its mosaic stays on."""
    aug = Augmentation.of_config(config, 0)
    counts = None if train_counts is None else tuple(int(c) for c in train_counts)
    return _plan_once(batch, config.instances, config.seed, counts, config.max_instances, aug, config.images,
                      config.tail)  # fmt: skip


@functools.lru_cache(maxsize=256)
def _plan_once(batch: int, instances: float, seed: int, train_counts: tuple[int, ...] | None,
               max_instances: int | None, aug: Augmentation, images: int | None, tail: str | None) -> DensityPlan:  # fmt: skip
    """``plan_density``, once per process for each setting (an estimate asks for its plan more than
    once, and a sweep asks again for every config that shares the batch), and read back from the trace
    cache after that: the draws take about 0.13 s, a quarter of an estimate repeated from the cache."""
    from yolomem.trace.store import active_store, code_key

    def compute() -> DensityPlan:
        return plan_density(batch=batch, instances=instances, seed=seed, train_counts=train_counts,
                            max_instances=max_instances, aug=aug, images=images, tail=tail)  # fmt: skip

    counts = None if train_counts is None else _counts_digest(train_counts)  # a dataset's labels: their digest
    key = code_key() | {"probe": "density plan", "batch": batch, "instances": instances, "seed": seed, "counts": counts,
                        "max_instances": max_instances, "aug": astuple(aug), "images": images, "tail": tail}  # fmt: skip
    return active_store().kept_probe(key, compute, DensityPlan)


def _counts_digest(counts: tuple[int, ...]) -> str:
    return hashlib.sha256(np.asarray(counts, dtype=np.int64).tobytes()).hexdigest()


def iteration_counts(plan: DensityPlan, iterations: int, upper: bool) -> list[tuple[int, ...]]:
    """Objects per sample of each traced iteration: typical batches, the last of the configured ones
    epoch 1's densest; with ``upper``, one more: the upper figure's densest. Each is its densest sample
    and typical ones (``yolomem.loops.batches.dense_counts``): the assigner's padding is the densest
    sample's, the totals a typical batch's, and none of it depends on the batch size."""
    from yolomem.loops.batches import dense_counts

    batch = len(plan.typical)
    levels = [plan.typical_densest] * (iterations - 1) + [plan.n_max] + ([plan.n_max_upper] if upper else [])
    return [dense_counts(batch, level, min(plan.typical_sample, level)) for level in levels]


def densest_image(config, train_counts: Sequence[int] | None = None) -> int:
    """The most objects in one image of the training set, as a trainer that reads all its labels sees it
    (Ultralytics' ``DetectionTrainer.auto_batch``): the labels' own where given; else ``max_instances=``;
    else the densest image of the drawn epoch, the median over ``SEEDS`` draws."""
    if train_counts is not None and len(train_counts):
        return int(max(train_counts))
    if config.max_instances is not None:
        return int(config.max_instances)
    sigma = tail_sigma(config.tail)
    maxima = [int(epoch_images(np.random.default_rng(config.seed + 1000 * k), config.instances, sigma, config.images,
                               None).max(initial=0)) for k in range(SEEDS)]  # fmt: skip
    return int(np.median(maxima))
