"""yolomem: how much GPU memory YOLO training will need, answered before training, without a GPU."""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["Deployment", "Estimate", "EstimateConfig", "UserError", "deploy", "estimate", "__version__"]


def __getattr__(name: str):
    # torch and ultralytics load only when the API is used, so `yolomem --help` stays fast
    if name in {"Estimate", "estimate"}:
        from yolomem.result import estimate as estimate_module

        return getattr(estimate_module, name)
    if name in {"Deployment", "deploy"}:
        from yolomem.deployment import estimate as deploy_module

        return getattr(deploy_module, name)
    if name == "EstimateConfig":
        from yolomem.config.settings import EstimateConfig

        return EstimateConfig
    if name == "UserError":
        from yolomem.errors import UserError

        return UserError
    raise AttributeError(f"module 'yolomem' has no attribute {name!r}")
