"""The measuring process: ``python -m yolomem.measure.worker --request REQ.json --out PREFIX``.

Started by ``yolomem.measure.run`` in a fresh process per config (under ``torch.distributed.run`` for
DDP; each rank is one worker). It writes ``PREFIX.rank{R}.json`` (a ``RankMeasurement``) and exits
0, or 1 if the run failed; an out-of-memory run is a result (status "oom"), not a crash.

``step=train``: real Ultralytics training (``YOLO(cfg).train(...)``, one epoch of ``iterations``
batches, then Ultralytics' validation and its final validation of ``best.pt``) with callbacks that
split the run into phases and read the memory counters at each boundary:

    (start) setup -> on_train_start -> train -> on_train_epoch_end -> epoch_end -> on_val_start -> val
            -> on_val_end -> save -> on_val_start -> final_val -> on_val_end -> teardown -> (end)

``framework=yolov5``: the yolov5 repo's ``train.py`` (the ``yolov5`` package), with the same phases
(``yolomem.measure.yolov5_train``).

``step=fwd_bwd``: Ultralytics' AutoBatch probe for one batch size: the model on the GPU, then
``profile_ops`` on a deep copy under the training autocast, exactly as ``check_train_batch_size`` does.

Offline: ``YOLO_OFFLINE=1`` (set by the parent) makes Ultralytics' ``is_online()`` false. Two calls would
still fetch files, so ``offline_ultralytics()`` replaces them for the run and restores them after:
``check_amp`` (downloads yolo26n.pt to compare AMP outputs: answered as offline, so AMP is taken as
working, as Ultralytics itself does offline; its card check still runs) and ``check_font`` in
``check_det_dataset`` (downloads Arial.ttf; only plots use the font and plots are off).

The memory counters come from a ``MemorySource``; ``CudaMemory`` reads torch.cuda and NVML. Tests
inject a fake one and drive the same code on the CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import traceback
from copy import deepcopy
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from yolomem.config.settings import EstimateConfig
from yolomem.measure.run import EXACT_AUGMENT, Environment, PhaseMemory, RankMeasurement, rank_output_path


@dataclass(frozen=True)
class Reading:
    """One read of the counters, in bytes."""

    max_allocated_bytes: int
    max_reserved_bytes: int
    reserved_bytes: int
    nvml_used_bytes: int | None = None
    nvml_process_bytes: int | None = None


class MemorySource(Protocol):
    def reset_peaks(self) -> None: ...
    def read(self) -> Reading: ...
    def reserved(self) -> int: ...
    def nvml_used(self) -> int | None: ...
    def environment(self) -> Environment: ...


class CudaMemory:
    """torch.cuda counters for one device, plus NVML (nvidia-ml-py, imported lazily) when installed."""

    def __init__(self, device_index: int):
        self.index = device_index
        self._nvml = None
        self._handle = None
        self.notes: list[str] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = self._nvml_handle(pynvml)
        except Exception as error:  # noqa: BLE001 - NVML is optional: record why it is missing
            self.notes.append(f"NVML unavailable ({type(error).__name__}: {error}); install nvidia-ml-py")
            self._nvml = None

    def _nvml_handle(self, pynvml):
        # CUDA's device order can differ from NVML's (CUDA_VISIBLE_DEVICES); match by UUID when torch has it
        import torch

        uuid = getattr(torch.cuda.get_device_properties(self.index), "uuid", None) if torch.cuda.is_initialized() else None
        if uuid is not None:
            text = str(uuid)
            return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        order = [v.strip() for v in visible.split(",") if v.strip()]
        physical = int(order[self.index]) if order and order[self.index].isdigit() else self.index
        return pynvml.nvmlDeviceGetHandleByIndex(physical)

    def rebind_after_cuda_init(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                self._handle = self._nvml_handle(self._nvml)

    def reset_peaks(self) -> None:
        import torch

        torch.cuda.reset_peak_memory_stats(self.index)

    def reserved(self) -> int:
        import torch

        return int(torch.cuda.memory_reserved(self.index))

    def nvml_used(self) -> int | None:
        if self._nvml is None:
            return None
        return int(self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used)

    def _process_used(self) -> int | None:
        if self._nvml is None:
            return None
        try:
            processes = self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle)
        except Exception:  # noqa: BLE001 - not supported on every driver / inside some containers
            return None
        mine = [p for p in processes if p.pid == os.getpid()]
        used = mine[0].usedGpuMemory if mine else None
        return int(used) if used else None

    def read(self) -> Reading:
        import torch

        torch.cuda.synchronize(self.index)
        return Reading(
            max_allocated_bytes=int(torch.cuda.max_memory_allocated(self.index)),
            max_reserved_bytes=int(torch.cuda.max_memory_reserved(self.index)),
            reserved_bytes=int(torch.cuda.memory_reserved(self.index)),
            nvml_used_bytes=self.nvml_used(),
            nvml_process_bytes=self._process_used(),
        )

    def environment(self) -> Environment:
        import torch
        import ultralytics

        from yolomem import __version__

        properties = torch.cuda.get_device_properties(self.index)
        driver = None
        if self._nvml is not None:
            with contextlib.suppress(Exception):
                driver = self._nvml.nvmlSystemGetDriverVersion()
                driver = driver.decode() if isinstance(driver, bytes) else str(driver)
        return Environment(
            gpu_name=properties.name, gpu_total_bytes=int(properties.total_memory), driver=driver,
            cuda=torch.version.cuda, torch=torch.__version__, ultralytics=ultralytics.__version__,
            yolomem=__version__, python=platform.python_version(),
        )  # fmt: skip


class PhaseRecorder:
    """Splits a run into named phases: ``mark(name)`` closes the current phase and opens the next."""

    def __init__(self, source: MemorySource):
        self.source = source
        self.phases: dict[str, PhaseMemory] = {}
        self.reserved_per_iteration: list[int] = []
        self.current: str | None = None

    def mark(self, name: str | None) -> None:
        if self.current is not None:
            reading = self.source.read()
            self.phases[self.current] = PhaseMemory(
                max_allocated_bytes=reading.max_allocated_bytes,
                max_reserved_bytes=reading.max_reserved_bytes,
                reserved_end_bytes=reading.reserved_bytes,
                nvml_used_bytes=reading.nvml_used_bytes,
                nvml_process_bytes=reading.nvml_process_bytes,
            )
        if name is not None:
            if name in self.phases:
                raise RuntimeError(f"phase {name!r} was already recorded")
            self.source.reset_peaks()
        self.current = name

    def iteration_end(self) -> None:
        self.reserved_per_iteration.append(self.source.reserved())

    def finish(self) -> None:
        self.mark(None)


class UltralyticsPhases:
    """Ultralytics callbacks -> phase marks (see the module docstring for the order)."""

    VAL_PHASES = ("val", "final_val")
    AFTER_VAL = ("save", "teardown")

    def __init__(self, recorder: PhaseRecorder):
        self.recorder = recorder
        self.trainer = None
        self._vals = 0

    def attach(self, model) -> None:
        model.add_callback("on_train_start", self.on_train_start)
        model.add_callback("on_train_batch_end", lambda trainer: self.recorder.iteration_end())
        model.add_callback("on_train_epoch_end", lambda trainer: self.recorder.mark("epoch_end"))
        model.add_callback("on_val_start", self.on_val_start)
        model.add_callback("on_val_end", self.on_val_end)

    def on_train_start(self, trainer) -> None:
        self.trainer = trainer
        self.recorder.mark("train")

    def on_val_start(self, validator) -> None:
        index = min(self._vals, len(self.VAL_PHASES) - 1)
        name = self.VAL_PHASES[index] if self._vals < len(self.VAL_PHASES) else f"val{self._vals + 1}"
        self.recorder.mark(name)

    def on_val_end(self, validator) -> None:
        name = self.AFTER_VAL[self._vals] if self._vals < len(self.AFTER_VAL) else f"after_val{self._vals + 1}"
        self._vals += 1
        self.recorder.mark(name)


@contextlib.contextmanager
def offline_ultralytics():
    """Replace Ultralytics' two download-on-use checks for the duration of a run (see module docstring)."""
    import ultralytics.data.utils as data_utils
    import ultralytics.engine.trainer as trainer_module

    saved = (trainer_module.check_amp, data_utils.check_font)
    trainer_module.check_amp = _offline_check_amp(trainer_module.check_amp)
    data_utils.check_font = lambda font="Arial.ttf": None
    try:
        yield
    finally:
        trainer_module.check_amp, data_utils.check_font = saved


