"""How the installed Ultralytics exports and runs a TensorRT engine, read from its own source.

These settings changed across releases (``deployment_memory.md`` section 4.3). Reading the installed
files, rather than keeping a table of versions, keeps the answer right for releases in between:

| setting | read from | seen |
|---|---|---|
| ``workspace`` default | ``cfg/default.yaml`` | 4 (GiB) in 8.2.0; empty (TensorRT's own default) from 8.3.37 |
| INT8 calibration batch | ``batch=2 * self.args.batch`` in the exporter | 2x batch in 8.3.x; the batch in 8.4.x |
| INT8 forces ``dynamic`` | ``self.args.dynamic = True`` near INT8 | 8.3.x yes; 8.4.x no |
| dynamic profile max | the ``max_shape = ...`` line | imgsz x max(1, workspace) (8.3.74); x max(2, workspace or 2) (8.3.200-8.4.60); x 2 (8.4.190) |
| I/O buffers | ``get_tensor_profile_shape(name, 0)[2]`` | the profile's max shape (8.4.x on TensorRT 10); else its opt shape |

A pattern that is not found falls back to the 8.4 behaviour, and the rules say so in ``notes``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportRules:
    version: str
    workspace_gib: float | None  # Ultralytics' default ``workspace``; None: TensorRT's own default
    calibration_batch_factor: int  # calibration batch = factor x batch
    int8_forces_dynamic: bool
    dynamic_max_scale: str  # "2", "max(2, workspace or 2)", "max(1, workspace)"
    io_at_max_shape: bool  # I/O buffers sized for the profile's max shape (else its opt shape)
    notes: tuple[str, ...]

    def dynamic_max_factor(self, workspace_gib: float | None) -> float:
        """Max profile side = factor x imgsz for ``dynamic=True`` exports."""
        if self.dynamic_max_scale == "max(1, workspace)":
            return max(1.0, workspace_gib or 0.0)
        if self.dynamic_max_scale == "max(2, workspace or 2)":
            return max(2.0, workspace_gib or 2.0)
        return 2.0


@functools.cache
def installed_rules() -> ExportRules:
    import ultralytics
    import ultralytics.engine.exporter as exporter
    from ultralytics.utils import DEFAULT_CFG_PATH

    root = Path(ultralytics.__file__).parent
    # the exporter's own file: up to 8.0.135 it is ultralytics/yolo/engine/exporter.py (legacy_layout)
    files = [Path(exporter.__file__), root / "nn" / "autobackend.py", root / "nn" / "backends" / "tensorrt.py",
             *sorted((root / "utils" / "export").glob("*.py"))]  # fmt: skip
    source = "\n".join(path.read_text(encoding="utf-8") for path in files if path.is_file())
    default_yaml = Path(DEFAULT_CFG_PATH).read_text(encoding="utf-8")
    return rules_from_source(ultralytics.__version__, source, default_yaml)


def rules_from_source(version: str, source: str, default_yaml: str) -> ExportRules:
    notes: list[str] = []
    match = re.search(r"^workspace:\s*([0-9.]+)?", default_yaml, re.MULTILINE)
    workspace = float(match.group(1)) if match and match.group(1) else None
    doubled = r"batch(_size)?\s*=\s*(2\s*\*\s*self\.args\.batch|self\.args\.batch\s*\*\s*2)"
    factor = 2 if re.search(doubled, source) else 1
    forces_dynamic = bool(re.search(r"self\.args\.dynamic\s*=\s*True\s*#.*INT8", source))
    line = re.search(r"max_shape\s*=\s*\(\*shape\[:2\],\s*\*\((.*?)\s+for d in shape\[2:\]\)\)", source)
    if line is None:
        scale = "2"
        notes.append("dynamic profile max shape not found in the installed exporter; assumed 2x imgsz (8.4.x)")
    elif "max(2, workspace or 2)" in line.group(1):
        scale = "max(2, workspace or 2)"
    elif "max(1," in line.group(1):
        scale = "max(1, workspace)"
    else:
        scale = "2"
    io_max = bool(re.search(r"get_tensor_profile_shape\(name,\s*0\)\[2\]", source))
    return ExportRules(version, workspace, factor, forces_dynamic, scale, io_max, tuple(notes))
