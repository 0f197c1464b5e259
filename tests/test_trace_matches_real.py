"""The fake trace allocates exactly what a real CPU execution of the same training step allocates.

Ground truth: the same Ultralytics iteration on real CPU tensors, recorded by the same Tracer with
``fake=False``. The data-dependent answers the fake trace must assume (how many foreground anchors
the assigner picked, what ``if fg_mask.sum():`` reads) are taken from the real run for this
comparison, so any difference left would be a tracing error. One test instead lets the estimate's
own oracle answer the scalar reads, to check it takes the branches a batch with objects takes.

CI runs this file against every Ultralytics release of its matrix (``.ci/ultralytics_matrix.py``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import traceback
from collections.abc import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from yolomem.config.settings import EstimateConfig
from yolomem.loops import resolve_model
from yolomem.loops import trace_run
from yolomem.loops.ultralytics.models import shipped_model_names
from yolomem.loops.ultralytics.step import UltralyticsOracle

_BOOLEAN_INDEXING = (torch.ops.aten.index.Tensor, torch.ops.aten.index_put_.default, torch.ops.aten.index_put.default)


def _site():
    """The innermost Ultralytics line on the stack: where a scalar is read."""
    frames = [f for f in traceback.extract_stack() if "ultralytics" in f.filename and "yolomem" not in f.filename]
    return (frames[-1].filename, frames[-1].lineno) if frames else None


class _Recorder(TorchDispatchMode):
    """Records, in a real run, the size of every nonzero(), masked_select() and unique() result (also the
    nonzero a boolean index stands for) and every scalar read with the line that read it (``tolist`` reads each
    element of a fake tensor, but a real one's without dispatching: ``_ListReads`` sees those)."""

    def __init__(self):
        super().__init__()
        self.counts: list[tuple[tuple[int, ...], int]] = []
        self.uniques: list[tuple[tuple[int, ...], int]] = []
        self.scalars: list[tuple[object, object]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.ops.aten.nonzero.default:
            self.counts.append((tuple(args[0].shape), out.shape[0]))
        elif func is torch.ops.aten.masked_select.default:  # the tracer asks it as the mask's nonzero (BboxLoss to 8.0.7x)
            self.counts.append((tuple(args[1].shape), out.shape[0]))
        elif func is torch.ops.aten._unique2.default:
            self.uniques.append((tuple(args[0].shape), out[0].shape[0]))
        elif func in _BOOLEAN_INDEXING:
            for index in args[1]:
                if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
                    self.counts.append((tuple(index.shape), int(index.count_nonzero())))
        elif func is torch.ops.aten._local_scalar_dense.default:
            self.scalars.append((_site(), out))
        return out

    def oracle(self, decide: bool = False) -> _ReplayOracle:
        """The fake run's oracle: this real run's answers, replayed."""
        return _ReplayOracle(self.counts, self.scalars, decide=decide, uniques=self.uniques)


@contextlib.contextmanager
def recording() -> Iterator[_Recorder]:
    """Record a real run's data-dependent answers (``recorder.oracle()`` replays them)."""
    recorder = _Recorder()
    with _ListReads(recorder), recorder:
        yield recorder


class _ListReads(TorchFunctionMode):
    """``Tensor.tolist()`` in the real run: each element, as the scalar read a fake tensor makes of it."""

    def __init__(self, recorder: _Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func is torch.Tensor.tolist:
            site = _site()
            self.recorder.scalars.extend((site, value) for value in _flat(out))
        return out


def _flat(values) -> list:
    """A ``tolist()`` result's elements in order (no tensor: the tracer would see it)."""
    return [x for v in values for x in _flat(v)] if isinstance(values, list) else [values]


class _ReplayOracle(UltralyticsOracle):
    """Answers each fake nonzero() with the count the real run produced for the same shape, and each
    scalar read with the value the real run read at the same line. With ``decide=True`` the estimate's
    own oracle answers the boolean reads (which branch), and its integer and float answers must be as
    true or false as the real ones (the real value is used: a count must agree with the replayed
    nonzero counts)."""

    def __init__(self, counts, scalars, decide: bool = False, uniques=()):
        super().__init__()
        self._counts = list(counts)
        self._uniques = list(uniques)
        self._scalars = list(scalars)
        self._decide = decide

    def unique_count(self, shape):
        for index, (recorded_shape, count) in enumerate(self._uniques):
            if recorded_shape == tuple(shape):
                del self._uniques[index]
                return count
        raise AssertionError(f"the fake trace asked about unique{tuple(shape)}, which the real run never computed")

    def nonzero_count(self, shape, image=None):
        for index, (recorded_shape, count) in enumerate(self._counts):
            if recorded_shape == tuple(shape):
                del self._counts[index]
                return count
        raise AssertionError(f"the fake trace asked about nonzero{tuple(shape)}, which the real run never computed")

    def scalar_for(self, tensor):
        site = _site()
        real = self._drop(site)
        if not self._decide:
            return real
        own = super().scalar_for(tensor)
        if tensor.dtype == torch.bool:
            return own  # the branch the estimate takes
        assert bool(own) == bool(real), f"at {site} the estimate reads {own}, the real batch {real}"
        return real  # a count: it must agree with the replayed nonzero counts

    def _drop(self, site):
        for index, (recorded, value) in enumerate(self._scalars):
            if recorded == site:
                del self._scalars[index]
                return value
        raise AssertionError(f"the fake trace read a scalar at {site}, which the real run never read there")


@functools.cache  # the same config's streams serve several tests (CI runs this file per release)
def _streams(config: EstimateConfig, *, decide: bool = False):
    torch.manual_seed(0)
    resolved = resolve_model(config.model)
    with recording() as recorder:
        real = trace_run(config, resolved, fake=False).trace
    fake = trace_run(config, resolved, fake=True, oracle=recorder.oracle(decide)).trace
    return real, fake


def _sizes(trace):
    """Tensor storages only: kernel workspaces (yolomem.trace.workspaces) belong to CUDA kernels, which
    the fake trace adds and a CPU run cannot have."""
    return [(e.op, e.nbytes) for e in trace.events if not e.category.endswith("_workspace")]


def _categories(trace):
    return [e.category for e in trace.events if not e.category.endswith("_workspace")]


def _peak_live(trace) -> int:
    live = peak = 0
    for event in trace.events:
        if event.category.endswith("_workspace"):
            continue
        live += event.nbytes if event.op == "alloc" else -event.nbytes
        peak = max(peak, live)
    return peak


@pytest.mark.parametrize("imgsz", [64, 128])
def test_fp32_training_step_allocates_like_a_real_run(imgsz):
    config = EstimateConfig(model="yolov8n.yaml", batch=2, imgsz=imgsz, amp="fp32", iterations=2, instances=3)
    real, fake = _streams(config)
    assert len(real.events) > 1000  # a whole iteration was traced, not a stub
    assert _sizes(fake) == _sizes(real)
    assert _peak_live(fake) == _peak_live(real)
    assert _categories(fake) == _categories(real)


@pytest.mark.parametrize("model", ["yolo26n.yaml", "yolo26n-seg.yaml"])
def test_yolo26_training_step_allocates_like_a_real_run(model):
    """YOLO26 (8.4.0+): an end-to-end head with two losses; for segmentation, the batch's semantic masks,
    a semantic-mask loss, and an assigner that decodes each candidate anchor's mask, sized by
    ``unique``, ``bincount`` and a ``tolist()`` of counts (all data-dependent)."""
    if model not in shipped_model_names():
        pytest.skip(f"{model} is newer than the installed ultralytics")
    config = EstimateConfig(model=model, batch=2, imgsz=128, amp="fp32", iterations=2, instances=3)
    real, fake = _streams(config)
    assert len(real.events) > 1000
    assert _sizes(fake) == _sizes(real)
    assert _categories(fake) == _categories(real)


def test_estimate_oracle_takes_the_branches_a_batch_with_objects_takes():
    """Segmentation: ``if fg_mask.sum():`` guards the mask loss (all releases), ``if fg_mask_i.any():``
    each image's (older releases), and the assigner branches on ``fg_mask.max() > 1`` (up to 8.4.133);
    with dense, overlapping objects in every image the estimate's answers take the real run's branches.
    ``max(target_scores.sum(), 1)`` (up to 8.4.x) gets 1 where the real run keeps the 4-byte sum alive
    until backward: the same allocations, one 4-byte lifetime apart."""
    from ultralytics.utils.tal import TaskAlignedAssigner

    if "roll_out_thr" in inspect.signature(TaskAlignedAssigner.__init__).parameters:
        pytest.skip("up to 8.0.51 the assigner takes the top-k of align_metric * mask_in_gts over every anchor: the "
                    "real run, at random initial weights, finds no foreground in two images of the dense batch "
                    "(8.0.35, 8.0.44), where the estimate assumes some and keeps their mask loss")  # fmt: skip
    # batch 3: ultralytics 8.4.0's segmentation loss reads len(proto) == 2 as "a (proto, semantic) pair",
    # so batch 2 fails there, in real training too
    config = EstimateConfig(model="yolov8n-seg.yaml", batch=3, imgsz=128, amp="fp32", iterations=1, instances=12)
    real, fake = _streams(config, decide=True)
    allocs = lambda trace: sorted(n for op, n in _sizes(trace) if op == "alloc")  # noqa: E731 - tensors, no workspaces
    assert len(real.events) > 1000
    assert allocs(fake) == allocs(real)
    assert abs(_peak_live(fake) - _peak_live(real)) <= 64


def test_real_run_sees_optimizer_state_and_gradients():
    config = EstimateConfig(model="yolov8n.yaml", batch=2, imgsz=64, amp="fp32", iterations=2, instances=3)
    real, _ = _streams(config)
    categories = {e.category for e in real.events if e.op == "alloc"}
    assert {"parameter", "gradient", "optimizer_state", "ema", "activation", "loss", "input"} <= categories
