"""Ultralytics 8.0.35-8.0.135 under the module names of the present layout.

8.0.136 moved the package: ``ultralytics.yolo.engine`` became ``ultralytics.engine``, and likewise
``yolo.utils`` -> ``utils``, ``yolo.data`` -> ``data``, ``yolo.cfg`` -> ``cfg``, ``yolo.v8`` ->
``models.yolo`` and ``vit`` -> ``models`` (RT-DETR); the model and dataset YAMLs went from
``ultralytics/models`` and ``ultralytics/datasets`` to ``ultralytics/cfg/``. The code moved with few changes, and yolomem reads it under the new names:
``alias_legacy_layout`` makes each new name the very module object of the old one (not a second
copy: classes and module state stay one), for as long as the process lives, and only where the
installed package has the old layout. What else these releases do otherwise is followed where it
matters (``release.py``; up to 8.0.110 the loss in the trainer, ``UltralyticsRun._forward_and_loss``);
``check_release`` refuses the releases before 8.0.35 (``release.OLDEST_SUPPORTED`` says why).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
from pathlib import Path

# new name -> old name; a submodule follows its package (ultralytics.utils.loss -> ultralytics.yolo.utils.loss)
RENAMED = {
    "ultralytics.engine": "ultralytics.yolo.engine",
    "ultralytics.utils": "ultralytics.yolo.utils",
    "ultralytics.data": "ultralytics.yolo.data",
    "ultralytics.cfg": "ultralytics.yolo.cfg",
    "ultralytics.models.yolo": "ultralytics.yolo.v8",
    "ultralytics.models.rtdetr": "ultralytics.vit.rtdetr",
    "ultralytics.models.utils": "ultralytics.vit.utils",
}


def old_name(name: str) -> str | None:
    """The old layout's name of a present-layout module name, or None where it did not move."""
    for new, old in RENAMED.items():
        if name == new or name.startswith(new + "."):
            return old + name[len(new) :]
    return None


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports a present-layout name as the module of its old name (importlib keeps the module's own
    ``__name__`` and ``__spec__``: it sets only what a module lacks)."""

    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if old_name(fullname) else None

    def create_module(self, spec):
        return importlib.import_module(old_name(spec.name))

    def exec_module(self, module) -> None:
        pass  # the old module ran its code when it was imported


def has_legacy_layout() -> bool:
    """Whether the installed Ultralytics keeps its trainer under ``ultralytics.yolo`` (8.0.135 and before)."""
    spec = importlib.util.find_spec("ultralytics")
    return bool(spec and spec.origin) and (Path(spec.origin).parent / "yolo" / "engine" / "trainer.py").is_file()


def alias_legacy_layout() -> None:
    """Install the aliases once, where the installed release has the old layout."""
    if any(isinstance(finder, _Alias) for finder in sys.meta_path) or not has_legacy_layout():
        return
    sys.meta_path.insert(0, _Alias())


def yaml_dir(package: Path, kind: str) -> Path:
    """Where the installed release keeps its ``kind`` YAMLs ("models" or "datasets")."""
    present = package / "cfg" / kind
    return present if present.is_dir() else package / kind