def _offline_check_amp(check_amp):
    """The release's own ``check_amp`` with its model download answered as offline: it then keeps AMP on,
    as Ultralytics does offline, but the card check before it still runs (8.3.47+: a GTX 16xx, T400-T2000
    or K40m trains in FP32, as the estimate with that gpu= does)."""
    def check(model):
        import ultralytics

        def offline(*args, **kwargs):
            raise ConnectionError("yolomem measure runs offline")

        saved = ultralytics.YOLO
        ultralytics.YOLO = offline
        try:
            return check_amp(model)
        finally:
            ultralytics.YOLO = saved

    return check


def train_arguments(config: EstimateConfig, data_yaml: str, augment: str, device: str, project: str) -> dict:
    """The keyword arguments of ``YOLO.train`` for a measurement (no plots, one epoch, no workers)."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    from yolomem.loops.ultralytics.release import known_arguments

    amp = {"fp16": True, "fp32": False, "bf16": "bf16"}[config.amp]
    # releases before 8.4 take multi_scale as a bool (and reject a float)
    multi_scale = bool(config.multi_scale) if isinstance(DEFAULT_CFG_DICT.get("multi_scale"), bool) else config.multi_scale
    arguments = {
        "data": data_yaml, "epochs": 1, "batch": config.batch, "imgsz": config.imgsz, "amp": amp,
        "optimizer": config.optimizer, "nbs": config.nbs, "freeze": list(config.freeze) or None,
        "multi_scale": multi_scale, "seed": config.seed, "workers": 0, "plots": False, "val": True,
        "device": device, "project": project, "name": "run", "exist_ok": True, "verbose": False,
        "mosaic": config.mosaic, "close_mosaic": config.close_mosaic, "scale": config.scale,
        "translate": config.translate, "single_cls": config.single_cls,
    }  # fmt: skip
    if augment == "exact":
        arguments.update(EXACT_AUGMENT)
    return known_arguments(arguments)  # a key the release lacks would stop its train


def run_rank(request: dict, rank: int, workdir: Path, source_factory, device: str | None = None) -> RankMeasurement:
    """Measure one rank. ``source_factory(device_index)`` makes the MemorySource (CudaMemory on a GPU)."""
    config = EstimateConfig.from_json(request["config"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    source = source_factory(local_rank)
    nvml_before = source.nvml_used()  # before this process touches CUDA
    recorder = PhaseRecorder(source)
    notes = list(getattr(source, "notes", []))
    environment = Environment()
    batch_used = None
    status, error = "ok", None
    try:
        _init_device(device, local_rank, source)
        history = HistoryWindow(request.get("history"), int(request.get("history_iterations", 2)), notes)
        history.start()
        environment = source.environment()
        recorder.mark("setup")
        with offline_ultralytics():
            if config.step == "fwd_bwd":
                notes.append(_run_fwd_bwd(config, recorder, device or f"cuda:{local_rank}"))
                history.write()
                batch_used = config.batch
            elif config.framework == "yolov5":
                batch_used = _run_yolov5_train(config, request, recorder, workdir / f"rank{rank}",
                                               device or f"cuda:{local_rank}", notes, history)  # fmt: skip
            else:
                batch_used = _run_train(config, request, recorder, workdir / f"rank{rank}", device, notes, history)
    except Exception as caught:  # noqa: BLE001 - every failure becomes a recorded result
        status = "oom" if _is_oom(caught) else "error"
        error = f"{type(caught).__name__}: {str(caught).splitlines()[0] if str(caught) else ''}"[:500]
        traceback.print_exc(file=sys.stderr)
    if recorder.current is not None:
        with contextlib.suppress(Exception):
            recorder.finish()
    return RankMeasurement(
        rank=rank, status=status, error=error, phases=dict(recorder.phases),
        reserved_per_iteration=tuple(recorder.reserved_per_iteration), nvml_used_before_bytes=nvml_before,
        batch_used=batch_used, environment=environment, notes=tuple(notes),
    )  # fmt: skip


class HistoryWindow:
    """The GPU's allocation history (``yolomem.measure.history``) from CUDA's start to the end of training
    iteration ``iterations`` (or of the AutoBatch probe), when the request names a file for it."""

    def __init__(self, path: str | None, iterations: int, notes: list[str]):
        self.path, self.iterations, self.notes = path, iterations, notes
        self.seen = 0
        self.recording = False

    def start(self) -> None:
        if not self.path:
            return
        from yolomem.measure.history import start_recording

        try:
            start_recording()
            self.recording = True
        except Exception as error:  # noqa: BLE001 - as in write(): no history, the measurement goes on
            self.notes.append(f"allocation history not recorded ({type(error).__name__}: {error})")

    def iteration_end(self) -> None:
        self.seen += 1
        if self.seen == self.iterations:
            self.write()

    def write(self) -> None:
        if not self.recording:
            return
        from yolomem.measure.history import backend_settings, write_history

        self.recording = False
        try:
            count = write_history(self.path, {"iterations": self.seen, "backends": backend_settings()})
            self.notes.append(f"allocation history: {count} events to {Path(self.path).name}")
        except Exception as error:  # noqa: BLE001 - the history is extra: the measurement goes on without it
            self.notes.append(f"allocation history not written ({type(error).__name__}: {error})")


def _init_device(device: str | None, local_rank: int, source) -> None:
    if device == "cpu":
        return
    import torch

    torch.cuda.set_device(local_rank)
    torch.zeros(1, device=f"cuda:{local_rank}")  # start the CUDA context now, before phase "setup"
    if hasattr(source, "rebind_after_cuda_init"):
        source.rebind_after_cuda_init()


def _run_train(config: EstimateConfig, request: dict, recorder: PhaseRecorder, workdir: Path,
               device: str | None, notes: list[str], history: HistoryWindow | None = None) -> int | None:
    from ultralytics import YOLO

    from yolomem.loops import resolve_model

    resolved = resolve_model(config.model)
    iterations = int(request["iterations"])
    data_yaml = _dataset(config, resolved, iterations, workdir, notes)
    phases = UltralyticsPhases(recorder)
    model = YOLO(_model_source(resolved, config), task=resolved.task)
    phases.attach(model)
    if history is not None:
        model.add_callback("on_train_batch_end", lambda trainer: history.iteration_end())
    ddp_devices = ",".join(str(i) for i in range(config.world_size))
    model.train(**train_arguments(config, data_yaml, request["augment"], device or ddp_devices, str(workdir / "runs")))
    _note_backends(device, notes)
    _check_iterations(config, recorder, iterations, notes)
    trainer = phases.trainer
    return int(trainer.batch_size) if trainer is not None else None


def _run_yolov5_train(config: EstimateConfig, request: dict, recorder: PhaseRecorder, workdir: Path, device: str,
                      notes: list[str], history: HistoryWindow | None = None) -> int:  # fmt: skip
    """``framework=yolov5``: the repo's train.py on the same data, in the same phases (``yolov5_train``)."""
    from yolomem.loops import resolve_model
    from yolomem.loops.yolov5.runner import original_of
    from yolomem.measure.yolov5_train import run_train

    iterations = int(request["iterations"])
    resolved = resolve_model(config.model, "yolov5")
    data_yaml = _dataset(config, resolved, iterations, workdir, notes)

    def iteration_end() -> None:
        recorder.iteration_end()
        if history is not None:
            history.iteration_end()

    augment = EXACT_AUGMENT if request["augment"] == "exact" else {}
    batch_used = run_train(config, original_of(resolved).name, data_yaml, augment, device, workdir / "runs",
                           UltralyticsPhases(recorder), iteration_end, notes)  # fmt: skip
    _note_backends(device, notes)
    _check_iterations(config, recorder, iterations, notes)
    return batch_used


