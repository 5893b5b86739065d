"""Capacity planner: model x GPU x context x load → tensor/pipeline parallelism, replicas, GPUs and nodes.

The memory model is vLLM's own (V1 engine, see ../shared/notes/capacity.md and docs/capacity.md):

    available_kv = gpu_memory_utilization x total_gpu_memory
                   - weights_per_rank - peak_activation - non_torch - cuda_graphs
    num_blocks   = floor(available_kv / (block_size x kv_bytes_per_token_rank))
    max_concurrency(max_model_len) = num_blocks / ceil(max_model_len / block_size)

`plan()` never raises for an infeasible sizing: it returns a `Plan` with `fits=False` and reasons that carry the
numbers. `CapacityError` is raised only for invalid inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from infra.capacity.gpus import GIB, CapacityError, GpuType
from infra.capacity.models import ModelSpec

# --- engine constants (vLLM v0.33, V1 engine) -------------------------------------------------------------------------
DEFAULT_GPU_MEMORY_UTILIZATION = 0.92  # `--gpu-memory-utilization` default of recent releases (notes/vllm.md)
DEFAULT_BLOCK_SIZE = 16  # tokens per KV-cache block (`--block-size` default on CUDA)
# Peak activation memory measured by vLLM's profile run on H100 with the default 8192 batched tokens; independent of
# max_model_len in V1. Dense models measure 4.8-5.6 GiB: the planner takes the upper end.
ACTIVATION_PEAK_DENSE_GIB = 5.6
ACTIVATION_PEAK_MOE_GIB = 7.4
ACTIVATION_REFERENCE_BATCHED_TOKENS = 8192
NON_TORCH_TP1_GIB = 0.13  # CUDA context, cuBLAS workspaces … at TP=1
NON_TORCH_MULTI_GPU_GIB = 0.55  # … plus NCCL buffers when the engine spans several GPUs
CUDA_GRAPH_RESERVE_GIB = 1.0  # recent releases reserve 0.1-2.4 GiB for captured CUDA graphs; 1.0 is mid-range
# vLLM's usage-context defaults: GPUs with >= 70 GiB that are not A100 get 1024 sequences / 8192 batched tokens.
LARGE_GPU_MIN_GIB = 70.0
MAX_NUM_SEQS_LARGE_GPU = 1024
MAX_NUM_SEQS_DEFAULT = 256
MAX_NUM_BATCHED_TOKENS_LARGE_GPU = 8192
MAX_NUM_BATCHED_TOKENS_DEFAULT = 2048

# --- speed and start-up constants -------------------------------------------------------------------------------------
PREFILL_FLOPS_EFFICIENCY = 0.5  # fraction of dense tensor FLOPS a prefill reaches (bound: ≈ 0.5 at best)
DEFAULT_PREFILL_TOKENS = 1024  # prompt length the prefill bound is given for
# Storage read bandwidth for the cold-start estimate, GB/s (10^9 bytes/s). 0.3 GB/s is the default safetensors loader
# from a gp3-class network disk (Llama-3-8B, 15 GB, ≈ 48 s); the Run:ai streamer reaches ≈ 1.1 GB/s from the same disk
# and ≈ 3 GB/s from S3. Conservative on purpose: the estimate sizes startup probes.
DEFAULT_STORAGE_GBPS = 0.3
COMPILE_AND_CUDA_GRAPH_S = 60.0  # torch.compile + CUDA-graph capture take 20-60 s; the upper end for probes

# --- dtypes -----------------------------------------------------------------------------------------------------------
# Bytes per parameter of the linear layers. Embeddings and the LM head stay BF16 under every quantization.
BYTES_PER_PARAM: dict[str, float] = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "awq": 0.52, "gptq": 0.52}
EMBEDDING_BYTES_PER_PARAM = 2.0
KV_CACHE_DTYPE_BYTES: dict[str, int] = {"auto": 2, "bf16": 2, "fp16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1}


@dataclass(frozen=True)
class Reserves:
    """The memory vLLM keeps off the KV cache on every GPU, and the engine constants; all overridable."""

    activation_dense_gib: float = ACTIVATION_PEAK_DENSE_GIB
    activation_moe_gib: float = ACTIVATION_PEAK_MOE_GIB
    # The profile run pushes max_num_batched_tokens tokens through the model, so the activation peak grows with that
    # budget; the measured figures are for 8192 tokens. Smaller GPUs default to 2048 tokens: with scaling on, their
    # peak is taken as 2048/8192 of the measured one (vLLM logs on 24 GB cards show 0.2-1.4 GiB).
    activation_reference_batched_tokens: int = ACTIVATION_REFERENCE_BATCHED_TOKENS
    scale_activation_with_batched_tokens: bool = True
    non_torch_tp1_gib: float = NON_TORCH_TP1_GIB
    non_torch_multi_gpu_gib: float = NON_TORCH_MULTI_GPU_GIB
    cuda_graph_gib: float = CUDA_GRAPH_RESERVE_GIB
    block_size: int = DEFAULT_BLOCK_SIZE
    compile_s: float = COMPILE_AND_CUDA_GRAPH_S
    prefill_flops_efficiency: float = PREFILL_FLOPS_EFFICIENCY

    def __post_init__(self) -> None:
        for name in ("activation_dense_gib", "activation_moe_gib", "non_torch_tp1_gib", "non_torch_multi_gpu_gib"):
            if getattr(self, name) < 0:
                raise CapacityError(f"reserves.{name} must not be negative, got {getattr(self, name)}")
        if self.cuda_graph_gib < 0 or self.compile_s < 0:
            raise CapacityError("reserves.cuda_graph_gib and reserves.compile_s must not be negative")
        if self.block_size <= 0 or self.activation_reference_batched_tokens <= 0:
            raise CapacityError("reserves.block_size and reserves.activation_reference_batched_tokens must be positive")
        if not 0 < self.prefill_flops_efficiency <= 1:
            raise CapacityError(
                f"reserves.prefill_flops_efficiency must be in (0, 1], got {self.prefill_flops_efficiency}"
            )


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class PlanRequest:
    model: ModelSpec
    gpu: GpuType
    gpus_per_node: int
    max_model_len: int | None = None  # None → the model's max_position_embeddings
    target_concurrency: int = 1  # concurrent requests of max_model_len tokens the deployment must hold
    quantization: str | None = None  # None → the checkpoint's own quantization_config, else bf16
    kv_cache_dtype: str = "auto"
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    tensor_parallel_size: int | None = None  # forced (what-if)
    pipeline_parallel_size: int | None = None  # forced (what-if)
    pool_gpus: int | None = None  # GPUs the pool has in total; None = unbounded
    max_replicas: int | None = None
    reserves: Reserves = field(default_factory=Reserves)
    storage_gbps: float = DEFAULT_STORAGE_GBPS  # GB/s the weights are read at on a cold start
    max_num_seqs: int | None = None  # None → vLLM's default for the GPU
    max_num_batched_tokens: int | None = None  # None → vLLM's default for the GPU
    prefill_tokens: int = DEFAULT_PREFILL_TOKENS  # prompt length of the prefill bound

    def __post_init__(self) -> None:
        if not isinstance(self.model, ModelSpec):
            raise CapacityError(f"model: expected a ModelSpec (see resolve_model), got {type(self.model).__name__}")
        if not isinstance(self.gpu, GpuType):
            raise CapacityError(f"gpu: expected a GpuType (see gpu_type), got {type(self.gpu).__name__}")
        if not isinstance(self.reserves, Reserves):
            raise CapacityError(f"reserves: expected a Reserves, got {type(self.reserves).__name__}")
        required = ("gpus_per_node", "target_concurrency", "prefill_tokens")
        optional = (
            "max_model_len",
            "tensor_parallel_size",
            "pipeline_parallel_size",
            "pool_gpus",
            "max_replicas",
            "max_num_seqs",
            "max_num_batched_tokens",
        )
        for name in required:
            if not _positive_int(getattr(self, name)):
                raise CapacityError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in optional:
            value = getattr(self, name)
            if value is not None and not _positive_int(value):
                raise CapacityError(f"{name} must be a positive integer or unset, got {value!r}")
        utilization = self.gpu_memory_utilization
        if isinstance(utilization, bool) or not isinstance(utilization, int | float) or not 0 < utilization <= 1:
            raise CapacityError(f"gpu_memory_utilization must be in (0, 1], got {utilization!r}")
        if (
            isinstance(self.storage_gbps, bool)
            or not isinstance(self.storage_gbps, int | float)
            or self.storage_gbps <= 0
        ):
            raise CapacityError(f"storage_gbps must be a positive number (GB/s), got {self.storage_gbps!r}")
        if self.quantization is not None:
            if not isinstance(self.quantization, str) or self.quantization.strip().lower() not in BYTES_PER_PARAM:
                raise CapacityError(
                    f"quantization: unknown value {self.quantization!r}; use one of {', '.join(BYTES_PER_PARAM)} "
                    "or leave it unset"
                )
            object.__setattr__(self, "quantization", self.quantization.strip().lower())
        if not isinstance(self.kv_cache_dtype, str) or self.kv_cache_dtype.strip().lower() not in KV_CACHE_DTYPE_BYTES:
            raise CapacityError(
                f"kv_cache_dtype: unknown value {self.kv_cache_dtype!r}; use one of {', '.join(KV_CACHE_DTYPE_BYTES)}"
            )
        object.__setattr__(self, "kv_cache_dtype", self.kv_cache_dtype.strip().lower())


@dataclass(frozen=True)
class Plan:
    model: str
    gpu: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    replicas: int
    gpus: int  # TP x PP x replicas
    nodes: int
    nodes_per_replica: int
    gpus_per_replica: int
    weights_gib_per_gpu: float
    kv_cache_gib_per_gpu: float  # memory left for the KV cache on the tightest GPU (vLLM's "Available KV cache memory")
    kv_cache_tokens: int  # per replica
    kv_bytes_per_token_per_gpu: int
    max_concurrency: float  # requests of max_model_len tokens one replica holds at once
    max_num_seqs: int
    max_model_len: int
    gpu_memory_utilization: float
    quantization: str
    kv_cache_dtype: str
    decode_ms_per_token_bound: float  # one sequence at max_model_len context, 100 % of HBM bandwidth
    prefill_ms_bound: float  # a prompt of prefill_tokens tokens at 50 % of dense tensor FLOPS
    prefill_tokens: int
    load_time_s: float
    fits: bool
    reasons: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    num_blocks: int = 0
    activation_gib_per_gpu: float = 0.0
    weights_gib_total: float = 0.0

    @property
    def max_concurrency_floor(self) -> int:
        return math.floor(self.max_concurrency)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "gpu": self.gpu,
            "tensor_parallel_size": self.tensor_parallel_size,
            "pipeline_parallel_size": self.pipeline_parallel_size,
            "replicas": self.replicas,
            "gpus": self.gpus,
            "nodes": self.nodes,
            "nodes_per_replica": self.nodes_per_replica,
            "gpus_per_replica": self.gpus_per_replica,
            "weights_gib_per_gpu": round(self.weights_gib_per_gpu, 2),
            "weights_gib_total": round(self.weights_gib_total, 2),
            "kv_cache_gib_per_gpu": round(self.kv_cache_gib_per_gpu, 2),
            "kv_cache_tokens": self.kv_cache_tokens,
            "num_blocks": self.num_blocks,
            "kv_bytes_per_token_per_gpu": self.kv_bytes_per_token_per_gpu,
            "activation_gib_per_gpu": round(self.activation_gib_per_gpu, 2),
            "max_concurrency": round(self.max_concurrency, 2),
            "max_concurrency_floor": self.max_concurrency_floor,
            "max_num_seqs": self.max_num_seqs,
            "max_model_len": self.max_model_len,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "quantization": self.quantization,
            "kv_cache_dtype": self.kv_cache_dtype,
            "decode_ms_per_token_bound": round(self.decode_ms_per_token_bound, 2),
            "prefill_ms_bound": round(self.prefill_ms_bound, 2),
            "prefill_tokens": self.prefill_tokens,
            "load_time_s": round(self.load_time_s, 1),
            "fits": self.fits,
            "reasons": list(self.reasons),
            "rejected": list(self.rejected),
        }


# --- formulas ---------------------------------------------------------------------------------------------------------


def weight_bytes(model: ModelSpec, quantization: str = "bf16", active: bool = False) -> float:
    """Bytes of all weights (or of the weights one token touches): embeddings/LM head BF16, the rest quantized."""
    params = model.active_param_count() if active else model.param_count()
    embedding = model.embedding_param_count()
    return embedding * EMBEDDING_BYTES_PER_PARAM + (params - embedding) * BYTES_PER_PARAM[quantization]


def weights_per_rank_bytes(model: ModelSpec, quantization: str, tp: int, pp: int) -> float:
    """Weights on the fullest GPU. PP=1: total / TP. PP>1: the end stage holding the embedding (or LM head) and
    ceil(L/PP) of the heaviest layers, divided by TP: a little above total / (TP x PP), as vLLM's uneven split is."""
    if pp == 1:
        return weight_bytes(model, quantization) / tp
    layers = math.ceil(model.num_layers / pp) * model.heaviest_layer_param_count() * BYTES_PER_PARAM[quantization]
    embedding = model.vocab_size * model.hidden_size * EMBEDDING_BYTES_PER_PARAM
    return (embedding + layers) / tp


