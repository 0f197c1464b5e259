"""Darknet ``.cfg`` import (AlexeyAB's format): a user's own cfg builds a PyTorch model to estimate.

Supported sections and keys (anything else is an error naming the section and its line):
- ``[net]``: ``width``, ``height``, ``channels``, ``batch``, ``subdivisions`` (mini-batch = batch /
  subdivisions), and darknet's training keys that do not change the layer graph (read, not used).
- ``[convolutional]``: ``batch_normalize``, ``filters``, ``size``, ``stride``, ``pad``, ``padding``,
  ``groups``, ``activation`` (leaky, mish, linear, logistic, relu, swish).
- ``[route]``: ``layers``, ``groups``, ``group_id``.  ``[shortcut]``: ``from``, ``activation``.
- ``[upsample]``: ``stride``.  ``[maxpool]``: ``size``, ``stride``.
- ``[yolo]``: ``mask``, ``anchors``, ``classes``, ``num`` and darknet's loss keys (read, not used: the
  yolov5 loop's loss replaces darknet's).

The model is a ``LayerModel`` whose outputs are the ``[yolo]`` layers, each reshaping the preceding
prediction conv to ``(batch, anchors, ny, nx, 5 + classes)``, so the yolov5 loop trains it as the
ultralytics/yolov3 PyTorch trainers did.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from yolomem.errors import UserError, unknown
from yolomem.loops.yolov5.modules import HeadSpec, LayerModel

_ACTIVATIONS = ("leaky", "mish", "linear", "logistic", "relu", "swish")
_NET_KEYS = {
    "width", "height", "channels", "batch", "subdivisions", "momentum", "decay", "angle", "saturation",
    "exposure", "hue", "learning_rate", "burn_in", "max_batches", "policy", "steps", "scales", "mosaic",
    "mosaic_bound", "cutmix", "mixup", "blur", "flip", "letter_box", "aspect", "jitter", "min_crop",
    "max_crop", "gaussian_noise", "label_smooth_eps", "max_chart_loss", "power", "ema_alpha",
    "optimized_memory", "workspace_size_limit_MB", "adam", "B1", "B2", "eps", "loss_scale",
    "dynamic_minibatch", "track", "time_steps", "sequential_subdivisions", "try_fix_nan", "seed", "step",
    "gamma", "rate", "contrastive", "unsupervised", "random",
}  # fmt: skip
_YOLO_KEYS = {
    "mask", "anchors", "classes", "num", "jitter", "ignore_thresh", "truth_thresh", "random", "scale_x_y",
    "iou_thresh", "cls_normalizer", "iou_normalizer", "obj_normalizer", "iou_loss", "iou_thresh_kind",
    "nms_kind", "beta_nms", "max_delta", "resize", "new_coords", "counters_per_class", "label_smooth_eps",
    "focal_loss", "objectness_smooth", "max", "uc_normalizer", "delta_normalizer", "track_history_size",
    "sim_thresh", "dets_for_track", "dets_for_show", "track_ciou_norm", "embedding_layer", "map",
}  # fmt: skip
SECTION_KEYS: dict[str, set[str]] = {
    "net": _NET_KEYS,
    "convolutional": {"batch_normalize", "filters", "size", "stride", "pad", "padding", "groups", "activation"},
    "route": {"layers", "groups", "group_id"},
    "shortcut": {"from", "activation"},
    "upsample": {"stride"},
    "maxpool": {"size", "stride"},
    "yolo": _YOLO_KEYS,
}


@dataclass(frozen=True)
class Section:
    kind: str  # e.g. "convolutional"
    line: int  # 1-based line of the "[kind]" header
    options: tuple[tuple[str, str], ...]
    option_lines: tuple[int, ...] = ()

    def get(self, key: str, default: str | None = None) -> str | None:
        return dict(self.options).get(key, default)

    def integer(self, key: str, default: int | None = None) -> int:
        raw = self.get(key)
        if raw is None:
            if default is None:
                raise UserError(f"[{self.kind}] at line {self.line}: missing '{key}='")
            return default
        try:
            return int(raw)
        except ValueError:
            raise UserError(f"[{self.kind}] at line {self._line_of(key)}: {key}={raw!r} is not a whole number") from None

    def integers(self, key: str) -> list[int]:
        raw = self.get(key)
        if raw is None:
            raise UserError(f"[{self.kind}] at line {self.line}: missing '{key}='")
        try:
            return [int(x) for x in raw.split(",") if x.strip()]
        except ValueError:
            raise UserError(f"[{self.kind}] at line {self._line_of(key)}: {key}={raw!r} must be whole numbers") from None

    def _line_of(self, key: str) -> int:
        for (name, _), line in zip(self.options, self.option_lines):
            if name == key:
                return line
        return self.line


@dataclass(frozen=True)
class DarknetCfg:
    """A parsed cfg: ``[net]`` settings and the layer sections in order."""

    source: str
    net: Section
    layers: tuple[Section, ...] = field(default_factory=tuple)

    @property
    def width(self) -> int:
        return self.net.integer("width", 416)

    @property
    def height(self) -> int:
        return self.net.integer("height", 416)

    @property
    def channels(self) -> int:
        return self.net.integer("channels", 3)

    @property
    def batch(self) -> int:
        return self.net.integer("batch", 1)

    @property
    def subdivisions(self) -> int:
        return self.net.integer("subdivisions", 1)

    @property
    def mini_batch(self) -> int:
        """Images per forward/backward in darknet: batch / subdivisions."""
        return max(self.batch // max(self.subdivisions, 1), 1)


def parse_cfg(text: str, source: str = "<cfg>") -> DarknetCfg:
    """Parse cfg text. Comments start with '#' or ';'. Raises ``UserError`` naming the line."""
    sections: list[Section] = []
    kind, line_no, options, lines = None, 0, [], []

    def close() -> None:
        if kind is not None:
            sections.append(Section(kind, line_no, tuple(options), tuple(lines)))

    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise UserError(f"{source} line {number}: section header {line!r} has no closing ']'")
            close()
            kind, line_no, options, lines = line[1:-1].strip().lower(), number, [], []
            if kind not in SECTION_KEYS:
                raise unknown(f"darknet section [{kind}] at {source} line {number}; section", kind, SECTION_KEYS)
            continue
        if kind is None:
            raise UserError(f"{source} line {number}: {line!r} comes before any [section]")
        if "=" not in line:
            raise UserError(f"{source} line {number}: {line!r} in [{kind}] is not key=value")
        key, _, value = (part.strip() for part in line.partition("="))
        if key not in SECTION_KEYS[kind]:
            raise unknown(f"key in [{kind}] at {source} line {number}:", key, SECTION_KEYS[kind])
        options.append((key, value))
        lines.append(number)
    close()
    if not sections or sections[0].kind != "net":
        raise UserError(f"{source}: a darknet cfg starts with a [net] section")
    if any(s.kind == "net" for s in sections[1:]):
        extra = next(s for s in sections[1:] if s.kind == "net")
        raise UserError(f"{source} line {extra.line}: a second [net] section")
    return DarknetCfg(source, sections[0], tuple(sections[1:]))


def load_cfg(path: str | Path) -> DarknetCfg:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise UserError(f"cannot read darknet cfg {str(path)!r}: {error.strerror}") from None
    return parse_cfg(text, path.name)


# -- layers -----------------------------------------------------------------------------------------


def _activation(name: str, section: Section) -> nn.Module:
    if name not in _ACTIVATIONS:
        raise unknown(f"activation in [{section.kind}] at line {section._line_of('activation')}:", name, _ACTIVATIONS)
    return {
        "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
        "mish": lambda: nn.Mish(inplace=True),
        "linear": nn.Identity,
        "logistic": nn.Sigmoid,
        "relu": lambda: nn.ReLU(inplace=True),
        "swish": lambda: nn.SiLU(inplace=True),
    }[name]()


class DarknetConv(nn.Sequential):
    """[convolutional]: Conv2d (bias only without batch norm) -> BatchNorm2d -> activation."""

    def __init__(self, c1: int, section: Section):
        bn = section.integer("batch_normalize", 0)
        filters, size = section.integer("filters", 1), section.integer("size", 1)
        stride, groups = section.integer("stride", 1), section.integer("groups", 1)
        pad = size // 2 if section.integer("pad", 0) else section.integer("padding", 0)
        parts: list[nn.Module] = [nn.Conv2d(c1, filters, size, stride, pad, groups=groups, bias=not bn)]
        if bn:
            parts.append(nn.BatchNorm2d(filters, momentum=0.03, eps=1e-4))
        parts.append(_activation(section.get("activation", "logistic"), section))
        super().__init__(*parts)


class Route(nn.Module):
    """[route]: concatenate earlier outputs, each optionally cut to channel group ``group_id`` of ``groups``."""

    def __init__(self, groups: int, group_id: int):
        super().__init__()
        self.groups, self.group_id = groups, group_id

    def forward(self, x):
        inputs = x if isinstance(x, list) else [x]
        if self.groups > 1:
            inputs = [t.chunk(self.groups, 1)[self.group_id] for t in inputs]
        return inputs[0] if len(inputs) == 1 else torch.cat(inputs, 1)


class Shortcut(nn.Module):
    """[shortcut]: residual sum of the previous output and layer ``from``, then the activation."""

    def __init__(self, activation: nn.Module):
        super().__init__()
        self.act = activation

    def forward(self, x):
        return self.act(x[0] + x[1])


class DarknetMaxPool(nn.Module):
    """[maxpool]: darknet pads ``size - 1`` in total; size 2 stride 1 keeps the size (pad right/bottom)."""

    def __init__(self, size: int, stride: int):
        super().__init__()
        self.pad_right = size == 2 and stride == 1
        self.pool = nn.MaxPool2d(size, stride, 0 if self.pad_right else (size - 1) // 2)

    def forward(self, x):
        if self.pad_right:
            x = F.pad(x, (0, 1, 0, 1))  # as the PyTorch ports do (ZeroPad2d((0, 1, 0, 1)))
        return self.pool(x)


class YoloLayer(nn.Module):
    """[yolo]: (B, na*no, ny, nx) -> (B, na, ny, nx, no), the yolov5 loss's layout."""

    def __init__(self, na: int, no: int):
        super().__init__()
        self.na, self.no = na, no

    def forward(self, x):
        bs, _, ny, nx = x.shape
        return x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()


