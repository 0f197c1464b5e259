"""The yolov5 repo's own training step and val.py, run for real on CPU under our ``Tracer``.

Outside truth for ``yolomem.loops.yolov5``: the ``yolov5`` package on PyPI (7.0.x) packages the yolov5
repo. It is not a test extra (its requirements pull sahi, roboflow, boto3... and it imports
``pkg_resources``, which setuptools >= 81 no longer ships); ``.ci/run`` installs it and the few modules
its train/val code imports into ``.ci/yolov5`` (``pip install --no-deps --target``), which is put at
the end of ``sys.path`` here.
Its ``train()`` needs a dataset on disk, so the loop body of ``train.py`` is written out below line by
line (same statements, same variable names, so Python frees the same tensors at the same points),
calling the package's own ``Model``, ``ComputeLoss``, ``smart_optimizer``, ``ModelEMA`` and
``GradScaler``. ``val.run`` is called as ``train.py`` calls it, with a stand-in dataloader.

Where a CPU run would take another path than a GPU, we take the GPU's:
- ``x.to(device)`` is a copy on a GPU and a no-op on the CPU: a ``clone()`` in the training body and for
  Detect's stride; in val.py the loader yields host tensors that the first statement of each batch
  body (``with dt[0]:``, a ``Profile`` stand-in) registers with the tracer, and that the loader's list
  (emptied after unpacking) and tqdm (bypassed) do not keep alive;
- ``Tensor.cpu()`` returns the tensor itself on the CPU (and ``.numpy()`` would keep it alive): a host
  copy, category "host", which comparisons leave out;
- torch picks the foreach optimizer kernels for CUDA parameters, not for CPU ones: CPU is allowed;
- val.run is ``torch.inference_mode()``, under which a dispatch tracer does not see inside composite ops
  (max_pool2d's int64 indices, which CUDA allocates): its body runs under ``no_grad()`` instead;
- ``torchvision.ops.nms``: the CUDA kernel's allocations (``yolomem.loops.val_pass`` stand-in), on
  both sides, since the CPU kernel allocates differently; NMS's wall-clock time limit is off;
- which (anchor, class) pairs pass NMS's ``conf`` depends on values: the EMA's head is set so that every
  pair passes, as our trace assumes with ``candidates=None``.
What cannot be had on a CPU: AMP (CUDA autocast, the enabled scaler) and val.py's ``half`` (it is
forced off on CPU). These runs are fp32.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch


PACKAGE_DIR = Path(__file__).resolve().parents[1] / ".ci" / "yolov5"  # where .ci/run installs it


def yolov5_or_reason() -> tuple[object | None, str]:
    """The imported ``yolov5`` package, or None and why not."""
    if PACKAGE_DIR.is_dir() and str(PACKAGE_DIR) not in sys.path:
        sys.path.append(str(PACKAGE_DIR))  # last: installed packages win
    try:
        import yolov5  # noqa: F401
        from yolov5.models import yolo  # noqa: F401
        from yolov5.utils import loss  # noqa: F401
        import yolov5.val  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means: no outside truth here
        return None, (f"the yolov5 package is not importable ({type(error).__name__}: {error}); install it as "
                      ".ci/run does: pip install --no-deps --target .ci/yolov5 yolov5==7.0.14 pandas tqdm "
                      "seaborn pytz tzdata 'setuptools<81'")
    return yolov5, ""


def repo_parse_opt(script: str, arguments: list[str], monkeypatch):
    """The repo's own ``parse_opt`` of ``script`` (train.py, segment/train.py, classify/train.py) on
    ``arguments``, as its command line would give them; the test is skipped where the package is missing."""
    import importlib
    import types

    import pytest

    if yolov5_or_reason()[0] is None:
        pytest.skip(yolov5_or_reason()[1])
    connector = types.ModuleType("yolov5.utils.roboflow")  # the scripts import the Roboflow helper, which needs
    connector.RoboflowConnector = object  # the roboflow package; their argument parsers do not
    monkeypatch.setitem(sys.modules, "yolov5.utils.roboflow", connector)
    module = importlib.import_module(f"yolov5.{script.removesuffix('.py').replace('/', '.')}")
    monkeypatch.setattr(sys, "argv", [script, *arguments])
    return module.parse_opt()


def hyp_scratch_low() -> dict:
    import yaml
    import yolov5

    path = Path(yolov5.__file__).parent / "data" / "hyps" / "hyp.scratch-low.yaml"
    return yaml.safe_load(path.read_text())


@contextlib.contextmanager
def gpu_kernel_choices() -> Iterator[None]:
    """torch's optimizers default to foreach kernels for CUDA parameters; allow CPU ones too."""
    from torch.optim import optimizer as optim_module

    original = optim_module._get_foreach_kernels_supported_devices
    optim_module._get_foreach_kernels_supported_devices = lambda: [*original(), "cpu"]
    try:
        yield
    finally:
        optim_module._get_foreach_kernels_supported_devices = original


