"""Memory that cuBLAS and cuDNN take from the caching allocator inside an op, with no tensor to show.

The tracer sees the tensors an op returns. These libraries also ask PyTorch's caching allocator for
scratch memory, which ``memory_allocated()`` and ``memory_reserved()`` count like any block. The rules
below come from PyTorch's C++ (file and function named; ``shared/reference/kernel_workspaces.md``) and
were checked in the torch 2.14.1+cu130 wheel (``parseChosenWorkspaceSize`` disassembled).

cuBLAS, persistent. ``CublasHandlePool.cpp``: ``getCurrentCUDABlasHandle`` -> ``setWorkspaceForHandle``
gives each (thread, stream) one buffer of W bytes from the caching allocator at its first cuBLAS op
(mm, addmm, bmm, baddbmm; so matmul, linear, einsum) and never frees it. A training step has two such
threads on the default stream: the Python thread (forward, loss, validation) and the autograd engine's
device thread (backward). W: ``CUBLAS_WORKSPACE_CONFIG`` as ``:SIZE_KIB:COUNT`` pairs, summed; unset,
32 MiB on compute capability 9.x-12.x (torch 2.14; 9.0 only before 2.12) and 8,519,680 bytes
(``:4096:2:16:8``) otherwise. Ultralytics sets ``:4096:8`` in ``Model.__init__`` and in
``init_seeds(deterministic=True)``, its default; so does the yolov5 repo's ``init_seeds`` (v6.2+).

cuBLASLt. torch 2.13+: the same buffer as cuBLAS (``TORCH_CUBLASLT_UNIFIED_WORKSPACE`` unset): no bytes.
2.9-2.11: a separate persistent 1 MiB per (thread, stream). 2.4-2.8: 1 MiB per call, freed after it.
Calls: ``addmm`` with a 1-D bias (``gemm_and_bias``; a ``Linear`` with bias).

cuDNN convolution, transient. ``Conv_v8.cpp`` ``run_conv_plan``: after the output, the chosen plan's
workspace is allocated and freed before the op returns; the backward has one for grad_input and one for
grad_weight. Training runs in heuristic mode (Ultralytics never sets ``cudnn.benchmark`` for training;
yolov5 v6.0+ single-GPU neither). The size is cuDNN's, per GPU, version, dtype and shape: PyTorch's code
cannot give it. Measured (``validation/results/h200-2026-12-04/``, the H200's allocation histories,
cuDNN 9.19, deterministic as Ultralytics trains): most forward convolutions take 131 or 400 bytes, a
few up to twice their output (yolov8n at batch 16: 37 transient blocks in a FP32 forward, 135 MiB in
all); a whole backward of yolov8n, 204 transient blocks and 272 MiB. So:
- ``none`` (expected figure): no workspace. The ``layout`` rule used before (NHWC copies of the NCHW
  tensors, x + y per call) was about ten times what the GPU took.
- ``im2col`` (upper figure): the lowered matrix of cuDNN's explicit-GEMM algorithms,
  C/groups * kh * kw * Ho * Wo * N elements of x (forward, wgrad) or dy (dgrad); the largest workspace
  of the non-FFT algorithms, and what FP32 on cards without tensor-core FP32 (CC < 8.0) may use.
On a GPU either is elastic: when the allocation fails PyTorch tries the next plan, so a workspace never
causes an OOM on its own, but it raises ``memory_reserved`` where there is room.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

aten = torch.ops.aten

MiB = 1 << 20
CUBLAS_DEFAULT_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8  # ":4096:2:16:8" = 8,519,680
CUBLAS_LARGE_DEFAULT_BYTES = 32 * MiB  # default on compute capability 9.x-12.x (torch 2.14)
TRAINER_CUBLAS_CONFIG = ":4096:8"  # set by Ultralytics (Model.__init__, init_seeds) and yolov5 init_seeds
CUBLASLT_BYTES = 1 * MiB  # CUBLASLT_WORKSPACE_SIZE default, 1024 KiB

_CUBLAS_OPS = frozenset({aten.mm.default, aten.addmm.default, aten.bmm.default, aten.baddbmm.default,
                         aten.addbmm.default, aten.addmv.default, aten.mv.default})  # fmt: skip
_CONV_FORWARD = aten.convolution.default
_CONV_BACKWARD = aten.convolution_backward.default


def cublas_config_bytes(value: str | None, compute_capability: tuple[int, int] | None, torch_version: tuple[int, int]) -> int:
    """W for a ``CUBLAS_WORKSPACE_CONFIG`` value (None: unset), as ``parseChosenWorkspaceSize`` reads it.
    An unknown card (``compute_capability`` None) takes the larger default."""
    if value is not None:
        pairs = re.findall(r":([0-9]+):([0-9]+)", value)
        if pairs:
            return sum(int(size) * 1024 * int(count) for size, count in pairs)
    if compute_capability is None:
        return CUBLAS_LARGE_DEFAULT_BYTES
    major, minor = compute_capability
    if torch_version >= (2, 14):
        large = major in (9, 10, 11, 12)
    elif torch_version >= (2, 12):
        large = major in (9, 10, 12)
    else:
        large = (major, minor) == (9, 0)
    return CUBLAS_LARGE_DEFAULT_BYTES if large else CUBLAS_DEFAULT_BYTES


def cublaslt_kind(torch_version: tuple[int, int]) -> str:
    """How cuBLASLt takes its workspace: 'unified' (no bytes), 'persistent' or 'per_call' (1 MiB)."""
    if torch_version >= (2, 12):
        return "unified"
    if torch_version >= (2, 9):
        return "persistent"
    return "per_call"


@dataclass(frozen=True)
class WorkspaceRules:
    """What sizes the kernel workspaces of one traced run."""

    cublas_bytes: int
    cublas_source: str
    cublaslt: str  # cublaslt_kind()
    cudnn_expected: str  # "layout" | "none"
    cudnn_upper: str  # "im2col" | "layout"
    torch_version: tuple[int, int]

    def describe(self) -> dict[str, str]:
        """Where each breakdown line's size comes from, in words."""
        lt = {"unified": "0 bytes: shares the cuBLAS buffer (torch 2.13+, TORCH_CUBLASLT_UNIFIED_WORKSPACE unset)",
              "persistent": "1 MiB per (thread, stream), kept (torch 2.9-2.11)",
              "per_call": "1 MiB per Linear-with-bias call, freed after it (torch 2.4-2.8)"}[self.cublaslt]  # fmt: skip
        return {
            "cublas_workspace": f"{self.cublas_bytes / MiB:g} MiB per (thread, stream) at the first matmul: "
                                f"forward thread + autograd thread; {self.cublas_source}",
            "cublaslt_workspace": lt,
            "cudnn_workspace": "per conv call, freed on return: none (expected; an H200 measured a few hundred "
                               "bytes for most calls), the explicit-GEMM im2col matrix (upper); the line is what "
                               "it adds to the peak reserved",
        }  # fmt: skip


