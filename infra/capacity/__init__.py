"""Capacity planner: model x GPU x context x load → tensor/pipeline parallelism, replicas, GPUs and nodes.

Pure Python, no Pulumi and no side effects on import. See docs/capacity.md for the formulas and their sources.
"""

from infra.capacity.gpus import GPU_CATALOG, CapacityError, GpuType, gpu_type
from infra.capacity.models import MODEL_CATALOG, ModelSpec, lookup_model, model_from_config, resolve_model
from infra.capacity.planner import (
    BYTES_PER_PARAM,
    DEFAULT_GPU_MEMORY_UTILIZATION,
    DEFAULT_STORAGE_GBPS,
    KV_CACHE_DTYPE_BYTES,
    Plan,
    PlanRequest,
    Reserves,
    kv_bytes_per_token_rank,
    plan,
    valid_tensor_parallel_sizes,
    weight_bytes,
    weights_per_rank_bytes,
)

__all__ = [
    "BYTES_PER_PARAM",
    "DEFAULT_GPU_MEMORY_UTILIZATION",
    "DEFAULT_STORAGE_GBPS",
    "GPU_CATALOG",
    "KV_CACHE_DTYPE_BYTES",
    "MODEL_CATALOG",
    "CapacityError",
    "GpuType",
    "ModelSpec",
    "Plan",
    "PlanRequest",
    "Reserves",
    "gpu_type",
    "kv_bytes_per_token_rank",
    "lookup_model",
    "model_from_config",
    "plan",
    "resolve_model",
    "valid_tensor_parallel_sizes",
    "weight_bytes",
    "weights_per_rank_bytes",
]
