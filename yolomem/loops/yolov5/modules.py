"""Layers of the anchor-based YOLO designs, written from the published architectures.

``LayerModel`` is a list of layers, each reading the previous output (``f == -1``) or the outputs of
earlier layers by index, as both the yolov5 YAML format and darknet's ``[route]``/``[shortcut]`` do.
Its head is described by ``HeadSpec`` (anchors in pixels, strides, classes, mask coefficients) in plain
Python numbers, so the loss can build its real anchor tensors without reading model tensors (which
are fake during a trace).

Training-mode outputs are the yolov5 repo's: a list with one tensor per level, shaped
``(batch, anchors, ny, nx, 5 + nc [+ nm])``, plus the prototype masks ``(batch, nm, H/4, W/4)`` for
segmentation. In eval mode (val.py) the head also decodes the levels into boxes in pixels, as yolov5's
``Detect`` does: ``(decoded (batch, anchors * cells, 5 + nc [+ nm]), levels)``.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

import torch
from torch import nn

from yolomem.errors import UserError

BN_EPS, BN_MOMENTUM = 1e-3, 0.03  # yolov5 utils/torch_utils.initialize_weights


def autopad(k: int, p: int | None = None) -> int:
    return k // 2 if p is None else p


def make_divisible(x: float, divisor: int = 8) -> int:
    return int(math.ceil(x / divisor) * divisor)


class Conv(nn.Module):
    """Conv2d (no bias) -> BatchNorm2d -> SiLU: yolov5's basic block."""

    def __init__(self, c1: int, c2: int, k: int = 1, s: int = 1, p: int | None = None, g: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.SiLU(inplace=True) if act else nn.Identity()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c1: int, c2: int, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_, c2, 3, 1, g=g)
        self.add = shortcut and c1 == c2

    def forward(self, x):
        return x + self.cv2(self.cv1(x)) if self.add else self.cv2(self.cv1(x))


class C3(nn.Module):
    """CSP bottleneck with three convolutions (yolov5 v4.0+)."""

    def __init__(self, c1: int, c2: int, n: int = 1, shortcut: bool = True, g: int = 1, e: float = 0.5):
        super().__init__()
        c_ = int(c2 * e)
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c1, c_, 1, 1)
        self.cv3 = Conv(2 * c_, c2, 1)
        self.m = nn.Sequential(*(Bottleneck(c_, c_, shortcut, g, e=1.0) for _ in range(n)))

    def forward(self, x):
        return self.cv3(torch.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    """Spatial pyramid pooling, fast: three chained k x k max pools, equal to SPP(5, 9, 13) for k=5."""

    def __init__(self, c1: int, c2: int, k: int = 5):
        super().__init__()
        c_ = c1 // 2
        self.cv1 = Conv(c1, c_, 1, 1)
        self.cv2 = Conv(c_ * 4, c2, 1, 1)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dimension: int = 1):
        super().__init__()
        self.d = dimension

    def forward(self, x):
        return torch.cat(x, self.d)


class Proto(nn.Module):
    """Prototype masks for segmentation: (B, c1, H/8, W/8) -> (B, nm, H/4, W/4)."""

    def __init__(self, c1: int, c_: int = 256, c2: int = 32):
        super().__init__()
        self.cv1 = Conv(c1, c_, k=3)
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.cv2 = Conv(c_, c_, k=3)
        self.cv3 = Conv(c_, c2)

    def forward(self, x):
        return self.cv3(self.cv2(self.upsample(self.cv1(x))))


@dataclass(frozen=True)
class HeadSpec:
    """What the loss needs to know about the detection head, in plain numbers."""

    nc: int
    anchors_px: tuple[tuple[tuple[float, float], ...], ...]  # per level, per anchor: (w, h) in pixels
    strides: tuple[int, ...]  # per level
    nm: int = 0  # mask coefficients (segmentation), 0 for detection

    @property
    def nl(self) -> int:
        return len(self.anchors_px)

    @property
    def na(self) -> int:
        return len(self.anchors_px[0])

    @property
    def no(self) -> int:
        return 5 + self.nc + self.nm

    def anchors_in_grid_units(self) -> list[list[list[float]]]:
        """(nl, na, 2): anchors divided by their level's stride, as yolov5's Detect keeps them."""
        return [[[w / s, h / s] for w, h in level] for level, s in zip(self.anchors_px, self.strides)]


