"""GPU catalog: total memory of common cards, and the CUDA context term.

Total memory is ``total_memory`` as torch reports it (what the process can have: ``cudaMemGetInfo``'s
total) where a public log prints it: the T4 and the RTX 4090, from the device lines of the runs in
``measured_public_examples.csv``. Elsewhere it is the card's specification or nvidia-smi's "Total",
which can be up to about 300 MiB above torch's (the driver's reserve; the T4's 15360 MiB against
15102): the fit verdicts' margin (``margin=``, 10 % by default) covers that. The CUDA context (driver
state, loaded kernels, cuDNN and cuBLAS handles) is outside ``torch.cuda.memory_reserved()`` but shows
in nvidia-smi.

Jetson modules (``shared_memory=True``): one DRAM serves the CPU and the GPU, so ``total_bytes`` is the
memory CUDA reports on the module (``totalGlobalMem``: DRAM less the firmware carve-outs), and what a
deployment leaves of it is the RAM for the OS and the application. Where a log of a real unit printed
that total it is used (sources next to each entry, collected in ``deployment_memory.md`` section 5);
for modules without such a log the total is the nominal DRAM scaled by the ratio seen on the closest
module with one, and the entry says "assumed".

CUDA_CONTEXT_BYTES: measured. ``validation/results/h200-2026-12-04.jsonl`` holds 145 runs on one H200
(driver 580.159, CUDA 13.0, torch 2.11.0+cu130, cuDNN 9.19, lazy module loading), each its own process:
NVML's memory for the process minus ``memory_reserved()`` at the end of the training phase, with cuDNN
and cuBLAS loaded. Training runs: 666-702 MiB over 113 runs (8.4.190 and 8.3.253), median 668 MiB, the
expected figure. The upper figure's context is the most any of the 132 runs with the figure showed,
762 MiB (an AutoBatch probe of yolo11s). Public reports put the context at 300-600 MiB on older CUDA
and smaller cards (the PyTorch forum thread "CUDA context memory usage"), so both are on the safe side
there.
"""

from __future__ import annotations

import re

from dataclasses import dataclass, replace

from yolomem.errors import UserError, unknown

GiB = 1 << 30
CUDA_CONTEXT_BYTES = 668 << 20  # median of 113 measured training runs on an H200, see module docstring
CUDA_CONTEXT_UPPER_BYTES = 762 << 20  # the most any of the 132 measured runs showed: the upper figure's context


@dataclass(frozen=True)
class Gpu:
    name: str
    total_bytes: int
    context_bytes: int = CUDA_CONTEXT_BYTES
    shared_memory: bool = False  # Jetson: the GPU shares system RAM
    dram_bytes: int | None = None  # Jetson: the module's nominal DRAM (data sheet)
    source: str = ""  # where total_bytes comes from, when it is not the card's specification

    @property
    def usable_bytes(self) -> int:
        """What the caching allocator can get: the card minus the context."""
        return self.total_bytes - self.context_bytes

    @property
    def device_name(self) -> str:
        """The card as ``torch.cuda.get_device_name`` names it, near enough for the trainers' name checks
        (Ultralytics' ``check_amp``): "NVIDIA GeForce GTX 1650", "NVIDIA T1000", "NVIDIA A100 40GB"."""
        spaced = self.name.replace("-", " ")
        return f"NVIDIA GeForce {spaced}" if self.name.startswith(("GTX-", "RTX-")) else f"NVIDIA {spaced}"


def _gib(x: float) -> int:
    return int(x * GiB)


def _mib(x: int) -> int:
    return x << 20


def _jetson(name: str, dram_gib: int, total_mib: int, source: str) -> Gpu:
    return Gpu(name, _mib(total_mib), shared_memory=True, dram_bytes=_gib(dram_gib), source=source)


