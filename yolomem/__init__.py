"""yolomem: how much GPU memory YOLO training will need, answered before training, without a GPU."""

from __future__ import annotations

import warnings

__version__ = "0.1.0"
__all__ = ["Deployment", "Estimate", "EstimateConfig", "UserError", "deploy", "estimate", "__version__"]

# Ultralytics 8.0 imports pkg_resources, whose setuptools warns on import that it is going away: a
# message about the user's environment that yolomem's output has no use for
warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)


def _read_legacy_layout() -> None:
    # before anything imports Ultralytics under its present module names (8.0.35-8.0.135 had others)
    from yolomem.loops.ultralytics.legacy_layout import alias_legacy_layout

    alias_legacy_layout()


_read_legacy_layout()


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
