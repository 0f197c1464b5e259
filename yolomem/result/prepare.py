"""What an estimate settles before it needs a traced run: the model and its loop, the epoch request,
the density plan from the labels. ``estimate_config`` and the run source (``yolomem.result.runs``) both ask."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig


@dataclass(frozen=True)
class Prepared:
    """A config made ready to trace: its model resolved (and the loop that trains it), whole epochs asked
    for, and the density plan of a dataset's labels."""

    config: EstimateConfig
    resolved: object  # yolomem.config.models.ResolvedModel
    request: object | None  # yolomem.result.epochs.EpochRequest, when data= or epochs>=2
    density: object | None  # yolomem.loops.density.DensityPlan from the labels (None: the loop plans)
    notes: tuple[str, ...]
    autobatch: object | None = None  # yolomem.loops.autobatch_card.AutoBatchPick, for batch=-1 or a fraction


def prepare(config: EstimateConfig) -> Prepared:
    """What ``estimate_config`` does before it needs a traced run."""
    from yolomem.loops import resolve_model
    from yolomem.loops.base import rank_batch
    from yolomem.loops.density import plan_for
    from yolomem.result.epochs import epoch_request

    resolved = resolve_model(config.model, config.framework)
    if resolved.framework != config.framework:  # e.g. a bare yolov4 selects the yolov5 loop (see resolved.note)
        config = config.with_changes(framework=resolved.framework)
    notes = list(config.notes)
    if resolved.note:
        notes.append(resolved.note)
    # settings the model and its trainer decide: each step may change the config, and says why
    for settle in (trainer_defaults, trained_imgsz, trained_precision, class_count):
        config, note = settle(config, resolved)
        if note:
            notes.append(note)
    resolved, note = keypoint_layout(config, resolved)
    if note:
        notes.append(note)
    if config.data and resolved.task != "classify":
        shipped = _shipped(config.data)  # None: a file here (or a URL), read as it is
        if shipped is not None:
            config, note = _without_labels(config, shipped)
            notes.append(note)
    elif config.data and _needs_download(config.data):
        config, note = _without_folder(config)
        notes.append(note)
    request = epoch_request(config, resolved)  # None unless data= or epochs>=2
    autobatch = None
    if config.autobatch is not None:  # the batch AutoBatch picks, from the labels the request has read
        config, autobatch, note = autobatch_on_the_card(config, resolved, request)
        notes.append(note)
        request = epoch_request(config, resolved, request.dataset if request is not None else None)
    density = None
    if request is not None:
        config = request.config
        notes.extend(request.notes)
    config, note = auto_optimizer_of_the_run(config, resolved, request)
    if note:
        notes.append(note)
    if request is not None:
        if request.dataset is not None:  # the traced batches come from the labels too
            density = plan_for(config, rank_batch(config), request.dataset.train.counts)
    return Prepared(config, resolved, request, density, tuple(notes), autobatch)


def auto_optimizer_of_the_run(config: EstimateConfig, resolved: ResolvedModel, request) -> tuple[EstimateConfig, str | None]:
    """``optimizer=auto`` as Ultralytics' trainer settles it where the run's length is known: it picks by
    ``ceil(train images / max(batch, nbs)) x epochs`` (``BaseTrainer._setup_train``; 8.4: ``_build_train_pipeline``), the images from the
    labels of ``data=`` or from ``images=``, the epochs from ``epochs=`` or the trainer's default. Otherwise
    it stays ``auto`` and the run assumes a short one (``runner.resolve_optimizer`` says so)."""
    if config.optimizer.lower() != "auto" or resolved.framework != "ultralytics" or config.step != "train":
        return config, None
    dataset = request.dataset if request is not None else None
    images = dataset.train.images if dataset is not None else config.images
    if not images:
        return config, None
    import math

    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolomem.loops.ultralytics.release import auto_optimizer_for, release

    epochs = config.epochs or int(DEFAULT_CFG_DICT["epochs"])
    iterations = math.ceil(images / max(config.batch, config.nbs)) * epochs
    picked = auto_optimizer_for(iterations)
    source = f"data={config.data}" if dataset is not None else "images="
    said = f"epochs={epochs}" if config.epochs else f"{epochs} epochs (the trainer's default; pass epochs=)"
    return config.with_changes(optimizer=picked), (
        f"optimizer=auto: {images} train images ({source}) at batch {config.batch} (nbs={config.nbs}) for {said} "
        f"is {iterations} iterations, for which ultralytics {release().version} picks {picked}")


