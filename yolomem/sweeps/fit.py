"""The largest batch (or image size) that trains on a given GPU.

"Fits" is ``yolomem.result.fits``, as everywhere: the config's upper figure (the full requirement with
each stated uncertainty at its high end, ``Estimate.peak_reserved_upper_bytes``) within the card's memory
minus the CUDA context, minus the safety margin.

The safety margin (``margin=``, a fraction of the card's memory after the CUDA context; default 0.10)
holds back room for what the trace does not see: cuDNN/cuBLAS workspaces, the validation pass (batch
2x the training batch) and other processes on the card. ``margin=0`` asks for the card's whole usable
memory. Cache growth in epochs 2+ (the reference notes report GPU_mem 20-60% above epoch 1 for some
runs) is more than a margin holds: where the trainer keeps its cache between epochs on the card, a
config without ``epochs=`` is judged over the trainer's whole default run (``Prober.judged``,
``yolomem.result.fits.judged_run``).

The search. Peak memory is close to linear in the batch (activations, assigner temporaries and input
grow with it; weights, gradients, optimizer state and the EMA do not), and close to linear in
imgsz**2. Two runs give that line and a predicted answer; runs then confirm it: stepping from the
prediction until the fit flips, then bisecting, so the answer ``N`` is checked to fit and ``N + 1``
(one more stride for imgsz) checked not to, under the same simulation. Allocator rounding makes
memory a staircase, not a line, so the confirmation is what decides. For the batch, the two runs of
the line are traced and every later one is derived from them (``yolomem.result.runs``): the same
event stream a trace gives, in a fraction of the time. Where the stream repeats a block per image
(segmentation's mask loss, whole epochs' validation) the prediction is traced too, and the rest
derive from the three. From the cache, none is traced. Each imgsz is traced (sizes there are not affine).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from yolomem.config.keys import DEFAULT_MARGIN
from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError
from yolomem.result.estimate import Estimate, estimate_config, estimate_figures
from yolomem.result.fits import Budget, fits, judged_run
from yolomem.config.gpus import GiB, find_gpu
MAX_BATCH = 1024  # the search stops here; a larger batch is rarely useful and never needed to fit a card
MAX_IMGSZ = 4096
# the two batches whose traces draw the line; from batch 3 on, the traced iterations step the optimizer
# alike (nbs=64 accumulates up to 21 batches), so these two and the prediction are one family of runs
# and every later probe is derived from them (yolomem.result.runs)
BATCH_BRACKET = (4, 16)
IMGSZ_BRACKET = (320, 640)

DATA_PLACEHOLDER = "path/to/data.yaml"  # the yolo train line's data= when the user gave none: never a dataset we chose
FOLDER_PLACEHOLDER = "path/to/dataset"  # ... for a classifier, whose data is a folder of train/ and val/ class folders
# the yolov5 repo's script per task; each takes the same --img, --batch-size, --data and --device
YOLOV5_SCRIPTS = {"detect": "train.py", "segment": "segment/train.py", "classify": "classify/train.py"}
Progress = Callable[[str], None]

__all__ = ["DEFAULT_MARGIN", "Budget", "FitResult", "NothingFits", "Probe", "largest_batch", "largest_imgsz", "Prober"]


class NothingFits(UserError):
    """Even the smallest batch (or image size) does not fit."""


@dataclass(frozen=True)
class Probe:
    """One traced config and its verdict."""

    batch: int
    imgsz: int
    peak_reserved_bytes: int  # the upper figure's peak (yolomem.result.upper), also when the card would run out
    fits: bool
    seconds: float


@dataclass(frozen=True)
class FitResult:
    """The answer of ``largest_batch`` / ``largest_imgsz``."""

    solve: str  # "batch" | "imgsz"
    model: str  # as the user named it, for the ``yolo train`` line
    gpu: str
    gpu_total_bytes: int
    context_bytes: int  # the upper figure's CUDA context (the budget's)
    margin: float
    capacity_bytes: int  # what the simulation let the caching allocator reserve
    max_batch: int
    imgsz: int
    stride: int | None  # imgsz solves step in multiples of it
    nbs: int
    config: EstimateConfig  # the config at the answer
    estimate_at_max: Estimate = field(repr=False)
    predicted: int  # the two-trace line's answer (batch, or imgsz)
    probes: tuple[Probe, ...]
    at_search_cap: bool  # the answer is MAX_BATCH / MAX_IMGSZ: more would fit
    whole_dataset: bool = False  # the answer is data='s limit: every larger batch trains the same run (fits too)
    autobatch: Estimate | None = field(default=None, repr=False)  # batch=-1: the run at AutoBatch's pick on this card

    @property
    def accumulate(self) -> int:
        """Ultralytics' gradient accumulation for this batch: max(round(nbs / batch), 1)."""
        return max(round(self.nbs / self.max_batch), 1)

    @property
    def train_command(self) -> str:
        """The command that trains the answer: ``yolo train``, or the yolov5 repo's ``train.py``."""
        return train_command(self.config, self.model)

    def to_json(self) -> dict:
        return {
            "solve": self.solve,
            "model": self.model,
            "gpu": self.gpu,
            "gpu_total_bytes": self.gpu_total_bytes,
            "context_upper_bytes": self.context_bytes,  # the verdicts' CUDA context, as estimate --json's upper.context_upper_bytes
            "margin": self.margin,
            "capacity_bytes": self.capacity_bytes,
            "max_batch": self.max_batch,
            "imgsz": self.imgsz,
            "max_imgsz": self.imgsz if self.solve == "imgsz" else None,
            "stride": self.stride,
            "nbs": self.nbs,
            "accumulate": self.accumulate,
            "predicted": self.predicted,
            "at_search_cap": self.at_search_cap,
            "whole_dataset": self.whole_dataset,
            "probes": [
                {"batch": p.batch, "imgsz": p.imgsz, "peak_reserved_upper_bytes": p.peak_reserved_bytes, "fits": p.fits}
                for p in self.probes
            ],
            "train_command": self.train_command,
            "yolo_train_command": self.train_command,  # the name before yolov5-repo models had their own line
            "estimate_at_max": self.estimate_at_max.to_json(),
            "autobatch": self.autobatch.to_json() if self.autobatch else None,
        }