def _note_backends(device: str | None, notes: list[str]) -> None:
    if device != "cpu":
        from yolomem.measure.history import backend_settings

        notes.append(f"backends after training: {backend_settings()}")


def _dataset(config: EstimateConfig, resolved, iterations: int, workdir: Path, notes: list[str]) -> str:
    """The data YAML to train on: the user's ``data=``, or a synthetic dataset of ``iterations`` batches."""
    from yolomem.measure.synthetic_dataset import SyntheticDatasetSpec, write_synthetic_dataset
    from yolomem.result.prepare import class_count

    if config.data:
        notes.append(f"data={config.data}: the user's dataset; iterations are not limited by yolomem")
        return config.data
    spec = SyntheticDatasetSpec(
        task=resolved.task, imgsz=config.imgsz, train_images=iterations * config.batch,
        val_images=2 * config.batch, instances=config.instances,
        # the classes the estimate builds the model with (the task's default data where none is given)
        nc=class_count(config, resolved)[0].nc or resolved.nc or int(resolved.cfg.get("nc") or 80),
        seed=config.seed, kpt_shape=resolved.kpt_shape,
        # a densest image no denser than the mean: every image holds exactly that many objects
        distribution="fixed" if config.max_instances == round(config.instances) else "poisson",
    )  # fmt: skip
    return str(write_synthetic_dataset(workdir / "data", spec).data_yaml)


