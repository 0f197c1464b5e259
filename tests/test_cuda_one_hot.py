"""``F.one_hot`` in a trace is computed as CUDA computes it (yolomem.loops.base.cuda_one_hot): the same
values as torch's own one_hot, made by one ``zeros`` and an in-place ``scatter_``, without the CPU
kernel's ``aminmax`` read of the values. Ultralytics' assigner used it up to 8.0.95 (CI's matrix traces
8.0.59 and 8.0.70 against real runs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from yolomem.loops.base import cuda_one_hot


class _Ops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_values_are_torchs_and_the_ops_are_cudas():
    index = torch.tensor([[0, 3, 1], [4, 4, 2]])
    expected = F.one_hot(index, 5)
    with _Ops() as cpu:
        F.one_hot(index, 5)
    assert "aminmax.default" in cpu.names  # the CPU kernel reads the values first (then zeros and scatter_)
    with cuda_one_hot(), _Ops() as traced:
        got = F.one_hot(index, 5)
    assert torch.equal(got, expected) and got.dtype == expected.dtype
    assert [name.split(".")[0] for name in traced.names] == ["zeros", "unsqueeze", "scatter_"]


def test_an_unknown_class_count_is_left_to_torch():
    index = torch.tensor([2, 0])
    with cuda_one_hot():
        assert torch.equal(F.one_hot(index), F.one_hot(index, 3))  # num_classes=-1: the largest value + 1