def beside_autobatch(result: FitResult, config: EstimateConfig) -> FitResult:
    """``fit batch=-1``: the run Ultralytics' AutoBatch picks on the same card, judged with the same margin,
    beside the largest batch that fits (``yolomem.loops.ultralytics.autobatch``)."""
    return replace(result, autobatch=estimate_config(config.with_changes(margin=result.margin)))


def _data_placeholder(task: str) -> str:
    return FOLDER_PLACEHOLDER if task == "classify" else DATA_PLACEHOLDER


def yolo_train_command(config: EstimateConfig, model: str | None = None, task: str = "detect") -> str:
    """The ``yolo train`` line that runs ``config``; settings Ultralytics has no switch for become
    an environment variable (allocator) or a note (checkpointing needs a callback)."""
    if config.resume:  # the checkpoint holds the rest; releases that take overrides let it change batch and imgsz
        from yolomem.loops.ultralytics.resume import takes_overrides

        line = _with_allocator(config, f"yolo train resume model={config.resume} batch={config.batch} imgsz={config.imgsz}")
        return line if takes_overrides() else line + "  # this release resumes with the checkpoint's batch and imgsz"
    words = ["yolo", "train", f"model={model or config.model}", f"data={config.data or _data_placeholder(task)}",
             f"batch={config.batch}", f"imgsz={config.imgsz}"]  # fmt: skip
    if config.epochs:  # the run's length: the mosaic's close and optimizer=auto's pick follow it
        words.append(f"epochs={config.epochs}")
    if config.single_cls:
        words.append("single_cls=True")
    amp = amp_override(config.amp)
    if amp:
        words.append(amp)
    if config.optimizer != "auto":
        words.append(f"optimizer={config.optimizer}")
    if config.nbs != 64:
        words.append(f"nbs={config.nbs}")
    if config.freeze:
        first = _first_layers(config.freeze)
        words.append(f"freeze={first}" if first is not None else f"freeze=[{','.join(map(str, config.freeze))}]")
    if config.world_size > 1:
        words.append(f"device={_devices(config.world_size)}")
    line = _with_allocator(config, " ".join(words))
    if config.checkpoint:
        line += "  # plus model.add_callback('on_pretrain_routine_end', yolomem.loops.checkpointing.checkpoint_callback) in Python"
    if config.amp == "bf16" and not amp:  # before 8.4.129 Ultralytics reads amp as a bool
        line += "  # bf16: yolo train has no switch for it before ultralytics 8.4.129; autocast to bfloat16 in a loop of your own"
    if config.world_size > 1:  # yolo train starts the DDP processes itself
        line += f"   # or: torchrun --nproc_per_node {config.world_size} train.py"
    return line


def amp_override(amp: str) -> str | None:
    """The ``yolo train`` word for ``amp``: ``amp=False`` for fp32, ``amp=bf16`` where the installed trainer
    takes it (8.4.129+, ``release.trains_bf16``); None for fp16 (the default) and for bf16 before."""
    if amp == "fp32":
        return "amp=False"
    if amp != "bf16":
        return None
    from yolomem.loops.ultralytics.release import release

    return "amp=bf16" if release().trains_bf16 else None