def trainer_defaults(config: EstimateConfig, resolved: ResolvedModel) -> tuple[EstimateConfig, str | None]:
    """The keys the user left out (``config.left_to_trainer``) set as the model's trainer sets them
    (``TrainingLoop.trainer_defaults``): Ultralytics trains a classifier at imgsz 224 and a checkpoint at
    the imgsz it was trained at; the yolov5 repo's classify/train.py at 224 and batch 64."""
    if not config.left_to_trainer:
        return config, None
    from yolomem.loops import get_loop

    defaults = get_loop(resolved.framework).trainer_defaults(resolved)
    changes = {key: value for key, (value, _) in defaults.items()
               if key in config.left_to_trainer and value != getattr(config, key)}  # fmt: skip
    config = config.with_changes(**changes, left_to_trainer=())
    if not changes:
        return config, None
    words = " and ".join(f"{key}={value}" for key, value in changes.items())
    sources = "; ".join(dict.fromkeys(defaults[key][1] for key in changes))
    return config, f"{words} (not given): {sources}"


def trained_imgsz(config: EstimateConfig, resolved: ResolvedModel) -> tuple[EstimateConfig, str | None]:
    """``imgsz=`` as the model's trainer takes it (``TrainingLoop.trained_imgsz``): up to 8.0.103 Ultralytics
    trains a classifier asked for 640 at 224."""
    from yolomem.loops import get_loop

    imgsz, note = get_loop(resolved.framework).trained_imgsz(config, resolved)
    return (config.with_changes(imgsz=imgsz) if imgsz != config.imgsz else config), note


def trained_precision(config: EstimateConfig, resolved: ResolvedModel) -> tuple[EstimateConfig, str | None]:
    """``amp=`` as the model's trainer takes it on ``gpu=`` (``TrainingLoop.precision``): the yolov5 repo has
    no switch; Ultralytics takes bf16 from 8.4.129, and turns AMP off on some cards."""
    from yolomem.loops import get_loop

    precision, note = get_loop(resolved.framework).precision(config, resolved)
    return (config.with_changes(amp=precision) if precision != config.amp else config), note


def autobatch_on_the_card(config: EstimateConfig, resolved: ResolvedModel, request) -> tuple[EstimateConfig, object, str]:
    """``batch=-1`` or a fraction: the batch the training loop's AutoBatch picks on ``gpu=``
    (``TrainingLoop.pick_autobatch``: the installed Ultralytics' own, or the yolov5 repo's), with the objects
    per image from the labels ``request`` read (else ``yolomem.loops.density.densest_image``). Ultralytics
    runs AutoBatch on one GPU only: with more, its trainer sets its default batch instead."""
    from yolomem.errors import UserError
    from yolomem.loops import get_loop

    shown = f"batch={config.autobatch:g}"
    loop = get_loop(resolved.framework)
    loop.refuse_autobatch(config, resolved)
    if not (config.gpu or config.gpu_mem):
        raise UserError(f"{shown} asks for AutoBatch, which sizes the batch to the card: add gpu=NAME (e.g. "
                        "gpu=RTX-3090) or gpu_mem=<GiB>")  # fmt: skip
    if config.world_size > 1:
        from ultralytics.cfg import DEFAULT_CFG_DICT

        default = int(DEFAULT_CFG_DICT["batch"])
        return config.with_changes(batch=default), None, (
            f"{shown}: AutoBatch runs on one GPU only; with world_size={config.world_size} Ultralytics' trainer sets "
            f"batch={default}, its default")  # fmt: skip
    from dataclasses import asdict

    from yolomem.config.gpus import find_gpu
    from yolomem.loops.autobatch_card import AutoBatchPick
    from yolomem.loops.density import densest_image
    from yolomem.result.store_keys import family_key
    from yolomem.trace.store import active_store

    counts = request.dataset.train.counts if request is not None and request.dataset is not None else None
    images = len(counts) if counts is not None else config.images
    gpu, densest = find_gpu(config.gpu or "", config.gpu_mem), densest_image(config, counts)
    # kept in the trace cache, as traced runs are: it takes seconds (a forward and backward per probe)
    key = family_key(config, resolved) | {"probe": "autobatch", "requested": config.autobatch, "gpu": asdict(gpu),
                                          "densest_image": densest, "dataset_size": images}  # fmt: skip
    pick = active_store().kept_probe(
        key, lambda: loop.pick_autobatch(config, resolved, gpu, densest, images), AutoBatchPick)
    return config.with_changes(batch=pick.batch), pick, pick.note()