def rules_for(torch_version: str, compute_capability: tuple[int, int] | None = None,
              cublas_config: str | None = TRAINER_CUBLAS_CONFIG) -> WorkspaceRules:  # fmt: skip
    version = tuple(int(p) for p in re.findall(r"\d+", torch_version)[:2])
    w = cublas_config_bytes(cublas_config, compute_capability, version)
    source = (f"CUBLAS_WORKSPACE_CONFIG={cublas_config} (set by the trainer's init_seeds)" if cublas_config
              else "torch's default for the card")  # fmt: skip
    return WorkspaceRules(w, source, cublaslt_kind(version), "none", "im2col", version)


@dataclass(frozen=True)
class Block:
    """One workspace allocation: expected and upper sizes; transient blocks are freed at once."""

    nbytes: int
    upper_nbytes: int
    category: str
    transient: bool


def _bytes(tensor) -> int:
    return tensor.numel() * tensor.element_size() if isinstance(tensor, torch.Tensor) else 0


def _channels_last(tensor) -> bool:
    return isinstance(tensor, torch.Tensor) and tensor.dim() == 4 and not tensor.is_contiguous() and \
        tensor.is_contiguous(memory_format=torch.channels_last)


def _im2col(x: torch.Tensor, weight: torch.Tensor, out_spatial: tuple[int, ...], groups: int) -> int:
    """Elements of the lowered matrix: C/groups * prod(kernel) * prod(output spatial) * N, in x's dtype."""
    per_group_channels = weight.shape[1]  # weight (out, in/groups, kh, kw)
    kernel = 1
    for size in weight.shape[2:]:
        kernel *= size
    spatial = 1
    for size in out_spatial:
        spatial *= size
    return per_group_channels * groups * kernel * spatial * x.shape[0] * x.element_size()


