"""GPU software stack facts: driver/CUDA compatibility, MIG profiles, EKS GPU instance types, and pool checks.

Driver/CUDA: the pinned vLLM image (v0.33.0) is built against CUDA 13 — its compiled extensions link
`libcudart.so.13` (read from the release's wheel). A CUDA 13.x application needs an NVIDIA driver of branch 580 or
newer (CUDA's minor-version compatibility: any 13.x runtime on a >= 580 driver); CUDA 12.x needs branch 525 or
newer. The table is small on purpose: it lists the CUDA major versions a pinned image can need.
"""

from __future__ import annotations

from dataclasses import dataclass

from components.vllm import VLLM_VERSION

# CUDA major version of each pinned vLLM image we ship, and the minimum driver branch for each CUDA major.
VLLM_CUDA_MAJOR = {"v0.33.0": 13}
MIN_DRIVER_BRANCH = {12: 525, 13: 580}

# MIG profiles each GPU type supports (NVIDIA MIG user guide). GPUs without MIG are absent.
MIG_PROFILES: dict[str, tuple[str, ...]] = {
    "A100-40GB": ("1g.5gb", "1g.10gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    "A100-80GB": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB-SXM": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H100-80GB-PCIE": ("1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    "H200-141GB": ("1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb"),
}


@dataclass(frozen=True)
class InstanceType:
    gpu: str
    gpus: int


# EKS GPU instance types and what they carry (AWS instance type documentation).
EKS_INSTANCE_TYPES: dict[str, InstanceType] = {
    "p4d.24xlarge": InstanceType("A100-40GB", 8),
    "p4de.24xlarge": InstanceType("A100-80GB", 8),
    "p5.48xlarge": InstanceType("H100-80GB-SXM", 8),
    "p5.4xlarge": InstanceType("H100-80GB-SXM", 1),
    "p5e.48xlarge": InstanceType("H200-141GB", 8),
    "p5en.48xlarge": InstanceType("H200-141GB", 8),
    "g6e.xlarge": InstanceType("L40S", 1),
    "g6e.2xlarge": InstanceType("L40S", 1),
    "g6e.12xlarge": InstanceType("L40S", 4),
    "g6e.24xlarge": InstanceType("L40S", 4),
    "g6e.48xlarge": InstanceType("L40S", 8),
    "g5.xlarge": InstanceType("A10", 1),
    "g5.2xlarge": InstanceType("A10", 1),
    "g5.12xlarge": InstanceType("A10", 4),
    "g5.48xlarge": InstanceType("A10", 8),
    "g6.xlarge": InstanceType("L4", 1),
    "g6.2xlarge": InstanceType("L4", 1),
    "g6.12xlarge": InstanceType("L4", 4),
    "g6.48xlarge": InstanceType("L4", 8),
}


def required_driver_branch(vllm_version: str = VLLM_VERSION) -> int:
    return MIN_DRIVER_BRANCH[VLLM_CUDA_MAJOR[vllm_version]]


def driver_problem(driver_version: str, vllm_version: str = VLLM_VERSION) -> str | None:
    """Why `driver_version` (e.g. "570.172.08" or a branch "580") cannot run the pinned vLLM image, or None."""
    try:
        branch = int(driver_version.split(".")[0])
    except ValueError:
        return f"driver version {driver_version!r} is not an NVIDIA driver version such as 580.95.05"
    cuda = VLLM_CUDA_MAJOR[vllm_version]
    needed = MIN_DRIVER_BRANCH[cuda]
    if branch < needed:
        return (
            f"driver {driver_version} (branch {branch}) cannot run vLLM {vllm_version}, which is built with CUDA "
            f"{cuda}.x and needs driver branch {needed} or newer; install a >= {needed} driver"
        )
    return None


def mig_problem(gpu: str, profile: str | None) -> str | None:
    profiles = MIG_PROFILES.get(gpu)
    if profiles is None:
        return f"{gpu} does not support MIG; use strategy none (or time-slicing)"
    if profile is not None and profile not in profiles:
        return f"MIG profile {profile!r} does not exist on {gpu}; use one of {', '.join(profiles)}"
    return None


def instance_problem(instance_type: str, gpu: str, gpus_per_node: int) -> str | None:
    known = EKS_INSTANCE_TYPES.get(instance_type)
    if known is None:
        known_types = ", ".join(sorted(EKS_INSTANCE_TYPES))
        return f"{instance_type!r} is not a GPU instance type this platform knows ({known_types})"
    if known.gpu != gpu:
        return f"{instance_type} carries {known.gpu}, not {gpu}"
    if known.gpus != gpus_per_node:
        return f"{instance_type} has {known.gpus} GPUs per node, not gpus_per_node={gpus_per_node}"
    return None
