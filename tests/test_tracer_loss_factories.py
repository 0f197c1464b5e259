"""Which ``*_like`` factories of the loss make real tensors.

In the loss, a like-factory on a fake tensor makes a real one (when small), because the Python code
fills it with label data that later ops read (padded targets). A traced composite's own buffers are
kernel internals that meet only its inputs: they stay fake. Before, the segmentation loss's per-image
``binary_cross_entropy_with_logits`` ((n, 160, 160) float32, ~9 MB an image) made and filled a real
buffer each call: 2.4 GB of host memory an iteration at batch 256.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch._subclasses.fake_tensor import FakeTensor

from yolomem.trace.tracer import Tracer


def _bce_trace(phase: str):
    tracer = Tracer(fake=True, real_bytes_cap=256 << 20)
    with tracer:
        logits, target = torch.empty(90, 160, 160), torch.empty(90, 160, 160)  # fake: made outside the loss
        with tracer.phase(phase):
            loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
            assert isinstance(loss, FakeTensor)
            del loss
    return tracer.result()


def test_bce_in_the_loss_keeps_its_buffers_fake_and_traces_them_as_elsewhere():
    in_loss, elsewhere = _bce_trace("loss"), _bce_trace("forward")
    assert not in_loss.real_ids  # nothing of the composite was computed (or held) on the host
    sizes = [(e.op, e.nbytes) for e in in_loss.events]
    assert sizes == [(e.op, e.nbytes) for e in elsewhere.events]
    assert sizes.count(("alloc", 90 * 160 * 160 * 4)) == 4  # the two inputs, log_sigmoid's and the loss


def test_a_like_factory_of_the_loss_itself_is_still_real():
    tracer = Tracer(fake=True, real_bytes_cap=1 << 20)
    with tracer:
        scores = torch.empty(4, 100)
        with tracer.phase("loss"):
            targets = torch.zeros_like(scores)  # what the assigner fills with label data
            assert type(targets) is torch.Tensor
            assert targets.shape == (4, 100)
    assert tracer.result().real_ids