def _first_layers(freeze: tuple[int, ...]) -> int | None:
    """N when ``freeze`` is layers 0..N-1 (both trainers' ``freeze=N``), else None (a list of layers)."""
    return len(freeze) if freeze == tuple(range(len(freeze))) else None


def _devices(world_size: int) -> str:
    return ",".join(str(i) for i in range(world_size))


def _with_allocator(config: EstimateConfig, line: str) -> str:
    """``line`` run with the config's allocator settings (``PYTORCH_CUDA_ALLOC_CONF``), if any."""
    return f"PYTORCH_CUDA_ALLOC_CONF={config.alloc_conf} {line}" if config.alloc_conf else line


def train_command(config: EstimateConfig, model: str | None = None) -> str:
    """The command that trains ``config``: the yolov5 repo's ``train.py`` for the models its loop trains
    (``framework=yolov5``), ``yolo train`` for the rest."""
    from yolomem.loops import resolve_model

    resolved = resolve_model(config.model, config.framework)
    if resolved.framework == "yolov5":
        return yolov5_train_command(config, model, darknet=is_darknet(resolved), task=resolved.task)
    return yolo_train_command(config, model, resolved.task)


def is_darknet(resolved: ResolvedModel) -> bool:
    """Whether an original design is built from a darknet ``.cfg`` (YOLOv3/v4), not a yolov5 YAML."""
    from yolomem.loops.yolov5.runner import original_of

    return original_of(resolved).kind == "darknet"


def yolov5_cfg(name: str, darknet: bool) -> tuple[str, str]:
    """train.py's ``--cfg`` for an original design, and a note where the yolov5 repo cannot take it."""
    stem = name.removesuffix(".yaml").removesuffix(".yml").removesuffix(".cfg")
    if darknet:
        return f"{stem}.cfg", (f"{stem} is a darknet .cfg design: the yolov5 repo's train.py reads YAMLs only; a "
                               f"yolov5-style trainer that reads .cfg files (e.g. WongKinYiu/PyTorch_YOLOv4) takes "
                               f"--cfg {stem}.cfg, with flags of its own")  # fmt: skip
    return f"{stem}.yaml", ""


YOLOV5_OPTIMIZERS = {"SGD", "Adam", "AdamW"}  # train.py's --optimizer choices
CLASSIFY_OPTIMIZERS = {"SGD", "Adam", "AdamW", "RMSProp"}  # classify/train.py's


def yolov5_model_words(config: EstimateConfig, model: str | None, darknet: bool, task: str) -> tuple[list[str], str]:
    """The yolov5 repo's script for ``task`` and how it takes the model, and a note where it cannot: train.py
    and segment/train.py build ``--cfg`` from scratch (``--weights ''``) or fine-tune a checkpoint
    (``--weights yolov5s.pt``); classify/train.py takes
    ``--model yolov5s-cls.pt`` (it has no ``--cfg``)."""
    if task == "classify":
        stem = (model or config.model).removesuffix(".yaml").removesuffix(".yml").removesuffix(".pt")
        return [YOLOV5_SCRIPTS[task], "--model", f"{stem}.pt"], ""
    name = model or config.model
    if name.endswith(".pt"):  # a checkpoint: the repo fine-tunes from --weights, with the design it holds
        return [YOLOV5_SCRIPTS.get(task, "train.py"), "--weights", name], ""
    cfg, cfg_note = yolov5_cfg(name, darknet)
    return [YOLOV5_SCRIPTS.get(task, "train.py"), "--cfg", cfg, "--weights", "''"], cfg_note