def _shipped(data: str) -> str | None:
    """The installed Ultralytics' own copy of the dataset YAML ``data=`` names, when it is not a file here
    (``yolomem.config.dataset.shipped_dataset``); None for a file here or a URL. A name it would not find
    is refused, as its trainer refuses it, and so is a copy without ``train`` and ``val`` keys."""
    import yaml

    from yolomem.config.dataset import check_split_keys, shipped_dataset, unknown_dataset

    if "://" in data or Path(data).expanduser().exists():
        return None
    found = shipped_dataset(data)
    if found is None:
        raise unknown_dataset(data)
    check_split_keys(yaml.safe_load(Path(found).read_text(encoding="utf-8")), data)
    return found


def _without_labels(config: EstimateConfig, shipped: str) -> tuple[EstimateConfig, str]:
    """``data=`` names a dataset Ultralytics would download (its copy of the YAML is ``shipped``): its
    published statistics stand in for its labels (``yolomem.loops.density.NAMED_DATASETS``): the mean
    objects per image, the densest image, the train images and the spread, each unless given
    (``instances=``, ``max_instances=``, ``images=``, ``tail=``)."""
    from yolomem.config.keys import DEFAULT_INSTANCES
    from yolomem.loops.density import named_dataset

    known = named_dataset(Path(shipped).name)
    head = f"data={config.data} is not a local file (Ultralytics would download it)"
    if known is None:
        return config.with_changes(data=None), f"{head}; objects per image from instances={config.instances:g} instead"
    published = {"instances": known.mean, "max_instances": known.densest, "images": known.images, "tail": known.tail}
    taken = {key: value for key, value in published.items() if value is not None
             and getattr(config, key) == (DEFAULT_INSTANCES if key == "instances" else None)}  # fmt: skip
    if not taken:
        return config.with_changes(data=None), f"{head}; objects per image from instances={config.instances:g} instead"
    words = ", ".join(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}" for key, value in taken.items())
    return config.with_changes(data=None, **taken), f"{head}; its published statistics stand in: {words} ({known.source})"


def _without_folder(config: EstimateConfig) -> tuple[EstimateConfig, str]:
    """A classification dataset Ultralytics would download (``imagenet10``, ``cifar10``): nothing to read."""
    return config.with_changes(data=None), (f"data={config.data} is not a local folder (Ultralytics would download "
                                            "it); the model's classes and images= stand in for it")  # fmt: skip


def keypoint_layout(config: EstimateConfig, resolved: ResolvedModel) -> tuple[ResolvedModel, str | None]:
    """A pose model trains with the keypoints of ``data=``: PoseTrainer builds it with
    ``data_kpt_shape=self.data["kpt_shape"]`` ("Overriding model.yaml kpt_shape=[17, 3] with ..."), which
    sizes the head and the keypoint loss (hand-keypoints: 21 x 3; tiger-pose: 12 x 2). A YAML without one
    stops that trainer (KeyError 'kpt_shape'). Without ``data=`` its default data (coco8-pose) is 17 x 3."""
    from dataclasses import replace

    from yolomem.config.dataset import dataset_kpt_shape

    if resolved.task != "pose" or not config.data or resolved.framework != "ultralytics":
        return resolved, None
    shape = dataset_kpt_shape(config.data)
    if shape is None:
        from yolomem.errors import UserError

        raise UserError(f"data={config.data} gives no kpt_shape, which a pose model's trainer reads (PoseTrainer: "
                        "KeyError 'kpt_shape'); add the keypoint layout, e.g. 'kpt_shape: [17, 3]'")  # fmt: skip
    if shape == tuple(resolved.kpt_shape):
        return resolved, None
    note = (f"kpt_shape={list(shape)}: the keypoints of data={config.data} (the trainer builds the model with "
            f"them; {resolved.name}.yaml says {list(resolved.kpt_shape)})")  # fmt: skip
    return replace(resolved, cfg={**resolved.cfg, "kpt_shape": list(shape)}), note