# CUDA totals seen on real units (deployment_memory.md section 5); the ratio total/DRAM of the nearest
# logged module stands in for modules without a log.
_ORIN_8GB_MIB = 7620  # "Orin, 7620MiB", 8 GB Orin module, JetPack 6.2.1 (EdgeFirst validator-on-Jetson doc)
_ORIN_16GB_MIB = 15536  # trtexec "Device Global Memory: 15536 MiB", Orin NX 16GB (OE4T/meta-tegra PR 2243)
_AGX_64GB_MIB = 62841  # "Orin, 62841MiB", AGX Orin 64GB (ultralytics issue 22271)
_AGX_32GB_MIB = _AGX_64GB_MIB // 2  # assumed: half the 64 GB module's total
JETSONS = (
    _jetson("Jetson-Orin-Nano-4GB", 4, 3425, "log: CUDA:0 (Orin, 3425MiB), ultralytics issue 19614"),
    _jetson("Jetson-Orin-Nano-8GB", 8, _ORIN_8GB_MIB, "log: Orin, 7620MiB on an 8 GB Orin (EdgeFirst doc)"),
    _jetson("Jetson-Orin-NX-8GB", 8, _ORIN_8GB_MIB, "assumed: as the logged 8 GB Orin"),
    _jetson("Jetson-Orin-NX-16GB", 16, _ORIN_16GB_MIB, "log: trtexec Device Global Memory 15536 MiB (meta-tegra PR 2243)"),
    _jetson("Jetson-AGX-Orin-32GB", 32, _AGX_32GB_MIB, "assumed: half the logged AGX Orin 64GB"),
    _jetson("Jetson-AGX-Orin-64GB", 64, _AGX_64GB_MIB, "log: Orin, 62841MiB (ultralytics issue 22271)"),
    _jetson("Jetson-Xavier-NX-8GB", 8, _ORIN_8GB_MIB, "assumed: as the logged 8 GB Orin"),
    _jetson("Jetson-Xavier-NX-16GB", 16, _ORIN_16GB_MIB, "assumed: as the logged Orin NX 16GB"),
    _jetson("Jetson-AGX-Xavier-32GB", 32, _AGX_32GB_MIB, "assumed: as the AGX Orin 32GB"),
    _jetson("Jetson-AGX-Xavier-64GB", 64, _AGX_64GB_MIB, "assumed: as the logged AGX Orin 64GB"),
)

CATALOG: dict[str, Gpu] = {
    gpu.name: gpu
    for gpu in [
        Gpu("GTX-1060-6GB", _gib(6)),
        Gpu("GTX-1650", _gib(4)),
        Gpu("GTX-1660", _gib(6)),
        Gpu("GTX-1660-Ti", _gib(6)),
        Gpu("GTX-1660-SUPER", _gib(6)),
        Gpu("T1000", _gib(4)),  # the 4 GB workstation card (an 8 GB one too: gpu_mem=8)
        Gpu("RTX-2060", _gib(6)),
        Gpu("RTX-2070", _gib(8)),
        Gpu("RTX-2080", _gib(8)),
        Gpu("RTX-2080-Ti", _gib(11)),
        Gpu("RTX-3050", _gib(8)),
        Gpu("RTX-3060-12GB", _gib(12)),
        Gpu("RTX-3060-Ti", _gib(8)),
        Gpu("RTX-3070", _gib(8)),
        Gpu("RTX-3080", _gib(10)),
        Gpu("RTX-3080-Ti", _gib(12)),
        Gpu("RTX-3090", _gib(24)),
        Gpu("RTX-4060", _gib(8)),
        Gpu("RTX-4060-Ti", _gib(8)),  # the 8 GB card (a 16 GB one too: RTX-4060-Ti-16GB)
        Gpu("RTX-4060-Ti-16GB", _gib(16)),
        Gpu("RTX-4070", _gib(12)),
        Gpu("RTX-4070-Ti", _gib(12)),
        Gpu("RTX-4070-Ti-SUPER", _gib(16)),
        Gpu("RTX-4080", _gib(16)),
        Gpu("RTX-A4000", _gib(16)),
        Gpu("RTX-A5000", _gib(24)),
        # issue 1451's AutoBatch line prints torch's total as 23.99G (GiB): 24561-24570 MiB, the lower end taken
        Gpu("RTX-4090", _mib(24561)),
        Gpu("RTX-5090", _gib(32)),
        # 16 GB card: nvidia-smi's Total 15360 MiB (ECC on); torch's total_memory 15102 MiB, as the yolov5
        # tutorial's and the yolo11n notebook's device lines print it ("Tesla T4, 15102MiB")
        Gpu("T4", _mib(15102)),
        Gpu("L4", _gib(22.5)),
        Gpu("A10", _gib(22.5)),
        Gpu("A10G", _mib(23028)),  # AWS g5: 24 GB card, nvidia-smi Total 23028 MiB (ECC on)
        Gpu("P100-16GB", _gib(16)),  # Kaggle and older clouds' Tesla P100 PCIe 16GB
        Gpu("V100-16GB", _gib(16)),
        Gpu("V100-32GB", _gib(32)),
        Gpu("A100-40GB", _gib(40)),
        Gpu("A100-80GB", _gib(80)),
        Gpu("A6000", _gib(48)),
        Gpu("A40", _gib(48)),
        Gpu("L40S", _mib(46068)),  # 48 GB card; nvidia-smi Total 46068 MiB (ECC on)
        Gpu("H100-80GB", _mib(81559)),  # H100 SXM/PCIe 80GB: nvidia-smi Total 81559 MiB
        Gpu("H200", _mib(143771)),  # "141 GB" is decimal; nvidia-smi Total 143771 MiB (~140.4 GiB)
        *JETSONS,
    ]
}