def yolov5_train_command(config: EstimateConfig, model: str | None = None, darknet: bool = False,
                         task: str = "detect") -> str:
    """The yolov5 repo's ``python train.py`` line for ``config`` (``segment/train.py``, ``classify/train.py``
    for those tasks); what the script has no flag for becomes a note (it trains with AMP whenever its AMP
    check passes, and train.py fixes nbs at 64). ``darknet``: a YOLOv3/v4 design from a darknet ``.cfg``
    (``is_darknet``)."""
    words, cfg_note = yolov5_model_words(config, model, darknet, task)
    words += ["--data", config.data or _data_placeholder(task), "--img", str(config.imgsz), "--batch-size",
              str(config.batch)]  # fmt: skip
    if config.epochs:
        words += ["--epochs", str(config.epochs)]
    classify = task == "classify"
    spelled = {name.lower(): name for name in (CLASSIFY_OPTIMIZERS if classify else YOLOV5_OPTIMIZERS)}
    if config.optimizer.lower() in spelled:  # as the script spells it: RMSprop is classify/train.py's RMSProp
        words += ["--optimizer", spelled[config.optimizer.lower()]]
    if config.single_cls and not classify:
        words.append("--single-cls")
    if config.freeze and not classify:
        first = _first_layers(config.freeze)
        words += ["--freeze", *([str(first)] if first is not None else map(str, config.freeze))]
    if config.world_size > 1:
        words = ["-m", "torch.distributed.run", "--nproc_per_node", str(config.world_size), *words,
                 "--device", _devices(config.world_size)]  # fmt: skip
    line = _with_allocator(config, " ".join(["python", *words]))
    notes = [cfg_note] if cfg_note else []
    if config.amp != "fp16":
        notes.append(f"{'FP32' if config.amp == 'fp32' else 'bf16'}: train.py has no switch for it (it trains with "
                     "fp16 AMP whenever its AMP check passes); change its autocast in a copy of train.py")  # fmt: skip
    if config.nbs != 64 and not classify:  # classify/train.py steps every batch: no nbs
        notes.append(f"nbs={config.nbs}: train.py fixes nbs = 64; edit that line")
    if config.freeze and classify:
        notes.append("freeze: classify/train.py has no --freeze; set requires_grad in a copy of it")
    if config.checkpoint:
        notes.append("checkpointing: wrap the model's layers in torch.utils.checkpoint in a copy of train.py")
    return line + "".join(f"  # {note}" for note in notes)


class Prober:
    """Judges configs against a budget (``yolomem.result.fits``), tracing them on demand, and remembers them.

    ``probe`` gives a config's verdict alone (the upper figure, ``yolomem.result.estimate.estimate_figures``);
    ``run`` its whole estimate too. Share one ``Prober`` between searches (the strategy ladder does) so
    that no config is traced or judged twice.
    """

    def __init__(self, budget: Budget, progress: Progress | None = None):
        self.budget = budget
        self.progress = progress
        self._probes: dict[EstimateConfig, Probe] = {}
        self._estimates: dict[EstimateConfig, Estimate] = {}

    def probe(self, config: EstimateConfig) -> Probe:
        key = config.with_changes(notes=())
        if key not in self._probes:
            if self.progress:
                self.progress(f"tracing {config.model} batch={config.batch} imgsz={config.imgsz}")
            started = time.perf_counter()
            imgsz, peak = verdict_figures(self.judged(config))
            self._probes[key] = Probe(config.batch, imgsz, peak, fits(peak, self.budget), time.perf_counter() - started)
        return self._probes[key]

    def run(self, config: EstimateConfig) -> tuple[Estimate, Probe]:
        key = config.with_changes(notes=())
        probe = self.probe(config)
        if key not in self._estimates:
            # from the probe's figures: estimate_figures keeps the last ones (yolomem.result.estimate)
            self._estimates[key] = estimate_config(self.judged(config))
        return self._estimates[key], probe

    def prefetch(self, configs: list[EstimateConfig], *, cold: bool = True) -> None:
        """The verdicts of ``configs``, as this prober judges them, found side by side before a sweep asks
        for them one by one (``yolomem.sweeps.prefetch``; ``cold=False``: only with the command's warm
        workers). A worker's verdict figures come back with its runs (``remember_verdict``): this process
        would otherwise replay its run again for them (whole epochs: seconds a config)."""
        from yolomem.sweeps.prefetch import prefetch

        prefetch([self.judged(c) for c in configs], cold=cold, judge=verdict_figures, remember=remember_verdict)

    def judged(self, config: EstimateConfig) -> EstimateConfig:
        """``config`` as this prober estimates it: with the budget's margin, over the run the verdict judges
        (``yolomem.result.fits.judged_run``: the trainer's whole default run where it keeps its cache
        between epochs)."""
        return judged_run(config.with_changes(margin=self.budget.margin), self.budget)

    @property
    def probes(self) -> tuple[Probe, ...]:
        return tuple(self._probes.values())

    def verdicts(self) -> dict[EstimateConfig, Probe]:
        """Every config judged so far and its verdict, for ``adopt`` (another process's prober)."""
        return dict(self._probes)

    def adopt(self, verdicts: dict[EstimateConfig, Probe]) -> None:
        """Take the ``verdicts`` of a prober with the same budget (on the same runs: the same figures)."""
        for key, probe in verdicts.items():
            self._probes.setdefault(key, probe)


def verdict_figures(config: EstimateConfig) -> tuple[int, int]:
    """What a verdict needs of ``config``'s estimate: its imgsz as trained, and the upper figure's peak
    reserved bytes (``yolomem.result.upper``: 9 runs in 10 stay under it). Read back from the trace
    cache when an earlier command found them: a sweep asked again (``fit --explain`` after ``fit``, the
    same question on another day) derives and replays nothing (yolov8x's ladder from the cache: 9.1 -> 4.6 s)."""
    from yolomem.trace.store import active_store

    def found() -> tuple[int, int]:
        figures = estimate_figures(config)
        return figures.run.imgsz, figures.upper.peak_reserved_bytes

    key = _verdict_key(config)
    return found() if key is None else active_store().kept_probe(key, found, tuple)


