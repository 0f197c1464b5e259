"""What the user asked of ``yolomem deploy``: ``MODEL key=value ...``, checked.

Its keys are one ``KeyTable`` (``DEPLOY_KEYS``) for the shared parser (``yolomem.config.keys``).
"""

from __future__ import annotations

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
    os_reserve: float | None = None  # GiB of a Jetson's DRAM kept for the OS; None: a headless system's
    imgsz_given: bool = True  # False: a .pt model runs at the imgsz it was trained at, as Ultralytics runs it
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
        """``[MODEL] key=value ...``; a bare word is the model (the shared parser, ``yolomem.config.keys``);
        or a pasted ``yolo predict|val|export ...`` line (``yolomem.deployment.yolo_line``)."""
        from yolomem.config.keys import parse_words
        from yolomem.deployment.yolo_line import is_yolo_line, read_yolo_line

        read: list[str] = []
        ignorable = None
        if is_yolo_line(list(words)):
            words, read, keys = read_yolo_line(list(words))
            ignorable = lambda: keys  # noqa: E731 - the shared parser asks for them only for a key it lacks
        parsed = parse_words(words, DEPLOY_KEYS, ignored=ignorable)
        if len(parsed.positionals) > 1 or (parsed.positionals and "model" in parsed.values):
            extra = parsed.positionals[-1]
            raise UserError(f"argument {extra!r} is not key=value; missing '=' sign, try '{extra}=<value>'")
        values = dict(parsed.values)
        if parsed.positionals:
            values["model"] = parsed.positionals[0]
        return cls.from_mapping(values, [*read, *parsed.notes])

    @classmethod
    def from_mapping(cls, values: dict, notes: list[str] | tuple[str, ...] = ()) -> DeployConfig:
        """Typed or text values by key (the Python API passes either); Ultralytics' ``quantize``, ``half``
        and ``int8`` set ``precision``."""
        kwargs: dict[str, object] = {}
        notes = list(notes)
        said: dict[str, str] = {}  # the precision, by the key that set it
        for key, value in values.items():
            if key not in DEPLOY_KEYS:
                from yolomem.config.keys import unknown_key

                raise unknown_key(key, DEPLOY_KEYS)
            spec = DEPLOY_KEYS[key]
            value = spec.convert(value)
            if key in _PRECISION_KEYS:
                precision = _PRECISION_KEYS[key](value)
                if precision is not None:
                    said[f"{key}={value}"] = precision
                notes.append(f"{key}={value}: precision={precision or 'fp32'}")
                continue
            if key == "precision":
                said[f"precision={value}"] = value
            kwargs[key] = value
        if "int8=True" in said and said.pop("half=True", None):  # as Ultralytics' exporter: int8 wins, with a warning
            notes.append("half=True and int8=True are mutually exclusive: int8, as Ultralytics' exporter sets it")
        if len(set(said.values())) > 1:  # quantize=8 with precision=fp16: one of them would be dropped
            raise UserError(f"{' and '.join(said)} ask for different precisions: give one")
        if said:
            kwargs["precision"] = next(iter(said.values()))
        return cls(**kwargs, imgsz_given="imgsz" in values, notes=tuple(notes))


def _deploy_keys():
    from yolomem.config.keys import BOOL, CHOICE, FLOAT, INT, MAX_BATCH_REQUEST, TEXT, Key, KeyTable

    formats = {"pt": "torch", "pytorch": "torch", "tensorrt": "engine", "trt": "engine", "ort": "onnx",
               "onnxruntime": "onnx"}  # fmt: skip
    precisions = {"32": "fp32", "16": "fp16", "8": "int8", "half": "fp16", "float16": "fp16", "float32": "fp32"}
    return KeyTable((
        Key("model", TEXT, "yolov8n.yaml", "a shipped YAML name, a local .yaml or .pt"),
        Key("format", CHOICE, "torch", "torch (Ultralytics predict/val), onnx (ONNX Runtime CUDA EP) or engine "
            "(TensorRT)", choices=FORMATS, aliases=formats),
        Key("precision", CHOICE, "fp32", "fp32, fp16 or int8 (engine)", choices=PRECISIONS, aliases=precisions),
        Key("batch", INT, None, "images per call (predict), per batch (val), the engine's max batch "
            "[default: 1; val 16]", nullable=True, low=1, high=MAX_BATCH_REQUEST,
            bound="the same bound as a training batch"),
        Key("imgsz", INT, 640, "input side in pixels (rounded up to the stride); not given: a .pt's training size "
            "(the published OBB weights: 1024), as Ultralytics' predict, val and export take it", low=1),
        Key("mode", CHOICE, "predict", "predict or val (format=torch)", choices=MODES),
        Key("device", TEXT, None, "a card or Jetson module, e.g. Jetson-Orin-Nano-8GB, T4", nullable=True),
        Key("gpu_mem", FLOAT, None, "the device's memory in GiB", nullable=True, low=0.0, low_open=True),
        Key("os_reserve", FLOAT, None, "GiB of a Jetson's memory the verdict keeps for the OS [default: 0.49, a "
            "headless system's most; about 1.5 with a desktop]", nullable=True, low=0.0),
        Key("dynamic", BOOL, False, "TensorRT: a dynamic-shape profile (its max shape sizes the context)"),
        Key("workspace", FLOAT, None, "TensorRT builder workspace in GiB [default: the installed release's]",
            nullable=True, low=0.0, low_open=True),
        Key("arena_extend_strategy", CHOICE, "kNextPowerOfTwo", "ONNX Runtime arena growth", choices=ARENA_STRATEGIES,
            aliases={"0": "kNextPowerOfTwo", "1": "kSameAsRequested"}),
        Key("candidates", INT, None, "NMS candidates per image [default: the most NMS holds; obb: the count fitted "
            "to a measured obb validation, as rotated NMS grows with its square]", nullable=True, low=1),
        Key("nc", INT, None, "number of classes (default: the model's)", nullable=True, low=1),
        # Ultralytics' own spellings of the precision: quantize (8.4), half and int8 (older releases)
        Key("quantize", CHOICE, None, "Ultralytics' quantize: 32, 16 or 8 (sets precision)", choices=PRECISIONS,
            aliases={"32": "fp32", "16": "fp16", "8": "int8"}, nullable=True),
        Key("half", BOOL, False, "Ultralytics' half=True (sets precision=fp16)"),
        Key("int8", BOOL, False, "Ultralytics' int8=True (sets precision=int8)"),
    ))  # fmt: skip


_PRECISION_KEYS = {
    "quantize": lambda value: value,
    "half": lambda value: "fp16" if value else None,
    "int8": lambda value: "int8" if value else None,
}
DEPLOY_KEYS = _deploy_keys()
