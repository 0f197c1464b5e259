import os

# Ultralytics must never reach the network in tests (no fonts, weights, datasets, update checks).
os.environ.setdefault("YOLO_OFFLINE", "1")

# The trace cache (yolomem.trace.store) of a test session lives in a temporary folder, never in the
# user's cache; tests that look at the cache itself give each test its own folder.
if "YOLOMEM_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    _cache = tempfile.mkdtemp(prefix="yolomem-test-cache-")
    os.environ["YOLOMEM_CACHE_DIR"] = _cache
    atexit.register(shutil.rmtree, _cache, ignore_errors=True)


import sys  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _fresh_figures():
    """Every test computes its figures afresh: ``estimate_figures`` keeps the last ones by config, and a
    test may change behaviour (a monkeypatch) that an earlier test's figures did not see."""
    module = sys.modules.get("yolomem.result.estimate")  # not imported: nothing kept (and no torch import here)
    if module is not None:
        module.forget_recent_figures()
    yield
