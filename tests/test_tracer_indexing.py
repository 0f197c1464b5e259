"""Boolean-mask indexing of fake tensors, as Ultralytics' assigner and loss do before 8.4.134
(``bbox_scores[mask_gt] = pd_scores[...][mask_gt]``), traces like a real run.

Ground truth: the same function on real tensors under a ``Tracer(fake=False)``. Before the tracer
turned boolean indices into integer ones, the fake run raised ``DynamicOutputShapeException``
(``aten.nonzero``): the fake mode cannot size a boolean index, not even a real mask it was handed.
"""

from __future__ import annotations

import torch

from yolomem.trace.tracer import DataOracle, Tracer


def _assigner_like_step(tracer: Tracer) -> None:
    scores = torch.ones(2, 50, 3)  # model output: fake in the fake trace
    with tracer.phase("loss"):  # targets and masks: small, made real by the tracer
        mask = torch.zeros(2, 50, dtype=torch.bool)
        mask[0, :7] = True
        mask[1, 10:30] = True
        picked = scores[mask]  # fake[real mask]: (27, 3)
        dense = torch.zeros(2, 50, 3)  # real; a fake value written into it taints it
        dense[mask] = picked * 2
        positive = scores[..., 0] > 0  # a fake mask: the oracle says how many are True
        chosen = scores[positive]  # (100, 3) with the oracle's answer below
        total = picked.sum() + dense.sum() + chosen.sum()
        del picked, dense, chosen, total


def _sizes(tracer: Tracer) -> list[tuple[str, int]]:
    return [(event.op, event.nbytes) for event in tracer.result().events]


def test_boolean_masks_index_fake_tensors_like_real_ones():
    with Tracer(fake=False) as real:
        _assigner_like_step(real)
    with Tracer(fake=True, oracle=DataOracle(positives=100)) as fake:
        _assigner_like_step(fake)
    assert len(_sizes(real)) > 8
    assert _sizes(fake) == _sizes(real)
    # the fake mask's count is an assumption, and is listed as one
    assert [a.question for a in fake.oracle_answers] == ["nonzero(bool[2, 50])"]


def test_scalar_reads_go_through_the_oracle_by_tensor():
    class ByDtype(DataOracle):
        def scalar_for(self, tensor):
            return {torch.bool: True, torch.int64: 7}.get(tensor.dtype, 0.0)

    with Tracer(fake=True, oracle=ByDtype()) as fake:
        values = torch.ones(4, 5)
        with fake.phase("loss"):
            read = (bool(values.max() > 1), int((values > 0).sum()), float(values.sum()))
    assert read == (True, 7, 0.0)


def _loss_items(tracer: Tracer) -> torch.Tensor:
    """Ultralytics 8.3's RT-DETR loss: ``torch.as_tensor([loss[k].detach() for k in ...], device=...)``."""
    losses = torch.ones(8, 4).sum(1)  # fake in the fake trace
    items = [losses[i].detach() for i in range(3)]
    return torch.as_tensor(items, device=losses.device)


def test_a_tensor_from_fake_scalars_is_one_allocation_like_a_real_one():
    """``torch.as_tensor`` reads each value from its data, which a fake tensor lacks ("its data is not
    allocated yet"): RT-DETR failed on Ultralytics 8.3. Under ``tensors_from_fake_scalars`` it makes
    the same tensor through the tracer, and the trace equals a real run's."""
    from yolomem.loops.base import tensors_from_fake_scalars

    with Tracer(fake=False) as real:
        real_items = _loss_items(real)
    with Tracer(fake=True) as fake, tensors_from_fake_scalars():
        fake_items = _loss_items(fake)
    assert (fake_items.shape, fake_items.dtype, fake_items.requires_grad) == (real_items.shape, real_items.dtype, False)
    assert _sizes(fake) == _sizes(real)
    assert torch.as_tensor([1.0, 2.0]).tolist() == [1.0, 2.0]  # restored on exit


class _DistinctAsReal(DataOracle):
    """The real run's distinct counts, so that only the shapes of what the unique ops return are compared."""

    def __init__(self, counts):
        super().__init__()
        self.counts = list(counts)

    def unique_count(self, shape):
        return self.counts.pop(0)


def _unique_calls(tracer: Tracer) -> None:
    values = torch.ones(6, 2)  # fake in the fake trace: the distinct count is the oracle's
    with tracer.phase("loss"):
        keys = values[:, 0].long() * 3
        kept = [torch.unique(keys), torch.unique(keys, return_inverse=True),  # YOLO26-seg's assigner
                torch.unique(keys, return_counts=True), torch.unique(keys, return_inverse=True, return_counts=True)]
        del kept


def test_unique_returns_inverse_and_counts_only_when_asked_for():
    """``torch.unique(x)`` (``aten._unique2``) allocates an empty inverse and counts; a fake trace that
    sized them as full tensors differed from a real run at the first call."""
    with Tracer(fake=False) as real:
        _unique_calls(real)
    with Tracer(fake=True, oracle=_DistinctAsReal([1] * 4)) as fake:
        _unique_calls(fake)
    assert sum(op == "alloc" and n == 0 for op, n in _sizes(real)) == 4  # the empty ones are there, to compare
    assert _sizes(fake) == _sizes(real)
