"""``too_large_error``: the one-line error for an estimate too large to make here, recognised from what
numpy and torch themselves raise when an allocation fails or a size overflows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolomem.errors import UserError, too_large_error


def _raised(allocate) -> BaseException:
    with pytest.raises((MemoryError, RuntimeError)) as caught:
        allocate()
    return caught.value


def test_torchs_cpu_allocator_failure_names_the_size():
    refused = too_large_error(_raised(lambda: torch.empty(2**60, dtype=torch.uint8)))
    assert isinstance(refused, UserError)
    assert "torch could not allocate 1073741824.0 GiB" in str(refused) and "smaller batch or imgsz" in str(refused)


def test_numpys_memory_error_keeps_its_own_words():
    refused = too_large_error(_raised(lambda: np.empty(2**55, dtype=np.uint8)))
    assert isinstance(refused, UserError) and "Unable to allocate 32.0 PiB" in str(refused)


def test_a_size_past_torchs_element_count_is_named():
    # what the assigner's broadcast raised at batch=1e7 (a meta tensor: nothing is allocated)
    overflow = _raised(lambda: torch.empty(2**40, 1, device="meta") - torch.empty(1, 2**40, device="meta"))
    refused = too_large_error(overflow)
    assert isinstance(refused, UserError) and "more than 2^63 elements" in str(refused)


def test_other_errors_are_not_taken_for_too_large():
    assert too_large_error(RuntimeError("CUDA error: device-side assert triggered")) is None
    assert too_large_error(ValueError("can't allocate memory")) is None


def test_a_dependency_missing_under_an_installed_package_is_one_line(tmp_path):
    """An Ultralytics release installed without its dependencies (8.2 imports tqdm) ended in a traceback.
    A stand-in ``ultralytics`` that imports a module nobody has: the CLI says what to install, exit 2."""
    import subprocess
    import sys

    package = tmp_path / "ultralytics"
    package.mkdir()
    (package / "__init__.py").write_text("__version__ = '8.2.0'\nimport yolomem_test_not_a_module\n")
    (tmp_path / "ultralytics-8.2.0.dist-info").mkdir()  # as pip install --target leaves it
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "YOLOMEM_NO_CACHE": "1"}
    done = subprocess.run([sys.executable, "-m", "yolomem", "estimate", "yolov8n.yaml"], capture_output=True,
                          text=True, env=env, timeout=300)  # fmt: skip
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "the installed ultralytics 8.2.0 needs" in done.stderr and "'yolomem_test_not_a_module'" in done.stderr
    assert "pip install yolomem_test_not_a_module" in done.stderr


def test_a_module_missing_in_yolomem_itself_is_not_dressed_up():
    from yolomem.errors import missing_dependency_error

    with pytest.raises(ModuleNotFoundError) as caught:
        exec("import yolomem_test_not_a_module", {"__name__": "yolomem.some_module"})  # noqa: S102
    assert missing_dependency_error(caught.value) is None  # a bug of ours keeps its traceback
    with pytest.raises(ModuleNotFoundError) as caught:
        exec("import cv2_not_here.sub", {"__name__": "ultralytics.utils"})  # noqa: S102
    refused = missing_dependency_error(caught.value)
    assert refused is not None and "ultralytics" in str(refused) and "'cv2_not_here'" in str(refused)


def test_pkg_resources_missing_under_ultralytics_8_0_names_the_setuptools_that_has_it():
    """Ultralytics 8.0's checks import pkg_resources, which setuptools dropped in release 81: the hint is
    the setuptools that still ships it, not a package called pkg_resources."""
    from yolomem.errors import missing_dependency_error

    with pytest.raises(ModuleNotFoundError) as caught:  # as Python raises it, whether or not this machine has it
        exec("raise ModuleNotFoundError(\"No module named 'pkg_resources'\", name='pkg_resources')",  # noqa: S102
             {"__name__": "ultralytics.utils.checks"})  # fmt: skip
    refused = str(missing_dependency_error(caught.value))
    assert "'pkg_resources'" in refused and refused.endswith("(pip install 'setuptools<81')")
