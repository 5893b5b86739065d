"""GPU catalog: the memory CUDA really reports, HBM bandwidth, dense tensor throughput and the node label GFD sets.

`memory_gib` is what `torch.cuda.mem_get_info()` / vLLM's start-up log report as `total_gpu_memory`, not the
marketing size: an "80 GB" H100 exposes ≈ 79.18 GiB. vLLM multiplies this number by `--gpu-memory-utilization`,
so using the marketing size would overstate the KV cache by several GiB.

Throughput figures are vendor datasheet **dense** numbers (datasheets also quote "with sparsity", twice as high).
`product_labels` are the values NVIDIA GPU Feature Discovery writes into the `nvidia.com/gpu.product` node label
(the NVML device name with spaces replaced by dashes), used to pin a model's pods to the right node pool.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3


class CapacityError(ValueError):
    """An invalid input to the capacity planner (unknown GPU or model, a non-positive number, an unknown dtype).

    An infeasible sizing is not an error: `plan()` returns a `Plan` with `fits=False` and the reasons instead.
    """


@dataclass(frozen=True)
class GpuType:
    name: str
    memory_gib: float  # CUDA-visible total (what vLLM logs as total_gpu_memory), not the marketing size
    bandwidth_tbs: float  # HBM/GDDR bandwidth, TB/s (10^12 bytes per second)
    bf16_tflops: float  # dense BF16 tensor-core TFLOPS
    fp8_tflops: float | None  # dense FP8 tensor-core TFLOPS; None when the GPU has no FP8 tensor cores
    nvlink: bool  # GPUs of one node talk over NVLink/NVSwitch (fast tensor-parallel all-reduce)
    product_labels: tuple[str, ...]  # `nvidia.com/gpu.product` values reported by GPU Feature Discovery

    def __post_init__(self) -> None:
        for field_name in ("memory_gib", "bandwidth_tbs", "bf16_tflops"):
            if not getattr(self, field_name) > 0:
                raise CapacityError(
                    f"GpuType {self.name!r}: {field_name} must be positive, got {getattr(self, field_name)}"
                )
        if self.fp8_tflops is not None and not self.fp8_tflops > 0:
            raise CapacityError(f"GpuType {self.name!r}: fp8_tflops must be positive or None, got {self.fp8_tflops}")

    @property
    def has_fp8(self) -> bool:
        return self.fp8_tflops is not None

    @property
    def memory_bytes(self) -> float:
        return self.memory_gib * GIB


# Sources: NVIDIA datasheets (A100, H100, H200, L40S, A10, L4) for bandwidth and dense TFLOPS; CUDA-visible memory
# from vLLM start-up logs (`total_gpu_memory (...GiB)`) as collected in ../shared/notes/capacity.md.
GPU_CATALOG: dict[str, GpuType] = {
    gpu.name: gpu
    for gpu in (
        GpuType(
            name="A100-40GB",
            memory_gib=39.38,
            bandwidth_tbs=1.555,
            bf16_tflops=312.0,
            fp8_tflops=None,
            nvlink=True,  # SXM4 boards; the PCIe card is listed under the same type (NVLink bridge optional)
            product_labels=("NVIDIA-A100-SXM4-40GB", "NVIDIA-A100-PCIE-40GB"),
        ),
        GpuType(
            name="A100-80GB",
            memory_gib=79.15,
            bandwidth_tbs=2.039,
            bf16_tflops=312.0,
            fp8_tflops=None,
            nvlink=True,
            product_labels=("NVIDIA-A100-SXM4-80GB", "NVIDIA-A100-80GB-PCIe"),
        ),
        GpuType(
            name="H100-80GB-SXM",
            memory_gib=79.18,
            bandwidth_tbs=3.35,
            bf16_tflops=989.0,
            fp8_tflops=1979.0,
            nvlink=True,
            product_labels=("NVIDIA-H100-80GB-HBM3",),
        ),
        GpuType(
            name="H100-80GB-PCIE",
            memory_gib=79.18,
            bandwidth_tbs=2.0,
            bf16_tflops=756.0,
            fp8_tflops=1513.0,
            nvlink=False,  # only pairs with an optional NVLink bridge; no NVSwitch
            product_labels=("NVIDIA-H100-PCIe",),
        ),
        GpuType(
            name="H200-141GB",
            memory_gib=139.8,
            bandwidth_tbs=4.8,
            bf16_tflops=989.0,
            fp8_tflops=1979.0,
            nvlink=True,
            product_labels=("NVIDIA-H200", "NVIDIA-H200-141GB-HBM3"),
        ),
        GpuType(
            name="L40S",
            memory_gib=44.35,
            bandwidth_tbs=0.864,
            bf16_tflops=362.0,
            fp8_tflops=733.0,
            nvlink=False,
            product_labels=("NVIDIA-L40S",),
        ),
        GpuType(
            name="A10",
            memory_gib=22.07,  # vLLM log on a 24 GB Ampere card: total_gpu_memory (22.07GiB)
            bandwidth_tbs=0.6,
            bf16_tflops=125.0,
            fp8_tflops=None,
            nvlink=False,
            product_labels=("NVIDIA-A10", "NVIDIA-A10G"),
        ),
        GpuType(
            name="L4",
            memory_gib=22.06,  # 24 GB GDDR6; CUDA-visible ≈ 22.06 GiB (notes: 22-23.6 GiB for 24 GB cards)
            bandwidth_tbs=0.3,
            bf16_tflops=121.0,
            fp8_tflops=242.5,
            nvlink=False,
            product_labels=("NVIDIA-L4",),
        ),
    )
}


def gpu_type(name: str) -> GpuType:
    """Look a GPU up by catalog name (case-insensitive) or by one of its `nvidia.com/gpu.product` labels."""
    if not isinstance(name, str) or not name.strip():
        raise CapacityError(f"gpu: a GPU type name is required; known: {', '.join(GPU_CATALOG)}")
    wanted = name.strip().lower()
    for key, gpu in GPU_CATALOG.items():
        if key.lower() == wanted or any(label.lower() == wanted for label in gpu.product_labels):
            return gpu
    raise CapacityError(f"gpu: unknown GPU type {name!r}; known: {', '.join(GPU_CATALOG)}")
