"""``host_memory_error``: the one-line error for an estimate the host's memory cannot hold, recognised from
what numpy and torch themselves raise when an allocation fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from yolomem.errors import UserError, host_memory_error


def _raised(allocate) -> BaseException:
    with pytest.raises((MemoryError, RuntimeError)) as caught:
        allocate()
    return caught.value


def test_torchs_cpu_allocator_failure_names_the_size():
    refused = host_memory_error(_raised(lambda: torch.empty(2**60, dtype=torch.uint8)))
    assert isinstance(refused, UserError)
    assert "torch could not allocate 1073741824.0 GiB" in str(refused) and "smaller batch or imgsz" in str(refused)


def test_numpys_memory_error_keeps_its_own_words():
    refused = host_memory_error(_raised(lambda: np.empty(2**55, dtype=np.uint8)))
    assert isinstance(refused, UserError) and "Unable to allocate 32.0 PiB" in str(refused)


def test_other_errors_are_not_taken_for_host_memory():
    assert host_memory_error(RuntimeError("CUDA error: device-side assert triggered")) is None
    assert host_memory_error(ValueError("can't allocate memory")) is None
