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
