"""`models` and `inference`: the vLLM deployments, their weights, SLOs and autoscaling, and the serving settings."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BeforeValidator,
    Field,
    model_validator,
)

from infra.config.types import Cidr, DnsLabel, Quantity, SecretRef, StrictModel

Quantization = Literal["fp8", "int8", "awq", "gptq"]


KvCacheDtype = Literal["auto", "fp8", "fp8_e4m3", "fp8_e5m2"]


class ModelStorageSpec(StrictModel):
    """Where the weights live: a PVC cache (default) or S3-compatible object storage streamed by Run:ai."""

    type: Literal["pvc", "s3"] = "pvc"
    # pvc
    existing_claim: DnsLabel | None = None
    size: Quantity | None = None
    storage_class: str | None = None
    access_mode: Literal["ReadOnlyMany", "ReadWriteOnce", "ReadWriteMany"] = "ReadOnlyMany"
    path: str | None = None
    # s3
    endpoint: str | None = None
    bucket: str | None = None
    prefix: str | None = None
    region: str = "us-east-1"
    access_key_id_secret: SecretRef | None = None
    secret_access_key_secret: SecretRef | None = None
    egress_cidrs: list[Cidr] = Field(default_factory=list)
    # both: sustained read bandwidth, used to size the startup probe
    bandwidth_gbps: Annotated[float, Field(gt=0)] | None = None

    @model_validator(mode="after")
    def _complete(self) -> ModelStorageSpec:
        if self.type == "s3":
            missing = [
                f
                for f in ("endpoint", "bucket", "access_key_id_secret", "secret_access_key_secret", "egress_cidrs")
                if not getattr(self, f)
            ]
            if missing:
                raise ValueError(f"type: s3 needs {', '.join(missing)}")
            if self.endpoint and not self.endpoint.startswith("https://"):
                raise ValueError(f"endpoint={self.endpoint!r} must be an https:// URL (weights never travel in clear)")
            pvc_only = [f for f in ("existing_claim", "size", "storage_class") if getattr(self, f)]
            if pvc_only:
                raise ValueError(f"{', '.join(pvc_only)} only apply to type: pvc")
        else:
            s3_only = [
                f
                for f in (
                    "endpoint",
                    "bucket",
                    "prefix",
                    "access_key_id_secret",
                    "secret_access_key_secret",
                    "egress_cidrs",
                )
                if getattr(self, f)
            ]
            if s3_only:
                raise ValueError(f"{', '.join(s3_only)} only apply to type: s3")
            if self.path is not None and (self.path.startswith("/") or ".." in self.path.split("/")):
                raise ValueError(f"path={self.path!r} must be relative to the volume (no leading '/', no '..')")
        return self


class IntegritySpec(StrictModel):
    """SHA-256 of every weight file, checked by an init container before the server starts."""

    manifest_file: str | None = None
    sha256: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] | None = None
    configmap: DnsLabel | None = None
    """An existing ConfigMap (key `sha256sums`) in the inference namespace, written by the weight approval process."""

    @model_validator(mode="after")
    def _one_source(self) -> IntegritySpec:
        if sum(1 for v in (self.manifest_file, self.sha256, self.configmap) if v) != 1:
            raise ValueError(
                "give exactly one of manifest_file (a sha256sum file in the repository), sha256 (a map of file to "
                "digest) or configmap (an existing ConfigMap holding sha256sums)"
            )
        return self


class AutoscalingSpec(StrictModel):
    """KEDA scaling on queued requests (`vllm:num_requests_waiting`), never on CPU."""

    enabled: bool = False
    min_replicas: Annotated[int, Field(ge=0)] | None = None
    max_replicas: Annotated[int, Field(ge=1)] | None = None
    waiting_threshold: Annotated[int, Field(ge=1)] = 5


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m)$")


def _seconds(value: str | int | float) -> float:
    """An SLO latency target: a number of seconds, or a duration such as 500ms, 2s, 1.5s."""
    if isinstance(value, bool):
        raise ValueError("must be a number of seconds or a duration such as 500ms or 2s")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value.strip())
        if not match:
            raise ValueError("must be a number of seconds or a duration such as 500ms or 2s")
        number, unit = float(match.group(1)), match.group(2)
        seconds = number / 1000 if unit == "ms" else number * (60 if unit == "m" else 1)
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


Seconds = Annotated[float, BeforeValidator(_seconds)]


class SloSpec(StrictModel):
    """Service-level targets of one model: the alert thresholds."""

    ttft_p95: Seconds = 0.5
    ttft_p99: Seconds = 2.0
    max_waiting: Annotated[int, Field(ge=1)] = 10
    error_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.05

    @model_validator(mode="after")
    def _ordered(self) -> SloSpec:
        if self.ttft_p99 < self.ttft_p95:
            raise ValueError(f"ttft_p99={self.ttft_p99}s is below ttft_p95={self.ttft_p95}s")
        return self


class ModelDeploymentSpec(StrictModel):
    """One served model: what to serve, where, how big, and how it is stored and verified."""

    name: Annotated[DnsLabel, Field(max_length=40)]
    model: str | None = None
    config_path: str | None = None
    served_model_name: str | None = None
    pool: DnsLabel
    max_model_len: Annotated[int, Field(ge=256)] | None = None
    target_concurrency: Annotated[int, Field(ge=1)] = 1
    quantization: Quantization | None = None
    kv_cache_dtype: KvCacheDtype = "auto"
    gpu_memory_utilization: Annotated[float, Field(ge=0.5, le=0.98)] = 0.92
    tensor_parallel_size: Annotated[int, Field(ge=1)] | None = None
    pipeline_parallel_size: Annotated[int, Field(ge=1)] | None = None
    replicas: Annotated[int, Field(ge=1)] | None = None
    max_num_seqs: Annotated[int, Field(ge=1)] | None = None
    prefix_caching: bool = True
    trust_remote_code: bool = False
    extra_args: list[str] = Field(default_factory=list)
    storage: ModelStorageSpec = Field(default_factory=ModelStorageSpec)
    integrity: IntegritySpec | None = None
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    priority_class: DnsLabel | None = None
    slo: SloSpec = Field(default_factory=SloSpec)

    @model_validator(mode="after")
    def _model_source(self) -> ModelDeploymentSpec:
        if not self.model and not self.config_path:
            raise ValueError("give model (a catalog name such as Llama-3.1-8B) or config_path (a config.json)")
        return self

    @property
    def served_name(self) -> str:
        return self.served_model_name or self.name


class BenchmarkSpec(StrictModel):
    """An optional `vllm bench serve` Job per model, results as JSON in the job log."""

    enabled: bool = False
    concurrency: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [1, 8, 32])
    num_prompts: Annotated[int, Field(ge=1)] = 200
    input_len: Annotated[int, Field(ge=1)] = 1024
    output_len: Annotated[int, Field(ge=1)] = 256


class PriorityClassSpec(StrictModel):
    """A PriorityClass the platform creates for model servers (scheduling.k8s.io/v1)."""

    value: Annotated[int, Field(ge=-2_147_483_648, le=1_000_000_000)]
    """User-defined classes go up to 1e9 (higher values are reserved for system-cluster/node-critical)."""
    preemption_policy: Literal["PreemptLowerPriority", "Never"] = "PreemptLowerPriority"
    description: str = "private-llm model servers"


class InferenceSpec(StrictModel):
    benchmark: BenchmarkSpec = Field(default_factory=BenchmarkSpec)
    priority_classes: dict[DnsLabel, PriorityClassSpec] = Field(default_factory=dict)
    """PriorityClasses the platform creates (cluster-scoped) for `models[].priority_class`."""
    existing_priority_classes: list[DnsLabel] = Field(default_factory=list)
    """PriorityClasses the cluster already has and `models[].priority_class` may name (the platform does not manage
    them; `system-cluster-critical` and `system-node-critical` always exist)."""