def remember_verdict(config: EstimateConfig, figures: tuple[int, int]) -> None:
    """``verdict_figures(config)`` as another process found them (a prefetch worker), for this one."""
    from yolomem.trace.store import active_store

    key = _verdict_key(config)
    if key is not None:
        active_store().remember_probe(key, figures)


def _verdict_key(config: EstimateConfig) -> dict | None:
    """Everything a config's figures depend on: the code, the model and every setting; None where they
    also depend on files the key does not hold (a dataset's labels, ``data=``)."""
    from yolomem.loops import resolve_model
    from yolomem.result.store_keys import model_key
    from yolomem.trace.store import code_key

    if config.data:
        return None
    resolved = resolve_model(config.model, config.framework)
    return code_key() | {"probe": "verdict figures", "model": model_key(resolved), "config": config.to_json()}


def resolve_config(config_or_model, gpu: str | None, gpu_mem: float | None, settings: dict) -> EstimateConfig:
    if isinstance(config_or_model, EstimateConfig):
        config = config_or_model.with_changes(**settings) if settings else config_or_model
    else:
        config = EstimateConfig.from_mapping({"model": config_or_model, **settings})
    if gpu is not None or gpu_mem is not None:
        config = config.with_changes(gpu=gpu if gpu is not None else config.gpu, gpu_mem=gpu_mem)
    if not (config.gpu or config.gpu_mem):
        raise UserError("fitting needs a GPU: add gpu=NAME (e.g. gpu=RTX-3090) or gpu_mem=<GiB>")
    return config


def make_budget(config: EstimateConfig, margin: float | None = None) -> Budget:
    """The card of ``config`` with ``margin`` (the config's own margin when None)."""
    return Budget(find_gpu(config.gpu, config.gpu_mem), float(config.margin if margin is None else margin))


_STRIDES: dict[str, int] = {}  # canonical key -> stride, for this process


def model_stride(config: EstimateConfig) -> int:
    """The largest stride of the model (imgsz must be a multiple of it); at least 32 as in Ultralytics.

    Found by building the model, once per model and ``nc`` in a process, and read back from the trace
    cache (``yolomem.trace.store``) when an earlier command found it: a build costs about a second
    (yolov8x), and ``fit --explain`` from the cache needs nothing else of the model."""
    from yolomem.loops import get_loop, resolve_model
    from yolomem.result.store_keys import model_key
    from yolomem.trace.store import active_store, canonical, code_key

    resolved = resolve_model(config.model, config.framework)
    key = {"probe": "model stride", "model": model_key(resolved), "nc": config.nc}
    memo = canonical(key)
    if memo not in _STRIDES:
        _STRIDES[memo] = active_store().kept_probe(code_key() | key,
                                                   lambda: get_loop(resolved.framework).stride(resolved, config.nc), int)  # fmt: skip
    return _STRIDES[memo]


def largest_batch(
    config_or_model: EstimateConfig | str,
    gpu: str | None = None,
    *,
    gpu_mem: float | None = None,
    margin: float | None = None,
    progress: Progress | None = None,
    prober: Prober | None = None,
    bracket: tuple[int, int] = BATCH_BRACKET,
    **settings,
) -> FitResult:
    """The largest total batch that fits ``gpu`` at the config's imgsz (multiples of world_size).

    Raises ``NothingFits`` (a ``UserError``) when one image per rank does not fit.
    """
    config = resolve_config(config_or_model, gpu, gpu_mem, settings)
    prober = prober or Prober(make_budget(config, margin), progress)
    batches = dataset_batches(config)
    cap = _batch_cap(config, batches)
    prober.prefetch([config.with_changes(batch=u * config.world_size) for u in _first_batch_units(config, bracket, cap)], cold=False)
    answer, predicted, at_cap = search_batch(config, prober, bracket, cap)
    final = config.with_changes(batch=answer)
    estimate, best = prober.run(final)
    whole = batches is not None and answer >= batches.limit
    if whole:  # said with the estimate's notes, which every view of the answer prints
        estimate = replace(estimate, notes=(*estimate.notes, _whole_dataset_note(config, answer, batches)))
    return FitResult(
        solve="batch", model=config.model, **_budget_fields(prober.budget), max_batch=final.batch, imgsz=best.imgsz,
        stride=None, nbs=config.nbs, config=final.with_changes(imgsz=best.imgsz), estimate_at_max=estimate,
        predicted=predicted, probes=_for(prober, config), at_search_cap=at_cap and not whole,
        whole_dataset=whole,
    )  # fmt: skip