def _levels_to_output(x: torch.Tensor, na: int, no: int) -> torch.Tensor:
    bs, _, ny, nx = x.shape  # (B, na*no, ny, nx) -> (B, na, ny, nx, no)
    return x.view(bs, na, no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()


def make_grid(anchors_px: torch.Tensor, ny: int, nx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """yolov5 ``Detect._make_grid``: cell corners ``(1, na, ny, nx, 2)`` (materialised, ``- 0.5``) and
    the anchor sizes in pixels, ``anchors_px`` (na, 2) expanded to the same shape (a view)."""
    na = anchors_px.shape[0]
    shape = 1, na, ny, nx, 2
    y = torch.arange(ny, device=anchors_px.device, dtype=anchors_px.dtype)
    x = torch.arange(nx, device=anchors_px.device, dtype=anchors_px.dtype)
    yv, xv = torch.meshgrid(y, x, indexing="ij")
    grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
    return grid, anchors_px.view((1, na, 1, 1, 2)).expand(shape)


def decode_level(xi: torch.Tensor, grid: torch.Tensor, anchor_grid: torch.Tensor, stride: float, nc: int) -> torch.Tensor:
    """yolov5 Detect/Segment in eval mode, one level: (B, na, ny, nx, no) -> (B, na * ny * nx, no),
    xywh in pixels and sigmoid scores (mask coefficients, when there are any, left raw)."""
    bs, na, ny, nx, no = xi.shape
    if no > 5 + nc:  # Segment: sigmoid on the boxes and scores only
        xy, wh, conf, mask = xi.split((2, 2, nc + 1, no - nc - 5), 4)
        xy = (xy.sigmoid() * 2 + grid) * stride
        wh = (wh.sigmoid() * 2) ** 2 * anchor_grid
        y = torch.cat((xy, wh, conf.sigmoid(), mask), 4)
    else:
        xy, wh, conf = xi.sigmoid().split((2, 2, nc + 1), 4)
        xy = (xy * 2 + grid) * stride
        wh = (wh * 2) ** 2 * anchor_grid
        y = torch.cat((xy, wh, conf), 4)
    return y.view(bs, na * nx * ny, no)


class Detect(nn.Module):
    """yolov5's anchor-based head: one 1x1 conv per level to ``na * (5 + nc)`` channels."""

    def __init__(self, nc: int, anchors: list, ch: list[int], strides: list[int], nm: int = 0):
        super().__init__()
        self.nc, self.nm = nc, nm
        self.nl, self.na = len(anchors), len(anchors[0]) // 2
        self.no = 5 + nc + nm
        anchors_px = tuple(tuple((float(a[i]), float(a[i + 1])) for i in range(0, len(a), 2)) for a in anchors)
        self.spec = HeadSpec(nc, anchors_px, tuple(strides), nm)
        # the buffer yolov5 keeps on the GPU: (nl, na, 2) in grid units
        self.register_buffer("anchors", torch.tensor(self.spec.anchors_in_grid_units()))
        # a plain tensor attribute on the GPU in yolov5 (moved by BaseModel._apply, deep-copied by the EMA)
        self.stride = torch.tensor([float(s) for s in strides])
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in ch)
        # eval mode: cached per level and remade when a level's (ny, nx) changes (rect val batches);
        # converted with the model by val.py's model.half()/float() (``BaseModel._apply``)
        self.grid = [torch.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [torch.empty(0) for _ in range(self.nl)]

    def forward(self, x: list[torch.Tensor]):
        x = list(x)
        z = []
        for i in range(self.nl):
            x[i] = _levels_to_output(self.m[i](x[i]), self.na, self.no)
            if not self.training:
                ny, nx = x[i].shape[2:4]
                if self.grid[i].shape[2:4] != x[i].shape[2:4]:
                    self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
                # yolov5 Detect.forward, inline: its locals (xy, wh, conf, y) live until the next level
                # reassigns them, which is when Python frees them
                bs = x[i].shape[0]
                if self.nm:  # Segment: sigmoid on the boxes and scores only
                    xy, wh, conf, mask = x[i].split((2, 2, self.nc + 1, self.no - self.nc - 5), 4)
                    xy = (xy.sigmoid() * 2 + self.grid[i]) * self.stride[i]
                    wh = (wh.sigmoid() * 2) ** 2 * self.anchor_grid[i]
                    y = torch.cat((xy, wh, conf.sigmoid(), mask), 4)
                else:
                    xy, wh, conf = x[i].sigmoid().split((2, 2, self.nc + 1), 4)
                    xy = (xy * 2 + self.grid[i]) * self.stride[i]
                    wh = (wh * 2) ** 2 * self.anchor_grid[i]
                    y = torch.cat((xy, wh, conf), 4)
                z.append(y.view(bs, self.na * nx * ny, self.no))  # (B, na * ny * nx, no)
        return x if self.training else (torch.cat(z, 1), x)

    def _make_grid(self, nx: int, ny: int, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """yolov5 ``Detect._make_grid``: cell corners (1, na, ny, nx, 2), materialised by ``- 0.5``, and
        the anchors in pixels expanded to the same shape (a view of an (na, 2) product)."""
        d, t = self.anchors[i].device, self.anchors[i].dtype
        shape = 1, self.na, ny, nx, 2
        y, x = torch.arange(ny, device=d, dtype=t), torch.arange(nx, device=d, dtype=t)
        yv, xv = torch.meshgrid(y, x, indexing="ij")
        grid = torch.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


class Segment(Detect):
    """yolov5-seg v7.0: Detect with ``nm`` mask coefficients per anchor, plus ``Proto`` on P3."""

    def __init__(self, nc: int, anchors: list, nm: int, npr: int, ch: list[int], strides: list[int]):
        super().__init__(nc, anchors, ch, strides, nm=nm)
        self.proto = Proto(ch[0], npr, nm)

    def forward(self, x: list[torch.Tensor]):
        p = self.proto(x[0])
        out = super().forward(x)
        return (out, p) if self.training else (out[0], p, out[1])


class LayerModel(nn.Module):
    """Routed layer list. Each layer has ``.f`` (input index or list of them) and ``.i`` (its index).

    ``outputs``: indices of the layers whose outputs make the prediction (the Detect layer for yolov5
    YAMLs, every ``[yolo]`` layer for darknet cfgs).
    """

    def __init__(self, layers: list[nn.Module], save: set[int], outputs: list[int], head: HeadSpec, name: str,
                 collect: bool = False):
        super().__init__()
        self.model = nn.Sequential(*layers)
        self.save = sorted(save | set(outputs))
        self.outputs = list(outputs)
        self.collect = collect  # True: return the list of output layers (darknet), even for one [yolo]
        self.head = head
        self.name = name
        self.stride = torch.tensor([float(s) for s in head.strides])  # plain tensor, not on the GPU

    @property
    def nc(self) -> int:
        return self.head.nc

    def _head_layer(self):
        layer = self.model[self.outputs[0]]
        return layer if isinstance(layer, Detect) else None

    def head_anchors(self) -> torch.Tensor | None:
        """yolov5's ``Detect.anchors`` buffer (nl, na, 2), grid units; None for darknet cfgs."""
        head = self._head_layer()
        return None if head is None else head.anchors

    def loss_anchors(self) -> torch.Tensor:
        """The anchors ``ComputeLoss`` reads: the Detect buffer itself (yolov5), else a tensor of its own."""
        anchors = self.head_anchors()
        return anchors if anchors is not None else torch.tensor(self.head.anchors_in_grid_units())

    def device_tensors(self) -> list[torch.Tensor]:
        """GPU tensors that are neither parameters nor buffers: yolov5's ``Detect.stride``."""
        head = self._head_layer()
        return [] if head is None else [head.stride]

    def forward(self, x: torch.Tensor):
        # yolov5's BaseModel._forward_once: a list of the saved outputs (None for the others), which
        # Python frees last layer first when the forward returns
        y: list[torch.Tensor | None] = []
        for layer in self.model:
            if layer.f != -1:
                x = y[layer.f] if isinstance(layer.f, int) else [x if j == -1 else y[j] for j in layer.f]
            x = layer(x)
            y.append(x if layer.i in self.save else None)
        if not self.collect:
            return y[self.outputs[0]]  # the Detect/Segment layer's own output (the last layer)
        levels = [y[i] for i in self.outputs]  # darknet: one output per [yolo] layer
        if self.training:
            return levels
        z = []  # decoded as yolov5's Detect would (grids remade per call: kilobytes)
        for i, xi in enumerate(levels):
            grid, anchor_grid = make_grid(xi.new_tensor(self.head.anchors_px[i]), *xi.shape[2:4])
            z.append(decode_level(xi, grid, anchor_grid, self.head.strides[i], self.head.nc))
        return torch.cat(z, 1), levels


class Classify(nn.Module):
    """yolov5's classification head (models/common.py): (B, c1, h, w) -> (B, c2)."""

    CHANNELS = 1280  # c_: EfficientNet-B0's width, as in the repo

    def __init__(self, c1: int, c2: int, dropout_p: float = 0.0):
        super().__init__()
        self.conv = Conv(c1, self.CHANNELS, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(p=dropout_p, inplace=True)
        self.linear = nn.Linear(self.CHANNELS, c2)

    def forward(self, x):
        if isinstance(x, list):
            x = torch.cat(x, 1)
        return self.linear(self.drop(self.pool(self.conv(x)).flatten(1)))


class ClassifierModel(nn.Module):
    """yolov5's ``ClassificationModel(model=DetectionModel(yolov5?.yaml), nc, cutoff=10)``, which the
    released ``yolov5?-cls.pt`` are: the detection backbone up to ``cutoff`` (layers 0-8 for the v7.0
    YAMLs) and ``Classify`` in place of layer ``cutoff - 1`` (SPPF), fed with that layer's input channels."""

    def __init__(self, detection: LayerModel, nc: int = 1000, cutoff: int = 10):
        super().__init__()
        layers = list(detection.model[:cutoff])
        last = layers[-1]
        ch = last.conv.in_channels if hasattr(last, "conv") else last.cv1.conv.in_channels
        head = Classify(ch, nc)
        head.i, head.f = last.i, last.f
        self.model = nn.Sequential(*layers[:-1], head)
        self.stride = detection.stride
        self.save: list[int] = []
        self.nc = nc
        self.name = detection.name

    def device_tensors(self) -> list[torch.Tensor]:
        return []  # no Detect head: nothing besides parameters and buffers on the GPU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.model:  # _forward_once with an empty save list: each layer reads the last
            x = layer(x)
        return x


# -- yolov5 YAML ------------------------------------------------------------------------------------

_BLOCKS = {"Conv": Conv, "Bottleneck": Bottleneck, "C3": C3, "SPPF": SPPF}


def build_yolov5(cfg: dict, nc: int | None = None, scale: str | None = None, channels: int = 3) -> LayerModel:
    """Build a yolov5 v7.0 style YAML (``backbone`` + ``head`` rows ``[from, number, module, args]``)."""
    nc = int(nc if nc is not None else cfg.get("nc", 80))
    if scale is not None:
        scales = cfg.get("scales") or {}
        if scale not in scales:
            raise UserError(f"scale {scale!r} is not in this YAML's scales {sorted(scales)}")
        gd, gw = scales[scale]
    else:
        gd, gw = float(cfg.get("depth_multiple", 1.0)), float(cfg.get("width_multiple", 1.0))
    anchors = cfg["anchors"]
    if isinstance(anchors, int):
        raise UserError("auto-generated anchors (anchors: <int>) are not supported; list them")
    layers, save = [], set()
    ch, strides = [channels], [1]
    outputs, head = [], None
    rows = list(cfg["backbone"]) + list(cfg["head"])
    for i, (f, n, name, args) in enumerate(rows):
        args = [nc if a == "nc" else anchors if a == "anchors" else _literal(a) for a in args]
        n = max(round(n * gd), 1) if n > 1 else n
        if name in _BLOCKS:
            c1, c2 = ch[f], make_divisible(args[0] * gw, 8)
            args = [c1, c2, *args[1:]]
            if name == "C3":
                args.insert(2, n)
                n = 1
            stride = strides[f] * (args[3] if name == "Conv" and len(args) > 3 else 1)
            module = nn.Sequential(*(_BLOCKS[name](*args) for _ in range(n))) if n > 1 else _BLOCKS[name](*args)
        elif name == "nn.Upsample":
            c2, stride = ch[f], strides[f] // int(args[1])
            module = nn.Upsample(size=args[0], scale_factor=args[1], mode=args[2])
        elif name == "Concat":
            c2, stride = sum(ch[x] for x in f), strides[f[0]]
            module = Concat(args[0])
        elif name in {"Detect", "Segment"}:
            level_ch, level_strides = [ch[x] for x in f], [strides[x] for x in f]
            if name == "Detect":
                module = Detect(args[0], args[1], level_ch, level_strides)
            else:
                module = Segment(args[0], args[1], args[2], make_divisible(args[3] * gw, 8), level_ch, level_strides)
            head, c2, stride = module.spec, 0, 0
            outputs.append(i)
        else:
            raise UserError(f"module {name!r} in row {i} is not one of the yolov5 v7.0 modules {sorted(_BLOCKS)}")
        module.f, module.i = f, i
        save.update(x % i for x in ([f] if isinstance(f, int) else f) if x != -1)
        layers.append(module)
        if i == 0:
            ch, strides = [], []
        ch.append(c2)
        strides.append(stride)
    if head is None:
        raise UserError("the YAML has no Detect or Segment layer")
    return LayerModel(layers, save, outputs, head, name=str(cfg.get("name", "yolov5")))


def _literal(arg):
    """A YAML argument as parse_model's ``eval`` reads it: the repo's YAMLs write ``None`` (a string to
    YAML) where ours write ``null``, and a checkpoint keeps the repo's YAML as it was read."""
    if not isinstance(arg, str):
        return arg
    try:
        return ast.literal_eval(arg)
    except (ValueError, SyntaxError):
        return arg  # a name such as 'nearest': eval's NameError, which parse_model suppresses


def initialize_weights(model: nn.Module) -> None:
    """yolov5's initialize_weights: BN eps/momentum, in-place activations (already set at build)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps, m.momentum = BN_EPS, BN_MOMENTUM


def convert_floats(model: torch.nn.Module, dtype: torch.dtype) -> None:
    """``model.half()`` / ``model.float()``: ``nn.Module._apply`` (children first, then each floating
    parameter, whose ``.data`` is replaced, then each floating buffer), then yolov5's
    ``BaseModel._apply``, which converts Detect's ``stride``, ``grid`` and ``anchor_grid`` too."""

    def fn(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if t.is_floating_point() else t

    def apply(module: torch.nn.Module) -> None:
        for child in module.children():
            apply(child)
        for param in module._parameters.values():
            if param is not None:
                with torch.no_grad():
                    param.data = fn(param)
        for key, buffer in module._buffers.items():
            if buffer is not None:
                module._buffers[key] = fn(buffer)

    apply(model)
    head = model._head_layer() if hasattr(model, "_head_layer") else None
    if head is not None:
        head.stride = fn(head.stride)
        head.grid = list(map(fn, head.grid))
        head.anchor_grid = list(map(fn, head.anchor_grid))


# -- the pass -----------------------------------------------------------------------------------------
