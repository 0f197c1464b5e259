"""Boolean-mask indexing in a fake trace, and handing a fake allocation to real values.

``x[mask]`` has a size only the mask's values give. With a real mask the tracer knows it: a real ``x``
of any size is indexed for real (it is in memory already), a fake ``x`` is indexed at the mask's
positions. Before, a real ``x`` above ``real_bytes_cap`` went to the fake mode, which raised
``DynamicOutputShapeException: aten.nonzero`` (yolov5x at 1280, batch 3, ``epochs=2``: val.py's NMS).
"""

from __future__ import annotations

import torch

from yolomem.trace.tracer import Tracer


def _allocs(trace) -> list[int]:
    return [e.nbytes for e in trace.events if e.op == "alloc"]


def test_a_large_real_tensor_indexed_by_a_real_mask_runs_real():
    tracer = Tracer(fake=True, real_bytes_cap=1024)  # the (500, 85) predictions below are 170 kB
    with torch.utils._python_dispatch._disable_current_modes():
        x = torch.zeros(500, 85)
        mask = torch.arange(500) % 5 == 0  # 100 rows
    with tracer:
        tracer.track_existing([x, mask], "activation")
        kept = x[mask]
        assert type(kept) is torch.Tensor  # computed for real: NMS reads its values next
        assert kept.shape == (100, 85)
    assert _allocs(tracer.result())[-1] == 100 * 85 * 4


def test_a_fake_tensor_indexed_by_a_real_mask_takes_the_mask_count():
    tracer = Tracer(fake=True)
    with torch.utils._python_dispatch._disable_current_modes():
        mask = torch.tensor([True, False, True, True, False, False])
    with tracer:
        coefficients = torch.empty(6, 32)  # fake: a factory outside the loss phase
        picked = coefficients[mask]
        assert picked.shape == (3, 32)
        assert not tracer.oracle_answers  # nothing was assumed
    assert _allocs(tracer.result())[-1] == 3 * 32 * 4


def test_substitute_hands_the_allocation_to_the_real_tensor():
    tracer = Tracer(fake=True)
    with tracer:
        fake = torch.empty(4, 100)
        with torch.utils._python_dispatch._disable_current_modes():
            real = torch.ones(4, 100)
        tracer.substitute(fake, real)
        del fake  # on the GPU there is one tensor: its death records nothing
        events_before = len(tracer.result().events)
        del real
        events = tracer.result().events
    assert len(events) == events_before + 1
    assert [(e.op, e.nbytes) for e in events] == [("alloc", 1600), ("free", 1600)]
