"""The measuring run of ``framework=yolov5``: the yolov5 repo's own ``train.py``, as the ``yolov5`` package on
PyPI ships it (``pip install yolov5``; 7.0.x packages the repo), on the synthetic dataset.

``train.main`` checks requirements and git, and may fetch a Roboflow dataset; for a fresh run it then only
fills ``opt.save_dir`` and calls ``train(hyp, opt, device, callbacks)``. That call is made here, with the
repo's own ``parse_opt`` defaults and ``--noplots`` (plots need fonts from the network). One epoch of
``iterations`` batches, then what ``train.py`` does after its last epoch: ``val.run`` on the EMA, saving
``last.pt`` and ``best.pt``, and ``val.run`` on ``best.pt``. The repo's callbacks split it into the
phases Ultralytics' do (``UltralyticsPhases``: train, epoch_end, val, save, final_val, teardown).

Offline, as for Ultralytics (``yolomem.measure.worker``): ``check_dataset`` downloads a font at its end
(replaced by a no-op for the run), the package (not the repo) asks the Hugging Face hub for ``--weights``
and for each checkpoint it loads (answered "not there": the local file is used), and ``check_amp`` falls
back to downloading ``yolov5n.pt`` when the untrained model's FP32 and AMP outputs differ: offline that
fails and the repo would train in FP32, so the worker keeps AMP on, as the estimate assumes, and says so
in the record's notes.

Which models: the repo's YAML designs for detection (yolov5n..x, P6). The darknet cfgs (YOLOv3, YOLOv4),
which yolomem builds from the cfg, and segment/train.py and classify/train.py are not measured yet.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

from yolomem.config.settings import EstimateConfig
from yolomem.errors import UserError

INSTALL_HINT = "pip install yolov5 (the yolov5 repo as packaged on PyPI)"


def check_package() -> None:
    """The one-line error where the yolov5 package is missing (asked after CUDA: without a GPU it would not help)."""
    import importlib.util

    if importlib.util.find_spec("yolov5") is None:
        raise UserError(f"measure framework=yolov5 runs the repo's train.py from the yolov5 package; {INSTALL_HINT}")


def check_measurable(config: EstimateConfig, resolved) -> None:
    """A one-line error for what this run cannot measure of the yolov5 loop."""
    from yolomem.loops.yolov5.runner import original_of

    original = original_of(resolved)
    if original.kind != "yolov5-yaml" or original.task != "detect":
        kinds = {"darknet": "a darknet cfg", "yolov5-checkpoint": "a checkpoint"}
        what = kinds.get(original.kind, f"a {original.task} model")
        raise UserError(f"measure framework=yolov5 runs the repo's train.py on its YAML detection models (yolov5n..x, "
                        f"yolov5n6..x6); {config.model!r} is {what}")  # fmt: skip
    if config.amp != "fp16":
        raise UserError(f"amp={config.amp}: train.py has no precision option (it trains with AMP where its check "
                        "passes)")
    if config.step != "train" or config.world_size != 1:
        raise UserError("measure framework=yolov5 runs one GPU's training (step=train, world_size=1)")
    if config.nbs != 64:
        raise UserError(f"nbs={config.nbs}: train.py fixes nbs = 64")
    train_py_freeze(config.freeze)


def train_py_freeze(layers: tuple[int, ...]) -> list[int]:
    """``--freeze`` for ``layers``: train.py reads one number N as layers 0..N-1 and a longer list as the layers."""
    if layers == tuple(range(len(layers))):
        return [len(layers)]
    if len(layers) > 1:
        return list(layers)
    raise UserError(f"freeze=[{layers[0]}]: train.py's --freeze reads one number N as layers 0..N-1, so it cannot "
                    f"freeze layer {layers[0]} alone")


def import_train():
    """The package's ``train`` module. It imports its Roboflow helper, which needs the roboflow package;
    only a Roboflow dataset URL uses it, so a stand-in takes its place where roboflow is missing."""
    try:
        import yolov5  # noqa: F401
    except ImportError as error:
        raise UserError(f"measure framework=yolov5 needs the yolov5 package ({error}); {INSTALL_HINT}") from None
    try:
        import yolov5.utils.roboflow  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("yolov5.utils.roboflow")
        stand_in.RoboflowConnector = None
        sys.modules["yolov5.utils.roboflow"] = stand_in
    import yolov5.train

    return yolov5.train


def run_train(config: EstimateConfig, model_name: str, data_yaml: str, augment: dict, device: str, project: Path,
              phases, on_iteration, notes: list[str]) -> int:  # fmt: skip
    """Train as the module docstring says; ``model_name`` is the repo's (``yolov5s``: its ``yolov5s.yaml``),
    ``augment`` overrides the repo's hyperparameters (``measure.run.EXACT_AUGMENT``: the same keys as its hyp
    files), ``phases`` is a ``UltralyticsPhases``, ``on_iteration()`` runs after each training batch. Returns
    the batch size trained with."""
    import yaml
    import yolov5
    from yolov5.utils.callbacks import Callbacks
    from yolov5.utils.general import check_yaml, increment_path
    from yolov5.utils.torch_utils import select_device

    train_module = import_train()
    opt = _options(train_module, config, model_name, data_yaml, device, project)
    opt.cfg = check_yaml(opt.cfg)
    opt.save_dir = str(increment_path(Path(opt.project) / opt.name, exist_ok=opt.exist_ok))
    hyp = yaml.safe_load(Path(check_yaml(opt.hyp)).read_text())
    hyp.update(augment)
    callbacks = Callbacks()
    callbacks.register_action("on_train_start", callback=lambda *_: phases.on_train_start(None))
    callbacks.register_action("on_train_batch_end", callback=lambda *_: on_iteration())
    callbacks.register_action("on_train_epoch_end", callback=lambda *_, **__: phases.recorder.mark("epoch_end"))
    callbacks.register_action("on_val_start", callback=lambda *_: phases.on_val_start(None))
    # val.py runs on_val_end only with plots on: a validation ends where train.py goes on after it
    callbacks.register_action("on_fit_epoch_end", callback=lambda *_: phases.on_val_end(None))
    callbacks.register_action("on_train_end", callback=lambda *_: phases.on_val_end(None))
    notes.append(f"yolov5 {yolov5.__version__}: the repo's train.py (train.train), cfg {Path(opt.cfg).name}")
    with _environment_kept(), _offline(train_module, notes):
        train_module.train(hyp, opt, select_device(opt.device, batch_size=opt.batch_size), callbacks)
    return int(opt.batch_size)


def _options(train_module, config: EstimateConfig, model_name: str, data_yaml: str, device: str, project: Path):
    """train.py's options as its command line would give them: its own defaults, then ours."""
    saved = sys.argv
    sys.argv = ["train.py"]
    try:
        opt = train_module.parse_opt(known=True)
    finally:
        sys.argv = saved
    opt.weights, opt.cfg, opt.data = "", f"{model_name}.yaml", data_yaml
    opt.epochs, opt.batch_size, opt.imgsz, opt.workers = 1, config.batch, config.imgsz, 0
    opt.device = device.removeprefix("cuda:") if device != "cpu" else "cpu"
    opt.project, opt.name, opt.exist_ok, opt.noplots = str(project), "run", True, True
    opt.seed, opt.freeze = config.seed, train_py_freeze(config.freeze)
    opt.optimizer = "SGD" if config.optimizer == "auto" else config.optimizer
    return opt