def build_darknet(cfg: DarknetCfg, nc: int | None = None) -> LayerModel:
    """Build the cfg's layers. ``nc`` replaces each [yolo] ``classes`` and the filters of the conv before it."""
    layers: list[nn.Module] = []
    ch, strides = [], []  # per layer: output channels, stride
    save: set[int] = set()
    outputs: list[int] = []
    anchors_px, level_strides, classes = [], [], set()
    c_in, s_in = cfg.channels, 1
    sections = list(cfg.layers)
    for i, section in enumerate(sections):
        prev_c, prev_s = (ch[-1], strides[-1]) if i else (c_in, s_in)
        f: int | list[int] = -1
        kind = section.kind
        if kind == "convolutional":
            if nc is not None and i + 1 < len(sections) and sections[i + 1].kind == "yolo":
                section = _with_filters(section, sections[i + 1], nc)
            module = DarknetConv(prev_c, section)
            c2, s2 = section.integer("filters", 1), prev_s * section.integer("stride", 1)
        elif kind == "route":
            refs = [_absolute(x, i, section) for x in section.integers("layers")]
            groups, group_id = section.integer("groups", 1), section.integer("group_id", 0)
            if not 0 <= group_id < groups:
                raise UserError(f"[route] at line {section.line}: group_id={group_id} must be in 0..{groups - 1}")
            module = Route(groups, group_id)
            f = refs[0] if len(refs) == 1 else refs
            c2, s2 = sum(ch[r] for r in refs) // groups, strides[refs[0]]
            save.update(refs)
        elif kind == "shortcut":
            ref = _absolute(section.integer("from"), i, section)
            if ch[ref] != prev_c:
                raise UserError(f"[shortcut] at line {section.line}: from={ref} has {ch[ref]} channels, the previous layer {prev_c}")
            module = Shortcut(_activation(section.get("activation", "linear"), section))
            f, c2, s2 = [-1, ref], prev_c, prev_s
            save.add(ref)
        elif kind == "upsample":
            stride = section.integer("stride", 2)
            module = nn.Upsample(scale_factor=stride, mode="nearest")
            c2, s2 = prev_c, max(prev_s // stride, 1)
        elif kind == "maxpool":
            size = section.integer("size", 1)
            stride = section.integer("stride", size)
            module = DarknetMaxPool(size, stride)
            c2, s2 = prev_c, prev_s * stride
        else:  # yolo
            mask = section.integers("mask") if section.get("mask") else list(range(section.integer("num", 1)))
            pairs = section.integers("anchors")
            all_anchors = [(float(pairs[k]), float(pairs[k + 1])) for k in range(0, len(pairs) - 1, 2)]
            if any(m >= len(all_anchors) for m in mask):
                raise UserError(f"[yolo] at line {section.line}: mask={mask} refers past the {len(all_anchors)} anchors")
            n_classes = nc if nc is not None else section.integer("classes", 80)
            no = 5 + n_classes
            if prev_c != len(mask) * no:
                raise UserError(f"[yolo] at line {section.line}: the conv before it has {prev_c} filters; "
                                f"{len(mask)} anchors x (5 + {n_classes} classes) = {len(mask) * no} expected")  # fmt: skip
            module = YoloLayer(len(mask), no)
            anchors_px.append(tuple(all_anchors[m] for m in mask))
            level_strides.append(prev_s)
            classes.add(n_classes)
            outputs.append(i)
            c2, s2 = prev_c, prev_s
        module.f, module.i = f, i
        layers.append(module)
        ch.append(c2)
        strides.append(s2)
    if not outputs:
        raise UserError(f"{cfg.source}: no [yolo] layer; yolomem estimates detection training")
    if len(classes) > 1:
        raise UserError(f"{cfg.source}: [yolo] layers disagree on classes: {sorted(classes)}")
    head = HeadSpec(classes.pop(), tuple(anchors_px), tuple(level_strides))
    if len({len(a) for a in anchors_px}) > 1:
        raise UserError(f"{cfg.source}: every [yolo] layer must use the same number of anchors (mask)")
    return LayerModel(layers, save, outputs, head, name=Path(cfg.source).stem, collect=True)


def _absolute(ref: int, index: int, section: Section) -> int:
    absolute = index + ref if ref < 0 else ref
    if not 0 <= absolute < index:
        raise UserError(f"[{section.kind}] at line {section.line}: layer {ref} does not name an earlier layer (this is layer {index})")
    return absolute


def _with_filters(conv: Section, yolo: Section, nc: int) -> Section:
    """The prediction conv before a [yolo] layer has na * (5 + classes) filters; redo it for ``nc``."""
    mask = yolo.integers("mask") if yolo.get("mask") else list(range(yolo.integer("num", 1)))
    options = tuple((k, str(len(mask) * (5 + nc)) if k == "filters" else v) for k, v in conv.options)
    return Section(conv.kind, conv.line, options, conv.option_lines)