def kv_heads_per_rank(model: ModelSpec, tp: int) -> int:
    """KV heads cached on one GPU: split across TP ranks, replicated (one per rank) once TP exceeds them."""
    return max(1, model.num_kv_heads // tp)


def kv_bytes_per_token_rank(model: ModelSpec, tp: int, pp: int, kv_dtype_bytes: int) -> int:
    """KV-cache bytes one token costs on one GPU (vllm/v1/kv_cache_interface.py).

    MLA caches the compressed latent (kv_lora_rank + qk_rope_head_dim) once per layer, on every TP rank."""
    layers = math.ceil(model.num_layers / pp)
    if model.uses_mla:
        assert model.kv_lora_rank is not None and model.qk_rope_head_dim is not None
        return layers * (model.kv_lora_rank + model.qk_rope_head_dim) * kv_dtype_bytes
    return 2 * layers * kv_heads_per_rank(model, tp) * model.head_dim * kv_dtype_bytes


def is_large_gpu(gpu: GpuType) -> bool:
    """vLLM's test for its larger scheduling defaults: >= 70 GiB and not an A100."""
    return gpu.memory_gib >= LARGE_GPU_MIN_GIB and "A100" not in gpu.name.upper()


def default_max_num_seqs(gpu: GpuType) -> int:
    return MAX_NUM_SEQS_LARGE_GPU if is_large_gpu(gpu) else MAX_NUM_SEQS_DEFAULT


def default_max_num_batched_tokens(gpu: GpuType) -> int:
    return MAX_NUM_BATCHED_TOKENS_LARGE_GPU if is_large_gpu(gpu) else MAX_NUM_BATCHED_TOKENS_DEFAULT


def activation_peak_gib(model: ModelSpec, reserves: Reserves, max_num_batched_tokens: int) -> float:
    peak = reserves.activation_moe_gib if model.is_moe else reserves.activation_dense_gib
    if reserves.scale_activation_with_batched_tokens:
        peak *= max_num_batched_tokens / reserves.activation_reference_batched_tokens
    return peak


def non_torch_gib(tp: int, pp: int, reserves: Reserves) -> float:
    return reserves.non_torch_multi_gpu_gib if tp * pp > 1 else reserves.non_torch_tp1_gib


def _mlp_width(model: ModelSpec) -> tuple[str, int]:
    if model.is_moe and model.moe_intermediate_size:
        return "moe_intermediate_size", model.moe_intermediate_size
    return "intermediate_size", model.intermediate_size


def tensor_parallel_problems(model: ModelSpec, tp: int, gpus_per_node: int) -> list[str]:
    """Why vLLM would refuse this TP for this model on these nodes (empty when it is valid)."""
    problems = []
    if tp > gpus_per_node:
        problems.append(
            f"tensor_parallel_size={tp} exceeds gpus_per_node={gpus_per_node}: a tensor-parallel group must sit on "
            "one node (add nodes with pipeline parallelism instead)"
        )
    if model.num_attention_heads % tp:
        valid = [str(t) for t in range(1, gpus_per_node + 1) if model.num_attention_heads % t == 0]
        problems.append(
            f"tensor_parallel_size={tp} does not divide num_attention_heads={model.num_attention_heads} of "
            f"{model.name}; use {', '.join(valid)}"
        )
    if not model.uses_mla:
        kv = model.num_kv_heads
        if (kv >= tp and kv % tp) or (kv < tp and tp % kv):
            problems.append(
                f"tensor_parallel_size={tp} and num_key_value_heads={kv} of {model.name}: one must divide the other "
                "for vLLM to split or replicate the KV heads"
            )
    width_name, width = _mlp_width(model)
    if width % tp:
        problems.append(f"{width_name}={width} of {model.name} is not divisible by tensor_parallel_size={tp}")
    return problems


def valid_tensor_parallel_sizes(model: ModelSpec, gpus_per_node: int) -> list[int]:
    """TP sizes vLLM accepts on one node, powers of two first (ascending), then the others (ascending)."""
    valid = [tp for tp in range(1, gpus_per_node + 1) if not tensor_parallel_problems(model, tp, gpus_per_node)]
    powers = [tp for tp in valid if tp & (tp - 1) == 0]
    return powers + [tp for tp in valid if tp not in powers]


# --- evaluation of one layout -----------------------------------------------------------------------------------------


@dataclass
class _Evaluation:
    tp: int
    pp: int
    weights_rank: float  # bytes
    usable: float  # bytes
    activation_gib: float
    non_torch_gib: float
    cuda_graph_gib: float
    available_kv: float  # bytes, may be negative
    kv_per_token: int
    num_blocks: int
    blocks_per_request: int
    max_concurrency: float
    block_size: int
    failures: list[str]

    @property
    def fits(self) -> bool:
        return not self.failures

    @property
    def kv_tokens(self) -> int:
        return self.num_blocks * self.block_size


@dataclass(frozen=True)
class _Context:
    request: PlanRequest
    max_model_len: int
    quantization: str
    kv_dtype_bytes: int
    max_num_seqs: int
    max_num_batched_tokens: int


def _evaluate(ctx: _Context, tp: int, pp: int) -> _Evaluation:
    req, model, gpu, reserves = ctx.request, ctx.request.model, ctx.request.gpu, ctx.request.reserves
    failures = tensor_parallel_problems(model, tp, req.gpus_per_node)
    if pp > model.num_layers:
        failures.append(f"pipeline_parallel_size={pp} exceeds the {model.num_layers} layers of {model.name}")
    layout = f"TP={tp}, PP={pp}"
    usable = req.gpu_memory_utilization * gpu.memory_bytes
    weights = weights_per_rank_bytes(model, ctx.quantization, tp, pp)
    activation = activation_peak_gib(model, reserves, ctx.max_num_batched_tokens)
    non_torch = non_torch_gib(tp, pp, reserves)
    available = usable - weights - (activation + non_torch + reserves.cuda_graph_gib) * GIB
    kv_per_token = kv_bytes_per_token_rank(model, tp, pp, ctx.kv_dtype_bytes)
    blocks_per_request = math.ceil(ctx.max_model_len / reserves.block_size)
    num_blocks = 0
    if weights > usable:
        failures.append(
            f"weights need {weights / GIB:.1f} GiB per GPU but only {usable / GIB:.1f} GiB is usable "
            f"({req.gpu_memory_utilization:g} x {gpu.memory_gib:g} GiB) at {layout}"
        )
    elif available <= 0:
        failures.append(
            f"no memory left for the KV cache at {layout}: {usable / GIB:.2f} GiB usable - {weights / GIB:.2f} GiB "
            f"weights - {activation:.2f} GiB activation peak - {non_torch:.2f} GiB non-torch - "
            f"{reserves.cuda_graph_gib:.2f} GiB CUDA graphs = {available / GIB:.2f} GiB"
        )
    else:
        num_blocks = math.floor(available / (reserves.block_size * kv_per_token))
        if num_blocks < blocks_per_request:
            failures.append(
                f"one request of max_model_len={ctx.max_model_len} tokens needs {blocks_per_request} KV blocks "
                f"({blocks_per_request * reserves.block_size * kv_per_token / GIB:.2f} GiB) but only {num_blocks} "
                f"blocks ({num_blocks * reserves.block_size} tokens, {available / GIB:.2f} GiB) fit at {layout}: "
                f"max_concurrency {num_blocks / blocks_per_request:.2f} < 1"
            )
    return _Evaluation(
        tp=tp,
        pp=pp,
        weights_rank=weights,
        usable=usable,
        activation_gib=activation,
        non_torch_gib=non_torch,
        cuda_graph_gib=reserves.cuda_graph_gib,
        available_kv=available,
        kv_per_token=kv_per_token,
        num_blocks=num_blocks,
        blocks_per_request=blocks_per_request,
        max_concurrency=num_blocks / blocks_per_request,
        block_size=reserves.block_size,
        failures=failures,
    )


def _layouts(ctx: _Context) -> Iterator[tuple[int, int]]:
    req, model = ctx.request, ctx.request.model
    tp_forced, pp_forced = req.tensor_parallel_size, req.pipeline_parallel_size
    candidates = valid_tensor_parallel_sizes(model, req.gpus_per_node)
    if tp_forced is not None:
        yield tp_forced, pp_forced or 1
        return
    if pp_forced is not None:
        for tp in candidates:
            yield tp, pp_forced
        return
    for tp in candidates:
        yield tp, 1
    # Nothing fits on one node: one pod per node with TP = the largest valid size (normally gpus_per_node), PP nodes.
    tp_multi = max(candidates)
    for pp in range(2, model.num_layers + 1):
        yield tp_multi, pp


def _scale(ctx: _Context, ev: _Evaluation) -> tuple[int, list[str]]:
    """Replicas for the target concurrency, and why that scale is refused (pool size, max_replicas)."""
    req = ctx.request
    per_replica = min(math.floor(ev.max_concurrency), ctx.max_num_seqs)
    replicas = math.ceil(req.target_concurrency / per_replica)
    failures = []
    gpus_per_replica = ev.tp * ev.pp
    if req.max_replicas is not None and replicas > req.max_replicas:
        failures.append(
            f"holding target_concurrency={req.target_concurrency} requests of {ctx.max_model_len} tokens needs "
            f"{replicas} replicas ({per_replica} per replica at TP={ev.tp}, PP={ev.pp}) but max_replicas="
            f"{req.max_replicas}"
        )
    if req.pool_gpus is not None and replicas * gpus_per_replica > req.pool_gpus:
        if gpus_per_replica > req.pool_gpus:
            failures.append(
                f"one replica needs {gpus_per_replica} GPUs (TP={ev.tp} x PP={ev.pp}) but pool_gpus={req.pool_gpus}"
            )
        else:
            failures.append(
                f"needs {replicas * gpus_per_replica} GPUs ({replicas} replicas x TP={ev.tp} x PP={ev.pp}) for "
                f"target_concurrency={req.target_concurrency} but pool_gpus={req.pool_gpus}"
            )
    return replicas, failures


def _resolve_quantization(req: PlanRequest) -> tuple[str, list[str]]:
    if req.quantization is not None:
        return req.quantization, []
    checkpoint = req.model.checkpoint_quantization
    if checkpoint in BYTES_PER_PARAM:
        assert checkpoint is not None
        return checkpoint, [
            f"quantization not given: sized as the checkpoint's own {checkpoint} (config.json quantization_config), "
            "as vLLM loads it"
        ]
    if checkpoint:
        return "bf16", [f"checkpoint quantization {checkpoint!r} is not modelled: weights sized as bf16 (upper bound)"]
    return "bf16", []


def _notes(ctx: _Context, ev: _Evaluation) -> list[str]:
    model, gpu = ctx.request.model, ctx.request.gpu
    notes = []
    if model.is_sliding_window:
        notes.append(
            f"approximate: {model.name} uses sliding-window attention (window {model.sliding_window}); every layer is "
            "counted as full attention, so the KV figures are a lower bound on capacity"
        )
    if not model.uses_mla and model.num_kv_heads < ev.tp:
        notes.append(
            f"KV heads replicated: num_key_value_heads={model.num_kv_heads} < TP={ev.tp}, each GPU caches one head"
        )
    if ev.tp > 1 and not gpu.nvlink:
        notes.append(f"tensor parallelism over PCIe on {gpu.name} (no NVLink): all-reduces limit decode speed")
    if ctx.quantization == "fp8" and not gpu.has_fp8:
        notes.append(f"{gpu.name} has no FP8 tensor cores: vLLM runs fp8 weights weight-only (Marlin)")
    if ev.pp > 1:
        notes.append(
            f"multi-node: {ev.pp} pods of {ev.tp} GPUs per replica (LeaderWorkerSet size {ev.pp}); pipeline "
            "parallelism does not lower per-token latency"
        )
    return notes


def plan(request: PlanRequest) -> Plan:
    """Size a deployment. Never raises for an infeasible sizing: returns `fits=False` with the reasons."""
    if not isinstance(request, PlanRequest):
        raise CapacityError(f"request: expected a PlanRequest, got {type(request).__name__}")
    model, gpu = request.model, request.gpu
    max_model_len = request.max_model_len or model.max_position_embeddings
    quantization, quant_notes = _resolve_quantization(request)
    ctx = _Context(
        request=request,
        max_model_len=max_model_len,
        quantization=quantization,
        kv_dtype_bytes=KV_CACHE_DTYPE_BYTES[request.kv_cache_dtype],
        max_num_seqs=request.max_num_seqs or default_max_num_seqs(gpu),
        max_num_batched_tokens=request.max_num_batched_tokens or default_max_num_batched_tokens(gpu),
    )
    global_failures = []
    if max_model_len > model.max_position_embeddings:
        global_failures.append(
            f"max_model_len={max_model_len} exceeds max_position_embeddings={model.max_position_embeddings} of "
            f"{model.name} (vLLM refuses this unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1)"
        )

    rejected: list[str] = []
    first_fit: tuple[_Evaluation, int, list[str]] | None = None
    chosen: tuple[_Evaluation, int, list[str]] | None = None
    last: _Evaluation | None = None
    for tp, pp in _layouts(ctx):
        ev = _evaluate(ctx, tp, pp)
        last = ev
        if not ev.fits:
            rejected.append(f"TP={tp}, PP={pp}: " + "; ".join(ev.failures))
            continue
        replicas, scale_failures = _scale(ctx, ev)
        if first_fit is None:
            first_fit = (ev, replicas, scale_failures)
        if not scale_failures:
            chosen = (ev, replicas, [])
            break
        rejected.append(f"TP={tp}, PP={pp}: " + "; ".join(scale_failures))
        if request.pool_gpus is not None and tp * pp > request.pool_gpus:
            break  # later layouts only need more GPUs per replica
    assert last is not None
    if chosen is None:
        if first_fit is not None:
            chosen = first_fit
            rejected = [r for r in rejected if not r.startswith(f"TP={first_fit[0].tp}, PP={first_fit[0].pp}:")]
        else:
            chosen = (last, 1, [])
            rejected = rejected[:-1]
    ev, replicas, scale_failures = chosen
    if len(rejected) > 12:  # a long pipeline search: keep the single-node attempts and the last ones
        rejected = [*rejected[:6], f"… {len(rejected) - 9} more layouts rejected …", *rejected[-3:]]

    failures = global_failures + ev.failures + scale_failures
    fits = not failures
    reasons = failures + quant_notes + (_notes(ctx, ev) if fits or not ev.failures else [])
    return _make_plan(ctx, ev, replicas, fits, reasons, rejected)


def _make_plan(
    ctx: _Context, ev: _Evaluation, replicas: int, fits: bool, reasons: list[str], rejected: list[str]
) -> Plan:
    req, model, gpu, reserves = ctx.request, ctx.request.model, ctx.request.gpu, ctx.request.reserves
    gpus_per_replica = ev.tp * ev.pp
    pods_per_node = max(1, req.gpus_per_node // ev.tp)
    nodes_per_replica = math.ceil(ev.pp / pods_per_node)
    nodes = math.ceil(replicas * ev.pp / pods_per_node)

    # Decode: every generated token reads the active weights and the sequence's KV cache once (all PP stages in turn).
    active_bytes = weight_bytes(model, ctx.quantization, active=True)
    if not model.tie_word_embeddings:
        active_bytes -= model.vocab_size * model.hidden_size * EMBEDDING_BYTES_PER_PARAM  # one embedding row is read
    step_bytes_per_gpu = active_bytes / ev.tp + ev.pp * ctx.max_model_len * ev.kv_per_token
    decode_ms = step_bytes_per_gpu / (gpu.bandwidth_tbs * 1e12) * 1e3
    # Prefill: 2 FLOPs per active parameter per prompt token, spread over the TP GPUs of a stage.
    tflops = gpu.fp8_tflops if ctx.quantization == "fp8" and gpu.fp8_tflops else gpu.bf16_tflops
    prefill_flops = 2 * model.active_param_count() * req.prefill_tokens
    prefill_ms = prefill_flops / (ev.tp * reserves.prefill_flops_efficiency * tflops * 1e12) * 1e3
    total_weights = weight_bytes(model, ctx.quantization)
    load_s = total_weights / (req.storage_gbps * 1e9) + reserves.compile_s

    return Plan(
        model=model.name,
        gpu=gpu.name,
        tensor_parallel_size=ev.tp,
        pipeline_parallel_size=ev.pp,
        replicas=replicas,
        gpus=gpus_per_replica * replicas,
        nodes=nodes,
        nodes_per_replica=nodes_per_replica,
        gpus_per_replica=gpus_per_replica,
        weights_gib_per_gpu=ev.weights_rank / GIB,
        kv_cache_gib_per_gpu=max(0.0, ev.available_kv) / GIB,
        kv_cache_tokens=ev.kv_tokens,
        kv_bytes_per_token_per_gpu=ev.kv_per_token,
        max_concurrency=ev.max_concurrency,
        max_num_seqs=ctx.max_num_seqs,
        max_model_len=ctx.max_model_len,
        gpu_memory_utilization=req.gpu_memory_utilization,
        quantization=ctx.quantization,
        kv_cache_dtype=req.kv_cache_dtype,
        decode_ms_per_token_bound=decode_ms,
        prefill_ms_bound=prefill_ms,
        prefill_tokens=req.prefill_tokens,
        load_time_s=load_s,
        fits=fits,
        reasons=reasons,
        rejected=rejected,
        num_blocks=ev.num_blocks,
        activation_gib_per_gpu=ev.activation_gib,
        weights_gib_total=total_weights / GIB,
    )
