"""Host RAM of the deploying process. On a Jetson it comes out of the same DRAM as the GPU figure.

Rough by nature: it depends on the CUDA, cuDNN and TensorRT builds more than on the model. Each term
names its source; the range is what the sources allow.

- **process**: Python with torch and ultralytics imported and a CUDA context: 543 MiB measured here
  (CPU wheel, torch 2.14.1, ultralytics 8.4.190: no CUDA libraries) to 1050 MiB: ultralytics issue
  7539 logged 1253.9 MiB RSS after ``model.to("cuda")`` for a yolov8m, less its two host copies of
  the weights (2 x 25.9M x 4 B = 198 MiB).
- **kernel libraries** loaded at the first inference (cuDNN, cuBLAS; lazy loading on): the same log
  rose to 2529.2 MiB after one predict of 25 crops: 1275 MiB, less the 29 MiB of images = 1245 MiB.
  TensorRT instead loads its runtime: "around 800Mb to loading cuBLAS/cuDNN/TensorRT libraries"
  (NVIDIA forum, TensorRT 5), and ``trt.Runtime()`` + deserialization logged +1108.7 and +1504 MiB.
- **model**: the checkpoint as loaded (fp32) plus the copy ``setup_model``/``get_model`` makes; the
  fused copy then moves to the device. Exported formats keep the file in memory instead.
- **images**: the source images, their letterboxed copies and the stacked batch (uint8).
- **the OS** (a Jetson only, where it shares the DRAM): not a term of the process; the verdict keeps
  ``os_reserve=`` GiB of the module for it (``OS_HEADLESS_BYTES`` by default).
"""

from __future__ import annotations

from yolomem.deployment.terms import Term

MiB = 1 << 20
PROCESS = (543 * MiB, 1050 * MiB)
TORCH_LIBRARIES = (600 * MiB, 1245 * MiB)  # low: half the logged rise, for builds with fewer kernels loaded
TRT_LIBRARIES = (800 * MiB, 1505 * MiB)  # forum: ~800 MB libraries; +1504 MiB deserialize logged (TRT 5)
# What a Jetson's OS takes of the module's DRAM (deployment_memory.md section 5; onnxruntime issue 4259, a
# Jetson Nano 4GB): about 1.5 GB with the desktop, 300-500 MB idle when logged in over ssh without it.
# The verdict keeps the headless high end by default (``os_reserve=``), read as MiB, the larger reading.
OS_HEADLESS_BYTES = 500 * MiB
OS_DESKTOP_GB = 1.5


# The trace runs the predictor on real (zero) images, so it holds them on this machine as the predictor
# would: batch 64 at imgsz 8192 was killed at 23.6 GB of RSS. Above this it refuses in one line.
TRACED_IMAGES_BYTES_MAX = 4 << 30


def images_bytes(batch: int, imgsz: int) -> int:
    """One uint8 copy of a batch of square BGR images."""
    return batch * imgsz * imgsz * 3


def check_traced_images(batch: int, imgsz: int) -> None:
    """Refuse a predict whose images the trace could not hold here (``TRACED_IMAGES_BYTES_MAX``)."""
    from yolomem.errors import UserError

    needed = 3 * images_bytes(batch, imgsz)
    if needed > TRACED_IMAGES_BYTES_MAX:
        raise UserError(f"batch={batch} at imgsz={imgsz}: the predictor's source, letterboxed and stacked images take "
                        f"{needed / (1 << 30):.1f} GiB of host memory, which tracing it holds here too; more than yolomem "
                        f"holds ({TRACED_IMAGES_BYTES_MAX >> 30} GiB): ask for a smaller batch or imgsz")  # fmt: skip


def host_terms(fmt: str, params: int, batch: int, imgsz: int, engine_file_bytes: int = 0) -> tuple[Term, ...]:
    weights = params * 4
    images = images_bytes(batch, imgsz)
    libraries = TRT_LIBRARIES if fmt == "engine" else TORCH_LIBRARIES
    model = (Term("host_model", "model on the host (checkpoint and setup copy, fp32)", 2 * weights, weights,
                  2 * weights, "counted", "one copy moves to the device; the loaded checkpoint and a copy stay")
             if fmt == "torch" else
             Term.exact("host_model", "exported file read into memory", engine_file_bytes, "counted"))  # fmt: skip
    return (
        Term("host_process", "Python, torch, ultralytics, CUDA runtime", PROCESS[1], PROCESS[0], PROCESS[1], "reported",
             "543 MiB measured without CUDA; 1050 MiB from ultralytics issue 7539"),
        Term("host_libraries", "kernel libraries loaded at first inference" if fmt != "engine" else "TensorRT runtime and libraries",
             libraries[1], libraries[0], libraries[1], "reported"),
        model,
        Term("host_images", "images: source, letterboxed, stacked (uint8)", 3 * images, 2 * images, 3 * images, "counted"),
    )  # fmt: skip
