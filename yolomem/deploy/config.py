"""What the user asked of ``yolomem deploy``: ``MODEL key=value ...``, checked.

The key parsing here is deliberately small and self-contained (one table, ``KEYS``), so it can move onto
the shared key=value parser at merge: each entry is (converter, help).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from yolomem.errors import UserError, unknown

FORMATS = ("torch", "onnx", "engine")
PRECISIONS = ("fp32", "fp16", "int8")
MODES = ("predict", "val")
ARENA_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")
DEFAULT_BATCH = {"predict": 1, "val": 16}  # predict: one image per call; val: default.yaml batch=16


@dataclass(frozen=True)
class DeployConfig:
    model: str = "yolov8n.yaml"
    format: str = "torch"
    precision: str = "fp32"  # Ultralytics' default (quantize unset)
    batch: int | None = None  # None: 1 for predict and exports, 16 for val
    imgsz: int = 640
    mode: str = "predict"
    device: str | None = None  # a catalog card or Jetson module
    gpu_mem: float | None = None  # GiB: overrides the device's memory, or defines a custom one
    dynamic: bool = False  # TensorRT: dynamic-shape profile
    workspace: float | None = None  # TensorRT builder workspace, GiB; None: the installed release's default
    arena_extend_strategy: str = "kNextPowerOfTwo"  # ONNX Runtime
    candidates: int | None = None  # NMS candidates per image; None: the most NMS holds
    nc: int | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise unknown("format", self.format, FORMATS)
        if self.precision not in PRECISIONS:
            raise unknown("precision", self.precision, PRECISIONS)
        if self.mode not in MODES:
            raise unknown("mode", self.mode, MODES)
        if self.arena_extend_strategy not in ARENA_STRATEGIES:
            raise unknown("arena_extend_strategy", self.arena_extend_strategy, ARENA_STRATEGIES)
        for key in ("batch", "imgsz", "candidates", "nc"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise UserError(f"{key}={value!r} must be a whole number >= 1")
        if self.format == "torch" and self.precision == "int8":
            raise UserError("precision=int8 needs an exported model: use format=engine (PyTorch predict/val run fp32 or fp16)")
        if self.format == "onnx" and self.precision == "int8":
            raise UserError("precision=int8 with format=onnx is not modelled (ONNX Runtime's CUDA EP dequantizes QDQ "
                            "models); use format=engine for INT8")  # fmt: skip
        if self.format != "torch" and self.mode == "val":
            raise UserError("mode=val is modelled for format=torch; exported formats are sized for predict")
        if self.workspace is not None and self.workspace <= 0:
            raise UserError(f"workspace={self.workspace!r} must be a positive number of GiB")

    @property
    def resolved_batch(self) -> int:
        return self.batch if self.batch is not None else DEFAULT_BATCH[self.mode]

    def with_changes(self, **changes) -> DeployConfig:
        return replace(self, **changes)

    @classmethod
    def from_words(cls, words: list[str]) -> DeployConfig:
        """``[MODEL] key=value ...``; a bare word is the model."""
        values: dict[str, object] = {}
        for word in words:
            if "=" not in word:
                if "model" in values or word.startswith("-"):
                    raise UserError(f"argument {word!r} is not key=value; missing '=' sign, try '{word}=<value>'")
                values["model"] = word
                continue
            key, _, raw = word.partition("=")
            if not key or raw == "":
                raise UserError(f"malformed argument {word!r}; expected key=value, e.g. batch=8")
            values[key.strip()] = raw.strip()
        return cls.from_mapping(values)

    @classmethod
    def from_mapping(cls, values: dict) -> DeployConfig:
        kwargs: dict[str, object] = {}
        notes: list[str] = []
        for key, raw in values.items():
            if key in _ALIASES:
                target, value = _ALIASES[key](raw)
                if value is not None:
                    kwargs[target] = value
                notes.append(f"{key}={raw}: precision={value or 'fp32'}")
                continue
            if key not in KEYS:
                raise unknown("key", key, [*KEYS, *_ALIASES])
            kwargs[key] = KEYS[key][0](key, raw)
        return cls(**kwargs, notes=tuple(notes))


def _text(_key: str, raw) -> str:
    return str(raw)


def _int(key: str, raw) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise UserError(f"{key}={raw!r} must be a whole number") from None


def _float(key: str, raw) -> float:
    try:
        return float(raw)
    except (TypeError, ValueError):
        raise UserError(f"{key}={raw!r} must be a number") from None


def _bool(key: str, raw) -> bool:
    text = str(raw).lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    raise UserError(f"{key}={raw!r} must be true or false")


def _choice(valid: tuple[str, ...], aliases: dict[str, str] | None = None) -> Callable[[str, object], str]:
    def convert(key: str, raw) -> str:
        text = str(raw)
        text = (aliases or {}).get(text.lower(), text)
        match = {v.lower(): v for v in valid}.get(text.lower())
        if match is None:
            raise unknown(key, raw, [*valid, *(aliases or {})])
        return match

    return convert


_FORMAT_ALIASES = {"pt": "torch", "pytorch": "torch", "tensorrt": "engine", "trt": "engine", "ort": "onnx",
                   "onnxruntime": "onnx"}  # fmt: skip
_PRECISION_ALIASES = {"32": "fp32", "16": "fp16", "8": "int8", "half": "fp16", "float16": "fp16", "float32": "fp32"}
_ARENA_ALIASES = {"0": "kNextPowerOfTwo", "1": "kSameAsRequested"}

KEYS: dict[str, tuple[Callable, str]] = {
    "model": (_text, "model YAML or .pt"),
    "format": (_choice(FORMATS, _FORMAT_ALIASES), "torch | onnx | engine"),
    "precision": (_choice(PRECISIONS, _PRECISION_ALIASES), "fp32 | fp16 | int8"),
    "batch": (_int, "images per call (predict), per batch (val), engine max batch"),
    "imgsz": (_int, "input side, pixels"),
    "mode": (_choice(MODES), "predict | val (format=torch)"),
    "device": (_text, "a card or Jetson module from the catalog, e.g. Jetson-Orin-Nano-8GB"),
    "gpu_mem": (_float, "device memory in GiB"),
    "dynamic": (_bool, "TensorRT dynamic-shape profile"),
    "workspace": (_float, "TensorRT builder workspace, GiB"),
    "arena_extend_strategy": (_choice(ARENA_STRATEGIES, _ARENA_ALIASES), "ONNX Runtime arena growth"),
    "candidates": (_int, "NMS candidates per image"),
    "nc": (_int, "number of classes"),
}


def _quantize(raw) -> tuple[str, str | None]:
    text = str(raw).lower()
    if text in {"none", "", "32", "fp32"}:
        return "precision", None
    return "precision", _choice(PRECISIONS, _PRECISION_ALIASES)("quantize", text)


def _flag(key: str, precision: str):
    def convert(raw) -> tuple[str, str | None]:
        return "precision", precision if _bool(key, raw) else None

    return convert


# Ultralytics' own spellings: quantize=16|8 (8.4), half=True and int8=True (older releases)
_ALIASES = {"quantize": _quantize, "half": _flag("half", "fp16"), "int8": _flag("int8", "int8")}
