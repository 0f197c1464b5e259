"""Tensors a CUDA kernel allocates inside one aten op, through the caching allocator, and frees before
the op returns. A dispatch mode sees only the op's outputs, and a fake (meta) kernel makes nothing
else, so the tracer adds these after the op's outputs, as the GPU makes them.

Reductions and scans that change the dtype (ATen ``ReduceOps.cpp``): ``sum``, ``nansum``, ``prod`` and
``mean`` reduce through ``make_reduction_from_out_ty``, which hands the kernel ``self.to(out_dtype)``
unless the input already has that dtype, or (CUDA only) is float16/bfloat16 reduced into float32;
``cumsum`` and ``cumprod`` (``impl_func_cum_ops``) always scan ``self.to(result.scalar_type())``. So a bool
or int8 mask summed to int64 is first copied whole at 8 bytes an element. Ultralytics' assigner does it
at its peak: ``mask_pos.sum(-2)`` (``TaskAlignedAssigner.select_highest_overlaps``) copies the
(batch, objects, anchors) int8 mask to int64, 215 MB at batch 16 with 200 objects an image, the block
the H200's allocation history shows at that line (validation/results/h200-2026-12-04/, test
``tests/test_kernel_temporaries.py``). A CPU run makes the same copy; only the float16 exception is CUDA's.

Convolutions (``input_copies``): cuDNN gets its input contiguous, so a strided input is copied first,
before the output, and freed when the op returns.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

aten = torch.ops.aten

_REDUCTIONS = frozenset({
    aten.sum.default, aten.sum.dim_IntList, aten.nansum.default, aten.prod.default, aten.prod.dim_int,
    aten.mean.default, aten.mean.dim,
})  # fmt: skip
_SCANS = frozenset({aten.cumsum.default, aten.cumprod.default})
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def converted_input_bytes(func, args, out) -> int:
    """Bytes of the converted copy of the input that ``func`` reduces or scans on CUDA (0: none)."""
    if func not in _REDUCTIONS and func not in _SCANS:
        return 0
    source = args[0] if args else None
    if not isinstance(source, torch.Tensor) or not isinstance(out, torch.Tensor) or source.dtype == out.dtype:
        return 0
    if func in _REDUCTIONS and source.dtype in _LOW_PRECISION and out.dtype == torch.float32:
        return 0  # CUDA reduces float16/bfloat16 into float32 without a copy
    if source.dim() == 0 or source.numel() == 0:
        return 0  # a scan fills or zeroes the result instead
    return source.numel() * out.element_size()


def temporaries(func, args, out) -> Iterator[int]:
    """Sizes of the transient tensors ``func`` makes on CUDA besides its outputs, in order."""
    converted = converted_input_bytes(func, args, out)
    if converted:
        yield converted


# a training trace sees ``convolution``; under inference_mode a real CPU run sees ``conv2d`` undecomposed
_CONV_FORWARD = frozenset({aten.convolution.default, aten.conv2d.default})


def _backend_format(x: torch.Tensor, weight: torch.Tensor) -> torch.memory_format:
    """``cudnn_conv_suggest_memory_format`` (ATen ``ConvUtils.h``): channels_last when the input or the
    weight suggests it (a 4-d weight), else contiguous."""
    from torch._prims_common import suggest_memory_format

    if weight.dim() == 4 and torch.channels_last in (suggest_memory_format(x), suggest_memory_format(weight)):
        return torch.channels_last
    return torch.contiguous_format


def input_copies(func, args) -> list[tuple[int, torch.dtype]]:
    """(bytes, dtype) of the input a CUDA convolution copies to its backend's memory format before making
    its output, freed when it returns: ATen ``_convolution`` hands cuDNN ``input.contiguous(backend_memory_format)``.
    A channel slice (``C2f``'s ``chunk``, fed to its first bottleneck) is not contiguous, so each such
    conv allocates its input's size once more, at once. The H200's allocation histories show exactly these
    copies in the forward (yolov8n at batch 16, fp16 and fp32 on 8.4.190; yolov8s, fp16 on 8.3.253:
    ``tests/test_gpu_history.py``). Their backward shows no such copy of the saved input, so none is traced."""
    if func not in _CONV_FORWARD:
        return []
    x, weight = args[0], args[1]
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.numel() == 0 or x.is_contiguous(memory_format=_backend_format(x, weight)):
        return []
    return [(x.numel() * x.element_size(), x.dtype)]