class KernelWorkspaces:
    """Asked by the tracer after each op: the workspace blocks the CUDA kernels of that op would take."""

    def __init__(self, rules: WorkspaceRules):
        self.rules = rules
        self._blas_threads: set[str] = set()

    def reset(self) -> None:
        """Forget which threads hold a cuBLAS buffer (what ran while the model was built on the host)."""
        self._blas_threads.clear()

    def after(self, func, args, out, phase: str) -> list[Block]:
        if func is _CONV_FORWARD:
            return self._conv_forward(args, out)
        if func is _CONV_BACKWARD:
            return self._conv_backward(args, out)
        if func in _CUBLAS_OPS:
            return self._blas(func, args, phase)
        return []

    def _blas(self, func, args, phase: str) -> list[Block]:
        thread = "autograd" if phase == "backward" else "python"  # CUDA backward runs on the device thread
        blocks = []
        if thread not in self._blas_threads:
            self._blas_threads.add(thread)
            if self.rules.cublas_bytes:
                blocks.append(Block(self.rules.cublas_bytes, self.rules.cublas_bytes, "cublas_workspace", False))
        lt_call = func is aten.addmm.default and isinstance(args[0], torch.Tensor) and args[0].dim() == 1
        if lt_call and self.rules.cublaslt == "per_call":
            blocks.append(Block(CUBLASLT_BYTES, CUBLASLT_BYTES, "cublaslt_workspace", True))
        elif lt_call and self.rules.cublaslt == "persistent" and f"lt-{thread}" not in self._blas_threads:
            self._blas_threads.add(f"lt-{thread}")
            blocks.append(Block(CUBLASLT_BYTES, CUBLASLT_BYTES, "cublaslt_workspace", False))
        return blocks

    def _conv_forward(self, args, out) -> list[Block]:
        x, weight = args[0], args[1]
        groups = args[8] if len(args) > 8 else 1
        if not isinstance(out, torch.Tensor) or x.dim() != 4:
            return []
        layout = 0 if _channels_last(x) else _bytes(x) + _bytes(out)
        return [self._block(layout, _im2col(x, weight, tuple(out.shape[2:]), groups))]

    def _conv_backward(self, args, out) -> list[Block]:
        grad_out, x, weight = args[0], args[1], args[2]
        groups = args[9] if len(args) > 9 else 1
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return []
        grad_in, grad_weight = out[0], out[1]
        lowered = _im2col(x, weight, tuple(grad_out.shape[2:]), groups)
        nhwc = _channels_last(x)
        blocks = []
        if grad_in is not None:
            blocks.append(self._block(0 if nhwc else _bytes(grad_out) + _bytes(grad_in), lowered))
        if grad_weight is not None:
            blocks.append(self._block(0 if nhwc else _bytes(x) + _bytes(grad_out), lowered))
        return blocks

    def _block(self, layout: int, im2col: int) -> Block:
        sizes = {"layout": layout, "im2col": im2col, "none": 0}
        expected, upper = sizes[self.rules.cudnn_expected], sizes[self.rules.cudnn_upper]
        return Block(expected, max(upper, expected), "cudnn_workspace", True)