def _needs_download(data: str) -> bool:
    """A bare classification dataset name such as ``imagenet10`` that is not on disk: Ultralytics'
    ``check_cls_dataset`` tries to download any such name."""
    path = Path(data).expanduser()
    return not path.exists() and len(path.parts) == 1


def class_count(config: EstimateConfig, resolved: ResolvedModel) -> tuple[EstimateConfig, str | None]:
    """The trainer builds the model with the dataset's classes, not the model YAML's: ``nc=`` where given,
    else the class names of ``data=`` (a local YAML, or the one Ultralytics ships under that name), else
    those of the dataset Ultralytics trains the task on by default (``TASK2DATA``: coco8-pose.yaml for pose,
    1 class, where yolo11-pose.yaml says 80; dota8.yaml for obb, 15). Classification takes the class
    subfolders of a ``data=`` folder, else keeps the model's own (ImageNet's 1000, the published head): its
    default data is a folder to download, imagenet10. A local ``.pt`` checkpoint is no different: the trainer
    builds its ``model.yaml`` with the data's classes and loads the weights that still match
    (``DetectionTrainer.get_model``), and without ``data=`` it trains on ``TASK2DATA``, not the checkpoint's
    own data (``Model.train``)."""
    from yolomem.config.dataset import dataset_classes, read_classify_folder

    if config.single_cls and config.nc is None and resolved.task != "classify":
        one_class, note = single_class(resolved)
        if one_class:
            return config.with_changes(nc=1), note
        config, counted = class_count(config.with_changes(single_cls=False), resolved)
        return config.with_changes(single_cls=True), "; ".join(n for n in (note, counted) if n)
    if config.nc is None and resolved.task == "classify" and config.data and Path(config.data).expanduser().is_dir():
        # ClassificationTrainer builds (or reshapes) the head for the folder's classes
        classes = read_classify_folder(config.data).classes
        note = f"nc={classes}: the classes of data={config.data} (its train/ subfolders; the trainer builds the head with them)"
        return config.with_changes(nc=classes), note
    if config.nc is not None or resolved.task == "classify":  # its own nc
        return config, None
    data, where = config.data, f"data={config.data}"
    if not data and resolved.framework == "ultralytics":
        from yolomem.loops.ultralytics.release import default_data

        data = default_data().get(resolved.task)
        where = f"{data}, Ultralytics' default data for {resolved.task}"
    classes = dataset_classes(data) if data else None
    model_nc = resolved.cfg.get("nc")
    if classes is None or classes == model_nc:
        return config, None
    suffix = ".pt" if resolved.source == "checkpoint" else ".yaml"
    says = f"; {resolved.name}{suffix} says {model_nc}" if model_nc is not None else ""
    note = f"nc={classes}: the classes of {where} (the trainer builds the model with them{says})"
    if not config.data:
        note += "; pass nc= or data= for yours"
    return config.with_changes(nc=classes), note


def single_class(resolved: ResolvedModel) -> tuple[bool, str]:
    """Whether ``single_cls=True`` builds the model with one class, and the note that says so: the yolov5
    repo's train scripts do (``nc = 1 if single_cls else int(data_dict['nc'])``); Ultralytics from 8.3.79
    (``get_dataset`` sets ``nc`` to 1; ``release.single_cls_one_class``); before, it only relabels every
    object class 0 and builds the model with the data's classes."""
    if resolved.framework == "yolov5":
        return True, "single_cls=True: nc=1 (train.py builds the model with one class)"
    from yolomem.loops.ultralytics.release import release

    installed = release()
    if installed.single_cls_one_class:
        return True, f"single_cls=True: nc=1 (ultralytics {installed.version} builds the model with one class)"
    return False, (f"single_cls=True: ultralytics {installed.version} labels every object class 0 but builds the model "
                   "with the data's classes (one class from 8.3.79)")
