"""What values kept in the trace cache (``yolomem.trace.store``) are keyed by: a traced run's family,
and the model a probe was computed for."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import asdict
from pathlib import Path

from yolomem.config.models import ResolvedModel
from yolomem.config.settings import EstimateConfig
from yolomem.trace.store import code_key

# settings that change only the replay, the host figures or nothing traced: not part of a family
NOT_TRACED = frozenset({"batch", "gpu", "gpu_mem", "alloc_conf", "cache", "workers"})


def family_key(config: EstimateConfig, resolved: ResolvedModel) -> dict:
    """Everything a trace depends on but the batch: the code, the model, and the traced settings."""
    return code_key() | {"model": model_key(resolved),
                         "config": {k: v for k, v in config.to_json().items() if k not in NOT_TRACED}}  # fmt: skip


def model_key(resolved: ResolvedModel) -> dict:
    """The model as stored values are keyed by it: its resolved form, and the digest of the darknet
    .cfg file an original design is read from (its layers are not in the resolved form)."""
    model = asdict(resolved) | {"note": None}
    original = resolved.cfg.get("original") if isinstance(resolved.cfg, dict) else None
    if isinstance(original, dict) and original.get("path"):
        model["file"] = _file_digest(str(original["path"]))
    return model


@functools.cache
def _file_digest(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "-"
