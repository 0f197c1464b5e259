"""Wall time of ``yolomem estimate`` against the floor of this approach: a bare fake forward+backward.

Prints, for yolov8n/s/m/l/x at batch 16, imgsz 640, AMP: the estimate's time (trace of 2 training
iterations + allocator replay) and the time of one fake forward+backward of the same model with no
recording, no loss, no optimizer. Targets (issue 2): under 3 s each and under 3x the bare trace.

    python benchmarks/bench_estimate.py [yolov8n yolov8s ...]
"""

from __future__ import annotations

import sys
import time

import torch
from torch._subclasses.fake_tensor import FakeTensorMode


def bare_fake_forward_backward(model_name: str, batch: int = 16, imgsz: int = 640) -> float:
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(f"{model_name}.yaml", verbose=False)
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode:
        for module in model.modules():
            for key, param in list(module._parameters.items()):
                if param is not None:
                    module._parameters[key] = torch.nn.Parameter(mode.from_tensor(param.detach()))
        started = time.perf_counter()
        x = torch.empty(batch, 3, imgsz, imgsz)
        with torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        sum(o.sum() for o in out.values() if isinstance(o, torch.Tensor)).backward() if isinstance(out, dict) else out[0].sum().backward()
        return time.perf_counter() - started


def main(models: list[str]) -> None:
    from yolomem.result.estimate import estimate

    estimate("yolov8n.yaml", imgsz=64, batch=2, iterations=1)  # imports and first-use caches
    print(f"{'model':<10}{'estimate s':>12}{'bare fwd+bwd s':>16}{'ratio':>8}{'GPU_mem':>10}")
    for name in models:
        started = time.perf_counter()
        result = estimate(f"{name}.yaml", batch=16, imgsz=640, amp=True)
        took = time.perf_counter() - started
        bare = bare_fake_forward_backward(name)
        print(f"{name:<10}{took:>12.2f}{bare:>16.2f}{took / bare:>8.2f}{result.gpu_mem_printed:>10}")


if __name__ == "__main__":
    main(sys.argv[1:] or ["yolov8n", "yolov8s", "yolov8m", "yolov8l", "yolov8x"])
