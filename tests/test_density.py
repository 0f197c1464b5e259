"""The object-density model against the published statistics it cites, and against Ultralytics' own
mosaic and affine transforms."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from yolomem.loops.batches import BOX_SIDE_RANGE, box_side_limit
from yolomem.loops.density import (
    DEFAULT_SIGMA,
    NAMED_SHAPES,
    Augmentation,
    image_counts,
    plan_density,
    sample_counts,
)

DATA = Path(__file__).parent / "data" / "dataset_object_density.csv"
# named shape -> (dataset, split, annotation prefix) of the full per-image table it was fitted to
TABLE_ROWS = {
    "SKU-110K": ("SKU-110K", "train", "boxes"),
    "GWHD-2021": ("Global Wheat Head 2021", "all", "boxes"),
    "KITTI": ("KITTI 2D object", "train", "boxes, 8 classes"),
    "Cityscapes": ("Cityscapes (fine)", "train", "instance polygons, 10"),
    "VOC": ("PASCAL VOC 2012 seg. subset", "trainval", "instance masks"),
    "VisDrone": ("VisDrone2019-DET", "train", "boxes, 10 classes"),
    "CrowdHuman": ("CrowdHuman", "train", "full-body"),
    "WIDER-FACE": ("WIDER FACE", "train", "face boxes"),
    "DOTA-v2": ("DOTA v2.0", "train", "OBB, 18 classes, full-size"),
}
QUANTILES = (("median", 0.5), ("p90", 0.9), ("p99", 0.99))


def _rows() -> list[dict]:
    with open(DATA, encoding="utf-8") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def _row(dataset: str, split: str, annotation: str) -> dict:
    return next(r for r in _rows() if r["dataset"] == dataset and r["split"] == split and r["annotation"].startswith(annotation))


def _quantiles(mean: float, sigma: float, qs, n: int = 400_000) -> np.ndarray:
    return np.quantile(image_counts(np.random.default_rng(0), mean, sigma, n), qs)


@pytest.mark.parametrize("name", sorted(TABLE_ROWS))
def test_named_shape_reproduces_the_published_quantiles(name):
    """Scaled to the dataset's mean, the fitted tail gives its median, p90 and p99 within 30 %."""
    row = _row(*TABLE_ROWS[name])
    mean = float(row["mean_per_image"])
    assert NAMED_SHAPES[name].mean == pytest.approx(mean, rel=0.01)
    model = _quantiles(mean, NAMED_SHAPES[name].sigma, [q for _, q in QUANTILES])
    for (column, _), predicted in zip(QUANTILES, model):
        published = float(row[column])
        assert abs(np.log1p(predicted) - np.log1p(published)) < np.log(1.3), (name, column, predicted, published)


def test_tail_matters_a_poisson_misses_the_published_p99():
    """What the shape adds: a plain Poisson of WIDER FACE's mean puts p99 near 22, the table says 172."""
    row = _row(*TABLE_ROWS["WIDER-FACE"])
    poisson_p99 = np.quantile(np.random.default_rng(0).poisson(float(row["mean_per_image"]), 100_000), 0.99)
    model_p99 = _quantiles(float(row["mean_per_image"]), NAMED_SHAPES["WIDER-FACE"].sigma, [0.99])[0]
    assert poisson_p99 < 0.2 * float(row["p99"]) < model_p99


def test_coco_shape_meets_its_cited_bounds():
    """COCO: median 4, 99 % of images within 1-33 objects, densest image between 90 and 128 (sources in
    the module docstring). The tail, which sets the densest batch, lands in those bands; the median
    comes out 6, not 4: one lognormal cannot hold COCO's many 1-2 object images and its thin tail."""
    sigma = NAMED_SHAPES["COCO"].sigma
    median, p99 = _quantiles(7.27, sigma, [0.5, 0.99])
    assert 4 <= median <= 6 and 28 <= p99 <= 38
    maxima = [image_counts(np.random.default_rng(k), 7.27, sigma, 118_287).max() for k in range(3)]
    assert 80 <= np.median(maxima) <= 170


def test_default_shape_is_the_median_of_the_named_datasets():
    assert DEFAULT_SIGMA == pytest.approx(float(np.median([s.sigma for s in NAMED_SHAPES.values()])))


def test_max_instances_caps_and_pins_the_densest_image():
    counts = image_counts(np.random.default_rng(1), 8.0, DEFAULT_SIGMA, 5000, cap=40)
    assert counts.max() == 40 and (counts == 40).sum() >= 1


def test_a_cap_at_the_mean_puts_that_many_in_every_image():
    """``instances=50 max_instances=50``: a capped spread would have a mean below 50; only 50 in every
    image says both."""
    counts = image_counts(np.random.default_rng(1), 50.0, DEFAULT_SIGMA, 2000, cap=50)
    assert set(counts.tolist()) == {50}