@contextlib.contextmanager
def _environment_kept() -> Iterator[None]:
    """The process's settings, put back after the run. ``select_device('cpu')`` sets CUDA_VISIBLE_DEVICES=-1;
    ``init_seeds(deterministic=True)`` turns on deterministic algorithms and cuDNN's deterministic mode and
    sets CUBLAS_WORKSPACE_CONFIG and PYTHONHASHSEED. And the repo loads its own checkpoints (``best.pt`` for
    the final validation) with ``torch.load(w)``, which torch >= 2.6 refuses (``weights_only``) unless
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set: set for the run, as train.py ran under the torch it was written for."""
    import torch

    names = ("CUDA_VISIBLE_DEVICES", "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")
    saved = {name: os.environ.get(name) for name in names}
    flags = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic)  # fmt: skip
    os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        torch.use_deterministic_algorithms(flags[0], warn_only=flags[1])
        torch.backends.cudnn.deterministic = flags[2]


@contextlib.contextmanager
def _offline(train_module, notes: list[str]) -> Iterator[None]:
    """The font download of ``check_dataset`` off, and ``check_amp``'s offline fallback answered (module
    docstring); both restored after."""
    import yolov5.utils.downloads as downloads
    import yolov5.utils.general as general

    original_amp, original_font = train_module.check_amp, general.check_font
    # the package asks the Hugging Face hub first for --weights and for every checkpoint it loads (best.pt)
    asking_hub = [module for module in (train_module, downloads) if hasattr(module, "attempt_download_from_hub")]
    original_hub = [module.attempt_download_from_hub for module in asking_hub]

    def check_amp(model):
        passed = original_amp(model)
        on_gpu = next(model.parameters()).device.type == "cuda"
        if not passed and on_gpu:
            notes.append("check_amp: the untrained model's FP32 and AMP outputs differ and its fallback (yolov5n.pt) "
                         "needs the network; AMP kept on, as the estimate assumes")  # fmt: skip
        return passed or on_gpu

    train_module.check_amp, general.check_font = check_amp, lambda *args, **kwargs: None
    for module in asking_hub:
        module.attempt_download_from_hub = lambda *args, **kwargs: None  # "not on the hub": the local file is used
    try:
        yield
    finally:
        train_module.check_amp, general.check_font = original_amp, original_font
        for module, original in zip(asking_hub, original_hub):
            module.attempt_download_from_hub = original