def to_device(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.to('cuda')``: a new device tensor (on the CPU ``.to('cpu')`` would return ``tensor``)."""
    return tensor.clone()


class PackageRun:
    """train.py's setup for a model YAML, on the CPU: model, optimizer, EMA, scaler, loss."""

    def __init__(self, cfg: str | dict, nc: int, batch: int, imgsz: int, nbs: int = 64):
        """``cfg``: a yolov5 model YAML (path or dict); a Segment head selects segment/train.py."""
        from yolov5.models.yolo import Model, Segment
        from yolov5.utils.general import LOGGER
        from yolov5.utils.loss import ComputeLoss
        from yolov5.utils.segment.loss import ComputeLoss as SegmentLoss
        from yolov5.utils.torch_utils import ModelEMA, smart_optimizer

        LOGGER.setLevel("ERROR")
        hyp = hyp_scratch_low()
        self.batch, self.imgsz, self.nbs = batch, imgsz, nbs
        self.model = model = Model(cfg, ch=3, nc=nc)
        # Model(...).to(device): BaseModel._apply gives Detect a GPU copy of the stride tensor that
        # DetectionModel.stride (left on the host) shares on the CPU
        model.model[-1].stride = to_device(model.model[-1].stride)
        accumulate = max(round(nbs / batch), 1)
        hyp["weight_decay"] *= batch * accumulate / nbs
        with gpu_kernel_choices():
            self.optimizer = smart_optimizer(model, "SGD", hyp["lr0"], hyp["momentum"], hyp["weight_decay"])
        self.ema = ModelEMA(model)
        nl = model.model[-1].nl
        hyp["box"] *= 3 / nl
        hyp["cls"] *= nc / 80 * 3 / nl
        hyp["obj"] *= (imgsz / 640) ** 2 * 3 / nl
        hyp["label_smoothing"] = 0.0
        model.nc, model.hyp = nc, hyp
        self.hyp = hyp
        self.scaler = torch.cuda.amp.GradScaler(enabled=False)
        self.segment = isinstance(model.model[-1], Segment)
        # segment/train.py: ComputeLoss(model, overlap=not opt.no_overlap), overlap masks by default
        self.compute_loss = SegmentLoss(model, overlap=True) if self.segment else ComputeLoss(model)
        self.last_opt_step = -1
        self.nw = 100  # max(round(warmup_epochs * nb), 100) for a small dataset

    def gpu_tensors(self) -> dict[str, list[torch.Tensor]]:
        """What train.py has on the GPU once ``Model(...).to(device)`` and ``ModelEMA(model)`` ran."""
        detect = self.model.model[-1]
        ema_detect = self.ema.ema.model[-1]
        model = list(self.model.parameters()) + list(self.model.buffers()) + [detect.stride]
        ema = list(self.ema.ema.parameters()) + list(self.ema.ema.buffers()) + [ema_detect.stride]
        return {"parameter": model, "ema": ema}

    def finish_setup(self, tracer) -> None:
        """train.py's setup after the EMA, traced: ``model.half().float()``, the class weights on the
        GPU, and ``ComputeLoss``'s two ``pos_weight`` tensors (made earlier here, registered now)."""
        with tracer.phase("setup"):
            self.model.half().float()  # pre-reduce anchor precision
            tracer.label([*self.model.parameters(), *self.model.buffers()], "parameter")  # new storages, same role
            nc = self.model.nc
            self.model.class_weights = to_device(torch.ones(nc)) * nc  # labels_to_class_weights(...).to(device) * nc
            tracer.track_existing([self.model.class_weights], "parameter")
            tracer.track_existing([self.compute_loss.BCEcls.pos_weight, self.compute_loss.BCEobj.pos_weight], "parameter")

    def train(self, tracer, batches, epoch: int = 0, nb: int | None = None) -> dict:
        """train.py's (segment/train.py's) batch loop over ``batches`` of host ``(imgs, targets[, masks])``.
        Returns the loop's variables, which train.py keeps alive after the loop (through validation)."""
        model, optimizer, scaler, ema, compute_loss = self.model, self.optimizer, self.scaler, self.ema, self.compute_loss
        nb = nb or len(batches)
        nbs, batch_size, nw = self.nbs, self.batch, self.nw
        device = "cpu"
        model.train()
        with tracer.phase("log"):
            mloss = torch.zeros(4 if self.segment else 3, device=device)  # mean losses
        optimizer.zero_grad()
        for i, (imgs, targets, *masks) in enumerate(batches):
            tracer.start_iteration(i + nb * epoch)
            ni = i + nb * epoch
            with tracer.phase("preprocess"):
                imgs = to_device(imgs).float() / 255
            if ni <= nw:
                xi = [0, nw]
                accumulate = max(1, np.interp(ni, xi, [1, nbs / batch_size]).round())
            with torch.autocast("cpu", enabled=False):
                with tracer.phase("forward"):
                    pred = model(imgs)
                with tracer.phase("loss"):
                    if self.segment:
                        loss, loss_items = compute_loss(pred, to_device(targets), masks=to_device(masks[0]).float())
                    else:
                        loss, loss_items = compute_loss(pred, to_device(targets))
            with tracer.phase("backward"):
                scaler.scale(loss).backward()
            tracer.label([p.grad for p in model.parameters() if p.grad is not None], "gradient")
            if ni - self.last_opt_step >= accumulate:
                with tracer.phase("optimizer"), gpu_kernel_choices():
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad()
                with tracer.phase("ema"):
                    if ema:
                        ema.update(model)
                self.last_opt_step = ni
                states = [t for s in optimizer.state.values() for t in s.values() if isinstance(t, torch.Tensor)]
                tracer.label(states, "optimizer_state")
            with tracer.phase("log"):
                mloss = (mloss * i + loss_items) / (i + 1)
        return {"imgs": imgs, "pred": pred, "loss": loss, "loss_items": loss_items, "mloss": mloss}


def all_pass_head(model) -> None:
    """Biases that make every objectness and class score of the head near 1: NMS keeps every anchor and
    every (anchor, class) pair, as the fake trace's stand-in predictions do (``_real_predictions``).
    Non-finite weights become 0 first: two SGD steps of a fresh P6 model (yolov5n6) on the synthetic
    64-px batches leave its EMA NaN, and NaN scores pass no threshold. Values change no allocation
    but NMS's."""
    detect = model.model[-1]
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.nan_to_num_(0.0, posinf=0.0, neginf=0.0)
        for conv in detect.m:
            conv.weight.zero_()
            conv.bias.fill_(20.0)


class _HostLoader:
    """val.py's dataloader: yields host ``(im, targets, paths, shapes[, masks])``, made before the
    tracer starts. On a GPU, val.py copies them with ``.to(device)`` as the loop body's first
    statements; here ``on_val_batch_start`` (the loop body's first statement) registers the yielded
    host tensors with the tracer at that point, and Python frees them where it would free the copies."""

    def __init__(self, tracer, batches):
        self.tracer, self.current = tracer, []
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes():  # fresh host storages, not traced
            self.batches = [[t.clone() for t in batch] for batch in batches]
        self.count = len(batches)

    def __len__(self) -> int:
        return self.count

    def __iter__(self):
        while self.batches:
            yield self._next()

    def _next(self) -> list:
        batch = self.batches.pop(0)
        im = batch[0]
        shapes = [((im.shape[2], im.shape[3]), ((1.0, 1.0), (0.0, 0.0)))] * im.shape[0]
        # a list, not a tuple: val.py unpacks it all the same, and on_batch_start can empty it, so that
        # neither this loader nor enumerate()'s cached result keeps the batch alive
        self.current = [batch[0], batch[1], [f"im{k}.jpg" for k in range(im.shape[0])], shapes, *batch[2:]]
        return self.current

    def on_batch_start(self, *_args) -> None:
        self.tracer.phase_name = "val_preprocess"
        self.tracer.track_existing([t for t in self.current if isinstance(t, torch.Tensor)], "input")
        self.current.clear()


def run_val(run: PackageRun, tracer, batches, save_dir) -> None:
    """``validate.run(...)`` as train.py calls it after an epoch, with phases set along the way:
    val_preprocess, val_forward, val_loss, val_nms, val_metrics (per-image mAP bookkeeping)."""
    import yolov5.segment.val as segment_validate
    import yolov5.val as detect_validate
    from yolov5.utils.callbacks import Callbacks

    from yolomem.loops.val_pass import _cuda_nms_allocations

    validate = segment_validate if run.segment else detect_validate
    # segment/train.py: validate.run(..., mask_downsample_ratio=mask_ratio, overlap=overlap)
    extra = {"mask_downsample_ratio": 4, "overlap": True} if run.segment else {}
    loader = _HostLoader(tracer, batches)
    original_profile = validate.Profile

    class BatchStart(original_profile):
        """val.py's ``dt = Profile(), Profile(), Profile()``; ``with dt[0]:`` opens each batch's body,
        where val.py copies the batch to the GPU: the loader's host tensors are registered then."""

        made = 0

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.first = BatchStart.made % 3 == 0
            BatchStart.made += 1

        def __enter__(self):
            if self.first:
                loader.on_batch_start()
            return super().__enter__()
    model = run.ema.ema
    compute_loss = run.compute_loss

    def loss_fn(*args, **kwargs):
        tracer.phase_name = "val_loss"
        return compute_loss(*args, **kwargs)

    original_nms = validate.non_max_suppression

    def nms(*args, **kwargs):
        tracer.phase_name = "val_nms"
        out = original_nms(*args, **kwargs)
        tracer.phase_name = "val_metrics"
        return out

    hook = model.register_forward_pre_hook(lambda *_: setattr(tracer, "phase_name", "val_forward"))
    validate.non_max_suppression = nms
    validate.Profile = BatchStart
    # NMS gives up after 0.5 + 0.05 * batch seconds; a CPU under load hits that: no time limit here
    import yolov5.utils.general as general

    original_time = general.time
    general.time = SimpleNamespace(time=lambda: 0.0)
    # tqdm keeps the last batch in its generator while the loop body runs: host tensors on a GPU,
    # but here they stand for the GPU copies, which val.py frees sooner (im, at im.float())
    original_tqdm = validate.tqdm
    validate.tqdm = lambda iterable, *args, **kwargs: iterable
    original_cpu = torch.Tensor.cpu

    def host_copy(tensor: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        """``Tensor.cpu()`` of a GPU tensor: a new host tensor the GPU allocator never sees (on the
        CPU ``.cpu()`` returns the tensor itself, and ``.numpy()`` would keep its storage alive).
        Registered as category "host" so that comparisons can leave it out."""
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes():
            copy = tensor.detach().clone()
        tracer.track_existing([copy], "host")
        return copy

    torch.Tensor.cpu = host_copy
    tracer.phase_name = "val_setup"
    try:
        # val.run is wrapped in torch.inference_mode(), under which a dispatch tracer does not see the
        # inside of composite ops (max_pool2d's int64 indices, which CUDA allocates too); no_grad()
        # allocates the same and lets the tracer see them
        with _cuda_nms_allocations(tracer), torch.no_grad():
            validate.run.__wrapped__({"nc": run.model.nc, "val": "val"}, batch_size=2 * run.batch, imgsz=run.imgsz,
                         half=False, model=model, single_cls=False, dataloader=loader, save_dir=Path(save_dir),
                         plots=False, callbacks=Callbacks(), compute_loss=loss_fn, **extra)  # fmt: skip
    finally:
        torch.Tensor.cpu = original_cpu
        validate.tqdm = original_tqdm
        validate.Profile = original_profile
        general.time = original_time
        validate.non_max_suppression = original_nms
        hook.remove()
        tracer.phase_name = "setup"


def package_trace(model_yaml: Path, *, nc: int, batch: int, imgsz: int, iterations: int, instances: float,
                  seed: int, val_shapes, val_seed: int):
    """The package's train.py loop for ``iterations`` batches, then ``val.run`` over ``val_shapes``,
    traced on real CPU tensors; the batches are the ones ``yolomem``'s yolov5 loop draws for the
    same seeds. Returns the Trace."""
    import tempfile

    import yaml

    from yolomem.config.settings import EstimateConfig
    from yolomem.loops.base import cuda_foreach_types, traced_batches
    from yolomem.loops.batches import SyntheticBatch
    from yolomem.loops.yolov5.val_pass import _host_val_batch
    from yolomem.trace.tracer import Tracer

    cfg = yaml.safe_load(model_yaml.read_text())
    torch.manual_seed(0)
    run = PackageRun(cfg, nc, batch, imgsz)
    task = "segment" if run.segment else "detect"
    batches = []
    # objects per sample as yolomem's loop draws them (yolomem.loops.density: a typical batch, then the densest)
    config = EstimateConfig(model=model_yaml.stem, framework="yolov5", batch=batch, imgsz=imgsz, instances=instances,
                            seed=seed, iterations=iterations)  # fmt: skip
    _, counts, _ = traced_batches(config, task, batch, upper=False)
    for iteration in range(iterations):
        data = SyntheticBatch.draw(task, batch, imgsz, instances, seed=seed + iteration, nc=nc,
                                   counts=counts[iteration]).as_dict()  # fmt: skip
        targets = torch.cat((data["batch_idx"][:, None], data["cls"], data["bboxes"]), 1)
        batches.append((data["img"], targets, data["masks"]) if run.segment else (data["img"], targets))
    val_batches = []
    for k, shape in enumerate(val_shapes):
        im, targets, _, masks = _host_val_batch(shape, val_seed + k, nc, 3, run.segment)
        val_batches.append((im, targets, masks) if run.segment else (im, targets))
    tracer = Tracer(fake=False)
    with tracer, cuda_foreach_types():
        for category, tensors in run.gpu_tensors().items():
            tracer.track_existing(tensors, category)
        del tensors
        run.finish_setup(tracer)
        held = run.train(tracer, batches)  # noqa: F841 - train.py keeps the loop's variables through validation
        with tracer.paused():
            all_pass_head(run.ema.ema)
        tracer.start_iteration(iterations)
        with tempfile.TemporaryDirectory() as save_dir:
            run_val(run, tracer, val_batches, save_dir)
        trace = tracer.result()
        tracer.detach_finalizers()
    return trace


def package_classify_trace(model_yaml: Path, *, nc: int, batch: int, imgsz: int, iterations: int, seed: int):
    """classify/train.py's setup and batch loop (fp32: ``autocast(enabled=cuda)`` and
    ``GradScaler(enabled=cuda)`` are off on a CPU) for ``iterations`` batches, traced on real CPU
    tensors; the batches are the ones ``yolomem``'s classify run draws for the same seeds."""
    from yolov5.models.yolo import ClassificationModel, Model
    from yolov5.utils.general import LOGGER
    from yolov5.utils.torch_utils import ModelEMA, smart_optimizer, smartCrossEntropyLoss

    from yolomem.loops.base import cuda_foreach_types
    from yolomem.loops.batches import SyntheticBatch
    from yolomem.trace.tracer import Tracer

    LOGGER.setLevel("ERROR")
    torch.manual_seed(0)
    model = ClassificationModel(model=Model(str(model_yaml)), nc=nc, cutoff=10)
    for p in model.parameters():
        p.requires_grad = True  # for training
    with gpu_kernel_choices():
        optimizer = smart_optimizer(model, "Adam", 0.001, momentum=0.9, decay=5e-5)
    ema = ModelEMA(model)
    criterion = smartCrossEntropyLoss(label_smoothing=0.1)
    scaler = torch.cuda.amp.GradScaler(enabled=False)
    batches = []
    for iteration in range(iterations):
        data = SyntheticBatch.draw("classify", batch, imgsz, 0.0, seed=seed + iteration, nc=nc).as_dict()
        batches.append((data["img"], data["cls"]))
    tracer = Tracer(fake=False)
    with tracer, cuda_foreach_types(), gpu_kernel_choices():
        tracer.track_existing(list(model.parameters()) + list(model.buffers()), "parameter")
        tracer.track_existing(list(ema.ema.parameters()) + list(ema.ema.buffers()), "ema")
        model.train()
        tloss = 0.0
        for i, (images, labels) in enumerate(batches):
            tracer.start_iteration(i)
            images, labels = to_device(images), to_device(labels)
            with torch.autocast("cpu", enabled=False):
                loss = criterion(model(images), labels)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad()
            if ema:
                ema.update(model)
            tloss = (tloss * i + loss.item()) / (i + 1)
        trace = tracer.result()  # images, labels and loss still alive, as in train.py's loop
        tracer.detach_finalizers()
    return trace