# -- training samples against Ultralytics' own transforms --------------------------------------------
def _ultralytics_samples(per_image: np.ndarray, mosaic: float, samples: int, imgsz: int = 160, scale: float = 0.5,
                         translate: float = 0.1) -> np.ndarray:  # fmt: skip
    from ultralytics.data.augment import Compose, Mosaic, RandomPerspective
    from ultralytics.utils.instance import Instances

    rng = np.random.default_rng(5)
    boxes = []
    for count in per_image:  # sides as SyntheticBatch draws them, centres uniform, inside the image
        low, high = BOX_SIDE_RANGE[0], float(box_side_limit(count))
        side = np.exp(np.log(low) + rng.uniform(size=(count, 2)) * (np.log(high) - np.log(low)))
        boxes.append(np.concatenate([rng.uniform(side / 2, 1 - side / 2), side], 1).astype(np.float32))

    class Images:  # what Mosaic asks of a dataset
        buffer, cache = list(range(len(per_image))), None

        def __len__(self):
            return len(per_image)

        def get_image_and_label(self, i):
            return {"im_file": str(i), "img": np.zeros((imgsz, imgsz, 3), np.uint8), "resized_shape": (imgsz, imgsz),
                    "ori_shape": (imgsz, imgsz), "cls": np.zeros((len(boxes[i]), 1), np.float32),
                    "instances": Instances(boxes[i].copy(), np.zeros((0, 1000, 2), np.float32), None,
                                           bbox_format="xywh", normalized=True)}  # fmt: skip

    images = Images()
    pipeline = Compose([Mosaic(images, imgsz=imgsz, p=mosaic, n=4),
                        RandomPerspective(translate=translate, scale=scale, size=(imgsz, imgsz))])  # fmt: skip
    random.seed(0)
    return np.array([len(pipeline(images.get_image_and_label(random.randrange(len(per_image))))["cls"])
                     for _ in range(samples)])  # fmt: skip


@pytest.mark.parametrize("mean, mosaic, scale, translate, imgsz", [
    (8.0, 1.0, 0.5, 0.1, 160), (60.0, 1.0, 0.5, 0.1, 160), (8.0, 0.0, 0.5, 0.1, 160),  # Ultralytics' defaults
    # the zoom of Ultralytics' recipes for the large models, at a training size: zoomed out 10x at 160 px,
    # RandomPerspective also drops boxes under 2 px a side, which the model leaves out
    (60.0, 1.0, 0.9, 0.1, 640),
    (60.0, 0.0, 0.0, 0.0, 160),  # every augmentation off: each sample is its image
])  # fmt: skip
def test_sample_counts_match_ultralytics_mosaic_and_affine(mean, mosaic, scale, translate, imgsz):
    """Objects per training sample: the model's mean and p90 within 15 % of Ultralytics' transforms
    (Mosaic n=4 and RandomPerspective) with the same hyperparameters on the same images."""
    per_image = image_counts(np.random.default_rng(2), mean, DEFAULT_SIGMA, 300)
    real = _ultralytics_samples(per_image, mosaic, 600, imgsz, scale, translate)
    rng = np.random.default_rng(3)
    model = sample_counts(rng, per_image, rng.integers(0, len(per_image), 20_000), Augmentation(mosaic, scale, translate))
    assert model.mean() == pytest.approx(real.mean(), rel=0.15)
    assert np.percentile(model, 90) == pytest.approx(np.percentile(real, 90), rel=0.15)


def test_mosaic_packs_more_objects_than_an_image():
    """A mosaic shows parts of 4 images: ~1.4x an image's objects on average, up to all 4 when zoomed out."""
    per_image = np.full(100, 10)
    rng = np.random.default_rng(0)
    samples = sample_counts(rng, per_image, rng.integers(0, 100, 5000), Augmentation())
    assert 1.2 * 10 < samples.mean() < 2.0 * 10 and samples.max() > 3 * 10


# -- the densest batch of an epoch --------------------------------------------------------------------
def test_densest_batch_is_far_above_a_typical_poisson_batch():
    """COCO-like data (7.3 per image), batch 16: the old model's densest image of one Poisson batch is
    about 12; epoch 1 of mosaics reaches several times that."""
    plan = plan_density(batch=16, instances=7.3)
    poisson = np.median(np.random.default_rng(0).poisson(7.3, (1000, 16)).max(axis=1))
    assert plan.n_max >= 3 * poisson
    assert max(plan.typical) < plan.n_max <= plan.n_max_upper
    assert plan.batches_per_epoch == 125  # DEFAULT_TRAIN_IMAGES / 16