def dataset_batches(config: EstimateConfig):
    """The batches ``data=``'s size allows (``yolomem.result.epochs.DatasetBatches``), for a config whose
    dataset is read; None otherwise. Ultralytics cuts a batch to the dataset's size (``min(batch,
    len(dataset))``), so past ``limit`` a larger batch changes nothing, and fits alike."""
    if not config.data:
        return None
    from yolomem.result.prepare import prepare

    request = prepare(config).request
    return request.batches if request is not None else None


def _batch_cap(config: EstimateConfig, batches=None) -> int:
    """The most batch units (per rank) a batch search probes: ``MAX_BATCH``, or fewer where ``data=`` makes
    every larger batch the same run (``dataset_batches``)."""
    cap = MAX_BATCH // config.world_size
    return cap if batches is None else max(min(cap, batches.limit // config.world_size), 1)


def _whole_dataset_note(config: EstimateConfig, answer: int, batches) -> str:
    val = ""
    if batches.val_images and answer > math.ceil(batches.train_images / batches.world_size) * batches.world_size:
        val = f" and {batches.val_images} val images (validated in batches of {batches.val_images} from batch={answer} on)"
    return (f"every batch from {answer} up fits, as the same run: data={config.data} has {batches.train_images} train "
            f"images{val}, and the dataloader cuts a larger batch to them (min(batch, len(dataset)), Ultralytics' "
            f"build_dataloader), so batch={answer} already trains the whole dataset in one batch")  # fmt: skip


def search_batch(config: EstimateConfig, prober: Prober, bracket: tuple[int, int] = BATCH_BRACKET,
                 cap: int | None = None) -> tuple[int, int, bool]:  # fmt: skip
    """``largest_batch``'s search alone, on probes (no estimate of the answer): (the largest total batch
    that fits, the line's prediction, whether the answer is the search's cap: more fits). ``cap``: the
    most batch units per rank to probe (default ``_batch_cap``). Raises ``NothingFits``."""
    ranks = config.world_size
    cap = cap if cap is not None else _batch_cap(config, dataset_batches(config))

    def probe(unit: int) -> Probe:
        return prober.probe(config.with_changes(batch=unit * ranks))

    answer, predicted, at_cap = _solve(
        prober, probe, _LINEAR, batch_units(bracket, ranks), cap,
        lambda one: f"{config.model} at imgsz={one.imgsz} does not fit {_card(prober.budget)} even at batch {ranks}",
        "add --explain to see what each memory-saving step buys",
        lambda units: prober.prefetch([config.with_changes(batch=u * ranks) for u in units], cold=False),
    )  # fmt: skip
    return answer * ranks, predicted * ranks, at_cap


def largest_imgsz(
    config_or_model: EstimateConfig | str,
    gpu: str | None = None,
    *,
    gpu_mem: float | None = None,
    margin: float | None = None,
    progress: Progress | None = None,
    prober: Prober | None = None,
    bracket: tuple[int, int] = IMGSZ_BRACKET,
    **settings,
) -> FitResult:
    """The largest imgsz, a multiple of the model's stride, that fits ``gpu`` at the config's batch."""
    config = resolve_config(config_or_model, gpu, gpu_mem, settings)
    prober = prober or Prober(make_budget(config, margin), progress)
    stride = model_stride(config)
    units = [max(1, size // stride) for size in bracket]
    prober.prefetch([config.with_changes(imgsz=u * stride) for u in _first_units(*units, MAX_IMGSZ // stride)], cold=False)

    def probe(unit: int) -> Probe:
        return probe_as_trained(prober, config, unit * stride, stride)

    answer, predicted, at_cap = _solve(
        prober, probe, _SQUARE, units, MAX_IMGSZ // stride,
        lambda _smallest: f"{config.model} at batch={config.batch} does not fit {_card(prober.budget)} even at imgsz={stride}",
        "try a smaller batch",
        lambda units: prober.prefetch([config.with_changes(imgsz=u * stride) for u in units], cold=False),
    )  # fmt: skip
    final = config.with_changes(imgsz=answer * stride)
    estimate, _ = prober.run(final)
    return FitResult(
        solve="imgsz", model=config.model, **_budget_fields(prober.budget), max_batch=config.batch, imgsz=final.imgsz,
        stride=stride, nbs=config.nbs, config=final, estimate_at_max=estimate, predicted=predicted * stride,
        probes=_for(prober, config), at_search_cap=at_cap,
    )  # fmt: skip


def probe_as_trained(prober: Prober, config: EstimateConfig, imgsz: int, stride: int) -> Probe:
    """The verdict of ``config`` at ``imgsz`` for the imgsz search: a size the trainer trains smaller (up to
    8.0.103 Ultralytics trains a classifier asked for 640 at 224) counts as the next size up. Its own
    figures would break the search's monotony: 640 would fit where 608 does not, and be the answer."""
    found = prober.probe(config.with_changes(imgsz=imgsz))
    if found.imgsz >= imgsz or not found.fits:
        return found
    return prober.probe(config.with_changes(imgsz=imgsz + stride))


def batch_units(bracket: tuple[int, int], ranks: int) -> list[int]:
    """The bracket's batches per rank: the units ``largest_batch`` searches in. Under DDP each rank
    traces its own share, so a share is kept at the bracket's smallest batch or more (a rank's batch of
    2 steps its optimizer differently and could not join the family of the others)."""
    return [max(min(bracket), b // ranks) for b in bracket]


def _first_batch_units(config: EstimateConfig, bracket: tuple[int, int], cap: int | None = None) -> tuple[int, int]:
    """The batches per rank of the batch search's first two runs, which draw its line (``cap``: ``_batch_cap``)."""
    cap = cap if cap is not None else _batch_cap(config, dataset_batches(config))
    return _first_units(*batch_units(bracket, config.world_size), cap)


def batch_search_start(config: EstimateConfig, prober: Prober, bracket: tuple[int, int] = BATCH_BRACKET) -> EstimateConfig | None:
    """The config of ``largest_batch``'s third run, the line's prediction, from its first two (which
    ``prober`` runs); None when the search goes elsewhere (the first batch does not fit). Sweeps
    that search several configs trace these side by side before searching."""
    ranks = config.world_size
    cap = _batch_cap(config, dataset_batches(config))
    first, second = _first_batch_units(config, bracket, cap)
    p1 = prober.probe(config.with_changes(batch=first * ranks))
    if not p1.fits:
        return None
    p2 = prober.probe(config.with_changes(batch=second * ranks))
    return config.with_changes(batch=_predict(_LINEAR, first, p1, second, p2, cap, prober.budget.capacity_bytes) * ranks)


def _solve(prober, probe, shape, bracket_units, cap_units, what_does_not_fit, hint, ahead=None):
    """Search the largest fitting unit (batch per rank, or imgsz / stride); raise NothingFits with the
    figures of unit 1 when even that does not fit. ``ahead`` as for ``_search``."""
    budget = prober.budget
    if budget.capacity_bytes <= 0:  # nothing to search: the upper figure's CUDA context alone fills the card
        raise NothingFits(f"{_card(budget)} leaves nothing for training after the CUDA context "
                          f"({budget.context_bytes / GiB:.2f} GiB, the most measured, the figure verdicts "
                          f"use); give the card's whole memory, or pick a larger card")  # fmt: skip
    answer, predicted, at_cap = _search(probe, shape, *bracket_units, cap_units, prober.budget.capacity_bytes, ahead)
    if answer is None:
        smallest = probe(1)
        raise NothingFits(
            f"{what_does_not_fit(smallest)}: needs {smallest.peak_reserved_bytes / GiB:.2f} GiB reserved, "
            f"{prober.budget.capacity_bytes / GiB:.2f} GiB available after the CUDA context and "
            f"margin={prober.budget.margin:g}; {hint}"
        )
    return answer, predicted, at_cap


def _budget_fields(budget) -> dict:
    """The FitResult fields that describe the card and its budget."""
    return {
        "gpu": budget.gpu.name, "gpu_total_bytes": budget.gpu.total_bytes, "context_bytes": budget.context_bytes,
        "margin": budget.margin, "capacity_bytes": budget.capacity_bytes,
    }  # fmt: skip


def _card(budget: Budget) -> str:
    gpu = budget.gpu
    return gpu.name if gpu.name != "custom" else f"a {gpu.total_bytes / GiB:g} GiB GPU"


def _for(prober: Prober, config: EstimateConfig) -> tuple[Probe, ...]:
    """The probes of this search, in the order they ran, each run once: two sizes asked may be one run
    trained (``probe_as_trained``)."""
    def search_of(probed: EstimateConfig) -> EstimateConfig:  # its probes differ from it in these two only
        return probed.with_changes(batch=config.batch, imgsz=config.imgsz)

    runs = {(probe.batch, probe.imgsz): probe for key, probe in prober._probes.items() if search_of(key) == search_of(config)}
    return tuple(runs.values())


def line_prediction(x1: float, m1: int, x2: float, m2: int, capacity: int) -> float | None:
    """Solve m(x) = capacity on the line through (x1, m1), (x2, m2); None when memory does not grow."""
    if x2 < x1:
        (x1, m1), (x2, m2) = (x2, m2), (x1, m1)
    if x2 == x1 or m2 <= m1:
        return None
    slope = (m2 - m1) / (x2 - x1)
    return x1 + (capacity - m1) / slope


@dataclass(frozen=True)
class _Scale:
    """How memory grows with the searched unit: m ~ a + b * grow(u); ``unit_at`` inverts ``grow``."""

    grow: Callable[[int], float]
    unit_at: Callable[[float], float]


_LINEAR = _Scale(lambda u: float(u), lambda x: x)  # batch
_SQUARE = _Scale(lambda u: float(u * u), lambda x: math.sqrt(max(x, 0.0)))  # imgsz / stride


def _first_units(first: int, second: int, cap: int) -> tuple[int, int]:
    """The two units that draw the search's line: distinct, within the cap."""
    return min(first, cap), min(max(second, first + 1), cap)


def _predict(scale: _Scale, first: int, p1: Probe, second: int, p2: Probe, cap: int, capacity: int) -> int:
    """The unit where the line through the first two probes meets the capacity, within [1, cap]."""
    x_pred = line_prediction(scale.grow(first), p1.peak_reserved_bytes, scale.grow(second), p2.peak_reserved_bytes, capacity)
    return cap if x_pred is None else min(max(int(math.floor(scale.unit_at(x_pred))), 1), cap)


def _aim_again(scale: _Scale, probed: dict[int, Probe], guess: int, cap: int, capacity: int) -> int:
    """Where the line through the guess and the probe nearest it meets the capacity, on the side of the guess
    its verdict points to. The guess, far from the first two probes, measures the slope where the answer is;
    the search then starts there rather than stepping away from the guess. Each step away is a trace where
    runs cannot be derived yet (segmentation's per-image block needs three traced runs on the answer's side
    of batch 256, and none below the smallest of them): ``fit yolov8n-seg.yaml gpu=H200`` traced 725, 703,
    659 and 571 on the way down from its guess, 725."""
    nearest = min((unit for unit in probed if unit != guess), key=lambda unit: abs(unit - guess))
    aimed = _predict(scale, nearest, probed[nearest], guess, probed[guess], cap, capacity)
    return max(aimed, guess) if probed[guess].fits else min(aimed, guess)


def _search(probe: Callable[[int], Probe], scale: _Scale, first: int, second: int, cap: int, capacity: int,
            ahead: Callable[[list[int]], None] | None = None) -> tuple[int | None, int, bool]:  # fmt: skip
    """Largest unit u in [1, cap] with probe(u).fits, assuming memory ~ a + b * scale.grow(u).

    Returns (answer or None, the line's prediction, whether the answer is the cap). The answer is
    confirmed: probe(answer) fits and probe(answer + 1) does not (unless answer == cap).

    ``ahead(units)``: told the line's prediction and the unit probed next when the prediction fits and
    the line holds there (the usual case), before either is probed, to find both side by side where
    neither derives from earlier runs (``Prober.prefetch``).
    """
    first, second = _first_units(first, second, cap)
    p1 = probe(first)
    if not p1.fits and (first == 1 or not probe(1).fits):
        return None, 1, False  # the smallest unit does not fit: no line needed
    probed: dict[int, Probe] = {first: p1}

    def check(unit: int) -> bool:
        if unit not in probed:
            probed[unit] = probe(unit)
        return probed[unit].fits

    if second == first:  # the cap is at the bracket's first unit (a small dataset's): no line to draw
        if p1.fits:
            return first, first, True
        return _bisect(check, 1, first), first, False  # unit 1 fits (checked above)
    p2 = probed[second] = probe(second)
    predicted = _predict(scale, first, p1, second, p2, cap, capacity)

    guess = min(max(predicted, 1), cap)
    if ahead is not None and guess not in probed:
        ahead([guess, min(guess + max(1, guess // 32), cap)])  # the step up from ``start`` == guess, below
    check(guess)
    start = _aim_again(scale, probed, guess, cap, capacity)
    lo, hi = (guess, None) if probed[guess].fits else (None, guess)
    if check(start):
        lo, step = start, max(1, start // 32)
        while hi is None:
            if lo >= cap:
                return cap, predicted, True
            nxt = min(lo + step, cap)
            if check(nxt):
                lo, step = nxt, step * 2
            else:
                hi = nxt
    else:
        hi, step = start, max(1, start // 32)
        while lo is None:
            if hi <= 1:
                return None, predicted, False
            nxt = max(hi - step, 1)
            if check(nxt):
                lo = nxt
            else:
                hi, step = nxt, step * 2
    return _bisect(check, lo, hi), predicted, False


def _bisect(check: Callable[[int], bool], lo: int, hi: int) -> int:
    """The largest unit that fits, between ``lo`` (fits) and ``hi`` (does not)."""
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if check(mid):
            lo = mid
        else:
            hi = mid
    return lo