def _key(name: str) -> str:
    # "NVIDIA GeForce RTX 3090", "Tesla T4": the names torch and nvidia-smi print
    return "".join(ch for ch in name.lower() if ch.isalnum()).replace("geforce", "").replace("nvidia", "").replace("tesla", "")


_ALIASES = {_key(name): name for name in CATALOG}
_ALIASES.update({_key("3060"): "RTX-3060-12GB", _key("3090"): "RTX-3090", _key("4090"): "RTX-4090",
                 _key("A100"): "A100-40GB", _key("H100"): "H100-80GB", _key("V100"): "V100-16GB",
                 _key("1060"): "GTX-1060-6GB", _key("P100"): "P100-16GB",
                 # the names the tables show (``render.units.card_name``), typed back
                 _key("RTX-3060"): "RTX-3060-12GB", _key("GTX-1060"): "GTX-1060-6GB",
                 # short Jetson names: the smaller of the module's two memory sizes (the verdict errs safe; the
                 # name shown says which, and the full name picks the other)
                 _key("Jetson-Orin-Nano"): "Jetson-Orin-Nano-4GB",
                 _key("Jetson-Orin-NX"): "Jetson-Orin-NX-8GB", _key("Jetson-AGX-Orin"): "Jetson-AGX-Orin-32GB",
                 _key("Jetson-Xavier-NX"): "Jetson-Xavier-NX-8GB", _key("Jetson-AGX-Xavier"): "Jetson-AGX-Xavier-32GB",
                 _key("Jetson-Orin-32GB"): "Jetson-AGX-Orin-32GB", _key("Jetson-Orin-64GB"): "Jetson-AGX-Orin-64GB"})  # fmt: skip
_ALIASES.update({key.removeprefix("jetson"): name for key, name in list(_ALIASES.items()) if key.startswith("jetson")})


def is_device_index(name: str) -> bool:
    """Ultralytics' ``device=0``, ``0,1`` or ``cuda:0``: the machine's numbering of its cards, not a card."""
    return re.fullmatch(r"(cuda:?)?[\d,]*", name.lower()) is not None


def find_gpu(name: str, gpu_mem_gib: float | None = None) -> Gpu:
    """A catalog card by (loose) name; ``gpu_mem_gib`` overrides its memory or defines a custom card."""
    if gpu_mem_gib is not None:
        if gpu_mem_gib <= 0:
            raise UserError(f"gpu_mem={gpu_mem_gib} must be a positive number of GiB")
        if _gib(gpu_mem_gib) <= CUDA_CONTEXT_BYTES:
            raise UserError(f"gpu_mem={gpu_mem_gib:g} GiB leaves nothing after the CUDA context "
                            f"({CUDA_CONTEXT_BYTES / GiB:.2f} GiB); give the card's whole memory in GiB")  # fmt: skip
        base = CATALOG.get(_ALIASES.get(_key(name), ""), None) if name else None
        if base is None:
            return Gpu(name or "custom", _gib(gpu_mem_gib))
        # the catalog card at the size given, its kind kept (a Jetson stays unified memory)
        return replace(base, total_bytes=_gib(gpu_mem_gib), source=f"gpu_mem={gpu_mem_gib:g}")
    canonical = _ALIASES.get(_key(name))
    if canonical is None and is_device_index(str(name)):
        raise UserError(f"gpu {name!r} is a CUDA device index (Ultralytics' device=); name the card instead, e.g. "
                        f"'T4' or 'RTX-3090' (yolomem models the card, not the machine's numbering)")  # fmt: skip
    if canonical is None:
        raise unknown("gpu", name, CATALOG)
    return CATALOG[canonical]