def test_densest_batch_grows_with_the_epoch_and_the_tail():
    small = plan_density(batch=16, instances=7.3, images=128)
    large = plan_density(batch=16, instances=7.3, images=20_000)
    assert small.n_max < large.n_max


def test_dataset_counts_drive_the_plan_and_the_densest_image_shows():
    counts = [2] * 999 + [400]
    plan = plan_density(batch=16, instances=2.0, train_counts=counts)
    assert plan.images == 1000 and plan.batches_per_epoch == 63
    assert plan.n_max_upper >= 100  # the 400-object image is in some sample of every epoch
    sparse = plan_density(batch=16, instances=2.0, train_counts=[2] * 1000)
    assert sparse.n_max_upper < 40


def test_close_mosaic_turns_mosaic_off_for_short_runs():
    assert Augmentation.for_epoch(0, epochs=10).mosaic == 0.0  # epochs <= close_mosaic: closed from epoch 1
    assert Augmentation.for_epoch(0, epochs=2).mosaic == 0.0
    assert Augmentation.for_epoch(0, epochs=None).mosaic == 1.0  # Ultralytics' default 100 epochs
    assert Augmentation.for_epoch(0, epochs=50, close_mosaic=0).mosaic == 1.0
    assert [Augmentation.for_epoch(e, epochs=12).mosaic for e in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_before_8_4_157_a_run_shorter_than_close_mosaic_keeps_its_mosaic():
    """``epoch == self.epochs - self.args.close_mosaic``: negative for epochs < close_mosaic, never reached."""
    def mosaic(epoch, epochs):
        return Augmentation.for_epoch(epoch, epochs, closes_when_short=False).mosaic

    assert [mosaic(e, 2) for e in range(2)] == [1.0, 1.0]
    assert [mosaic(e, 10) for e in range(2)] == [0.0, 0.0]  # reached at epoch 0
    assert [mosaic(e, 12) for e in range(4)] == [1.0, 1.0, 0.0, 0.0]


def test_segment_masks_widen_past_255_objects():
    """polygons2masks_overlap: int32 index maps above 255 objects in an image, uint8 otherwise; the
    batch is cat-promoted to int32 when any image is that dense (4x the mask bytes)."""
    from yolomem.loops.batches import SyntheticBatch

    sparse = SyntheticBatch("segment", 2, 64, (255, 3)).as_dict()["masks"]
    dense = SyntheticBatch("segment", 2, 64, (256, 3)).as_dict()["masks"]
    assert sparse.dtype == torch.uint8 and dense.dtype == torch.int32


# Ultralytics' dataset YAML -> the reference row (dataset, split, annotation prefix) its mean comes from
NAMED_ROWS = {
    "coco.yaml": ("COCO 2017", "train2017", "boxes incl"),
    "VOC.yaml": ("PASCAL VOC 07+12 (Ultralytics VOC.yaml train)", "07 trainval + 12 trainval", "boxes"),
    "VisDrone.yaml": ("VisDrone2019-DET", "train", "boxes, 10 classes"),
    "SKU-110K.yaml": ("SKU-110K", "train", "boxes"),
    "kitti.yaml": ("KITTI 2D object", "train", "boxes, 8 classes"),
    "GlobalWheat2020.yaml": ("Global Wheat Head 2020", "all", "wheat"),
    "Argoverse.yaml": ("Argoverse-HD", "train+val", ""),
    "lvis.yaml": ("LVIS v1", "train", ""),
    "open-images-v7.yaml": ("Open Images V7", "all boxed", ""),
}


def test_named_datasets_are_shipped_yamls_with_their_published_means():
    """``data=VisDrone.yaml`` without the dataset on disk: its published mean stands in for its labels.
    Every name is a dataset YAML of the installed Ultralytics, and every mean is its reference row's."""
    import ultralytics

    from yolomem.loops.density import NAMED_DATASETS

    shipped = {p.name.lower() for p in (Path(ultralytics.__file__).parent / "cfg" / "datasets").glob("*.yaml")}
    assert set(NAMED_DATASETS) <= shipped, set(NAMED_DATASETS) - shipped
    for name, row in NAMED_ROWS.items():
        assert NAMED_DATASETS[name.lower()].mean == pytest.approx(float(_row(*row)["mean_per_image"]), abs=0.01), name


def test_a_named_dataset_not_on_disk_sets_the_objects_per_image():
    from yolomem.config.settings import EstimateConfig
    from yolomem.result.prepare import prepare

    named = prepare(EstimateConfig(model="yolov8n.yaml", data="VisDrone.yaml"))
    assert named.config.instances == 53.27 and named.config.data is None
    assert (named.config.max_instances, named.config.images, named.config.tail) == (902, 6471, "VisDrone")
    assert any("published statistics stand in: instances=53.27, max_instances=902, images=6471, tail=VisDrone "
               "(VisDrone2019-DET" in note for note in named.notes)
    asked = prepare(EstimateConfig(model="yolov8n.yaml", data="VisDrone.yaml", instances=20, images=500))
    assert (asked.config.instances, asked.config.images, asked.config.max_instances) == (20, 500, 902)  # the user's win
    unlisted = prepare(EstimateConfig(model="yolov8n.yaml", data="coco8.yaml"))  # shipped, no published statistics here
    assert unlisted.config.instances == 8 and any("from instances=8 instead" in note for note in unlisted.notes)


def test_named_datasets_take_their_images_densest_image_and_spread_from_the_reference():
    from yolomem.loops.density import NAMED_DATASETS

    for name in ("VisDrone.yaml", "SKU-110K.yaml"):  # the rows with both train images and the densest image
        known, published = NAMED_DATASETS[name.lower()], _row(*NAMED_ROWS[name])
        assert (known.images, known.densest) == (int(published["images"]), int(published["max"])), name
    assert NAMED_DATASETS["kitti.yaml"].densest == int(_row("KITTI 2D object", "train", "boxes, 8 classes")["max"])
    assert {d.tail for d in NAMED_DATASETS.values()} - {None} <= set(NAMED_SHAPES)


def test_the_tail_key_names_every_fitted_shape():
    from yolomem.config.keys import TAILS

    assert TAILS == tuple(NAMED_SHAPES)


def test_a_named_tail_and_a_known_epoch_hold_for_the_upper_figure():
    """tail=WIDER-FACE (faces: a long tail) is far denser than the default spread at the same mean; an epoch
    of known length is not lengthened for the upper figure, as an unknown one is."""
    default = plan_density(batch=16, instances=12.4)
    faces = plan_density(batch=16, instances=12.4, tail="wider-face")
    assert faces.n_max > 2 * default.n_max and faces.n_max_upper > default.n_max_upper
    assert "spread as WIDER-FACE (sigma 1.70)" in faces.source
    known = plan_density(batch=16, instances=12.4, images=2000)
    assert known.n_max_upper < default.n_max_upper  # the default's upper epoch has UPPER_TRAIN_IMAGES images


def test_a_longer_epoch_than_is_drawn_says_so():
    from yolomem.loops.density import MAX_DRAWN_IMAGES

    plan = plan_density(batch=64, instances=3.0, images=3 * MAX_DRAWN_IMAGES)
    assert plan.images == 3 * MAX_DRAWN_IMAGES and plan.batches_per_epoch == -(-3 * MAX_DRAWN_IMAGES // 64)
    assert f"of {MAX_DRAWN_IMAGES:,} of them" in plan.source


def test_plans_at_other_batches_reuse_the_draws_and_equal_fresh_ones():
    from yolomem.loops import density

    warm = [plan_density(batch=b, instances=6.0, images=3000) for b in (8, 16, 32)]
    density._drawn_samples.cache_clear()
    assert plan_density(batch=16, instances=6.0, images=3000) == warm[1]


def test_a_plan_is_read_back_from_the_cache_equal_and_a_corrupt_one_is_drawn_again(tmp_path, monkeypatch):
    from yolomem.config.settings import EstimateConfig
    from yolomem.loops import density
    from yolomem.trace import store

    monkeypatch.setattr(store, "_ACTIVE", store.TraceStore(tmp_path))
    config = EstimateConfig.from_mapping({"model": "yolov8n.yaml", "instances": 5.0, "images": 2000})
    density._plan_once.cache_clear()
    drawn = density.plan_for(config, 16)
    files = list(tmp_path.rglob("*.run"))
    assert len(files) == 1

    def no_draws(**_):
        raise AssertionError("drawn again")

    density._plan_once.cache_clear()
    monkeypatch.setattr(density, "plan_density", no_draws)
    assert density.plan_for(config, 16) == drawn  # read back, not drawn

    files[0].write_bytes(files[0].read_bytes()[:-8])  # cut short: not trusted
    density._plan_once.cache_clear()
    with pytest.raises(AssertionError, match="drawn again"):
        density.plan_for(config, 16)
    monkeypatch.setattr(density, "plan_density", plan_density)
    density._plan_once.cache_clear()
    assert density.plan_for(config, 16) == drawn  # drawn again, and stored whole again
    monkeypatch.setattr(density, "plan_density", no_draws)
    density._plan_once.cache_clear()
    assert density.plan_for(config, 16) == drawn
    density._plan_once.cache_clear()  # later tests draw with the session's cache