def _check_iterations(config: EstimateConfig, recorder: PhaseRecorder, iterations: int, notes: list[str]) -> None:
    if len(recorder.reserved_per_iteration) != iterations and not config.data:
        notes.append(f"ran {len(recorder.reserved_per_iteration)} iterations, not {iterations}")


def _model_source(resolved, config: EstimateConfig) -> str:
    """What ``YOLO()`` should load: the user's local file, or the shipped YAML (no download either way)."""
    if resolved.source in {"local-yaml", "checkpoint"}:
        return config.model
    return f"{resolved.name}.yaml"


def _run_fwd_bwd(config: EstimateConfig, recorder: PhaseRecorder, device: str) -> str:
    """Ultralytics' AutoBatch probe at one batch size (utils/autobatch.py: check_train_batch_size)."""
    import torch
    from ultralytics.utils.torch_utils import autocast, profile_ops

    from yolomem.loops import resolve_model
    from yolomem.loops.ultralytics.step import build_model

    resolved = resolve_model(config.model)
    model = build_model(resolved.cfg, resolved.task, config.nc or resolved.nc).to(device)  # the trainer's copy
    amp = torch.bfloat16 if config.amp == "bf16" else config.amp == "fp16"
    channels = int(resolved.cfg.get("channels", 3))
    recorder.mark("fwd_bwd")
    with autocast(enabled=amp, device=torch.device(device).type):
        image = torch.empty(config.batch, channels, config.imgsz, config.imgsz)  # (B, C, H, W), moved by profile_ops
        results = profile_ops([image], deepcopy(model).train(), n=1, device=device)
    recorder.iteration_end()  # memory_reserved after fwd+bwd: the figure AutoBatch fits its line to
    if not results or results[0] is None:
        raise RuntimeError("Ultralytics' profile_ops failed for this batch (see its log)")
    return f"AutoBatch probe: profile_ops reported {results[0][2]:.3f} GiB reserved"


def _is_oom(error: BaseException) -> bool:
    try:
        import torch

        if isinstance(error, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    return "out of memory" in str(error).lower()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m yolomem.measure.worker")
    parser.add_argument("--request", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path, help="output prefix; writes PREFIX.rank{R}.json")
    options = parser.parse_args(argv)
    request = json.loads(options.request.read_text())
    rank = int(os.environ.get("RANK", 0))
    with tempfile.TemporaryDirectory(prefix=f"yolomem-worker-{rank}-") as tmp:
        result = run_rank(request, rank, Path(tmp), CudaMemory)
    rank_output_path(options.out, rank).write_text(json.dumps(result.to_json()))
    return 0 if result.status == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
