"""The code that computes a figure: yolomem, torch and Ultralytics, as every result names them."""

from __future__ import annotations


def traced_versions() -> tuple[str, str, str]:
    """(yolomem, torch without its local build tag, Ultralytics) of this process."""
    import torch
    import ultralytics

    from yolomem import __version__

    return __version__, torch.__version__.split("+")[0], ultralytics.__version__
