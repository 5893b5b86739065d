"""`models` and `inference`: the vLLM deployments, their weights, SLOs and autoscaling, and the serving settings."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

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


BASE_REVISION = "base"
"""The revision label of a model's unnamed revision: the objects named after the model itself."""
REVISION_OVERRIDES = (
    "model",
    "config_path",
    "integrity",
    "quantization",
    "max_model_len",
    "extra_args",
    "replicas",
    "autoscaling",
    "storage",
)


class RevisionSpec(StrictModel):
    """One revision of a model, served beside the others under the model's public name: its share of the model's
    traffic at the gateway and what it changes. The unnamed revision is the model's own objects (`<model>`), so
    declaring revisions renames nothing; a named one gets its own (`<model>-<name>`)."""

    name: DnsLabel | None = None
    weight: Annotated[int, Field(ge=0, le=100, strict=True)]
    """Percent of the model's requests (integers; a model's revisions sum to 100)."""
    approved_by: Annotated[str, Field(min_length=3, max_length=200)] | None = None
    """Who approved this revision for most of the traffic: required in the finance, healthcare and government
    profiles before a named revision takes more than 50 (shown in the evidence report)."""
    model: str | None = None
    config_path: str | None = None
    integrity: IntegritySpec | None = None
    quantization: Quantization | None = None
    max_model_len: Annotated[int, Field(ge=256)] | None = None
    extra_args: list[str] | None = None
    replicas: Annotated[int, Field(ge=1)] | None = None
    autoscaling: AutoscalingSpec | None = None
    storage: ModelStorageSpec | None = None

    @property
    def label(self) -> str:
        return self.name or BASE_REVISION

    def overrides(self) -> dict[str, Any]:
        """The model fields this revision sets (the rest it takes from the model)."""
        return {f: getattr(self, f) for f in REVISION_OVERRIDES if getattr(self, f) is not None}


class GateSpec(StrictModel):
    """When a candidate revision may take the next step: compared with the stable revision over the same window."""

    window_minutes: Annotated[int, Field(ge=5, le=1440)] = 30
    warmup_minutes: Annotated[int, Field(ge=0, le=1440)] = 10
    """Ignore the candidate's first minutes after it started (cold CUDA graphs and prefix cache)."""
    min_requests: Annotated[int, Field(ge=1)] = 500
    """Finished candidate requests in the window before any verdict (fewer: hold)."""
    max_error_ratio_delta: Annotated[float, Field(ge=0, lt=1)] = 0.005
    max_ttft_p95_ratio: Annotated[float, Field(ge=1)] = 1.2
    max_itl_p95_ratio: Annotated[float, Field(ge=1)] = 1.15
    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(default_factory=lambda: [1, 5, 10, 25, 50, 100])
    """The candidate's weights, step by step; the last is 100."""

    @model_validator(mode="after")
    def _steps(self) -> GateSpec:
        if self.steps != sorted(set(self.steps)) or self.steps[-1] != 100:
            raise ValueError(f"steps={self.steps} must rise strictly and end at 100, e.g. [1, 5, 10, 25, 50, 100]")
        return self


class RolloutSpec(StrictModel):
    """Who may pin a revision, which tenants always get one (sticky A/B), and the promotion gate."""

    evaluators: list[DnsLabel] = Field(default_factory=list)
    """Tenants allowed to choose a revision with the x-privatellm-revision header (offline evaluation)."""
    cohorts: dict[DnsLabel, list[DnsLabel]] = Field(default_factory=dict)
    """Revision (its name, or `base`) → tenants that always get it."""
    gate: GateSpec = Field(default_factory=GateSpec)


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
    revisions: list[RevisionSpec] = Field(default_factory=list)
    """Revisions served side by side (canary, A/B), at most three, oldest first (of the two taking traffic the later
    is the candidate): none is the model alone, as it always rendered; one named revision alone is what remains once
    a promoted revision's predecessor is removed."""
    rollout: RolloutSpec | None = None

    @model_validator(mode="after")
    def _model_source(self) -> ModelDeploymentSpec:
        if not self.model and not self.config_path:
            raise ValueError("give model (a catalog name such as Llama-3.1-8B) or config_path (a config.json)")
        return self

    @model_validator(mode="after")
    def _revisions(self) -> ModelDeploymentSpec:
        if not self.revisions:
            if self.rollout is not None:
                raise ValueError("rollout applies to revisions; declare revisions or remove rollout")
            return self
        labels = [r.label for r in self.revisions]
        problems = []
        if len(self.revisions) > 3:
            problems.append(f"revisions lists {len(self.revisions)}; at most 3 are deployed at once (GPUs held)")
        for label in sorted({x for x in labels if labels.count(x) > 1}):
            what = "the unnamed revision" if label == BASE_REVISION else f"revision name {label!r}"
            problems.append(f"{what} appears {labels.count(label)} times; revision names are unique")
        if any(r.name == BASE_REVISION for r in self.revisions):
            problems.append(f"revision name {BASE_REVISION!r} is the unnamed revision's label; choose another name")
        for r in self.revisions:
            if r.name and len(f"{self.name}-{r.name}") > 40:
                problems.append(
                    f"revision {r.name!r}: its objects' name {self.name}-{r.name} is longer than 40 characters; "
                    "choose a shorter revision name"
                )
        total = sum(r.weight for r in self.revisions)
        if total != 100:
            weights = " + ".join(str(r.weight) for r in self.revisions)
            problems.append(f"revision weights add up to {weights} = {total}; they must add up to 100 (e.g. 90 and 10)")
        serving = [r.label for r in self.revisions if r.weight > 0]
        if len(serving) > 2:
            problems.append(
                f"revisions {', '.join(serving)} all take traffic; at most two do (stable and one candidate): set the "
                "others' weight to 0"
            )
        if self.rollout is not None:
            known = set(labels)
            cohort_of: dict[str, str] = {}
            for revision, tenants in self.rollout.cohorts.items():
                if revision not in known:
                    problems.append(
                        f"rollout.cohorts.{revision} names no revision of this model (revisions: {', '.join(labels)})"
                    )
                for tenant in tenants:
                    if tenant in cohort_of and cohort_of[tenant] != revision:
                        problems.append(f"tenant {tenant!r} is in the cohorts of {cohort_of[tenant]} and {revision}")
                    cohort_of[tenant] = revision
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def revision(self, revision: RevisionSpec) -> ModelDeploymentSpec:
        """This model as one revision deploys it: its overrides applied, its own object names (`<model>-<name>`,
        the model's own for the unnamed revision), the same public name."""
        source: dict[str, Any] = {}
        if revision.model is not None or revision.config_path is not None:
            # a revision that names its model replaces the model's source entirely
            source = {"model": revision.model, "config_path": revision.config_path}
        return self.model_copy(
            update={
                **source,
                **revision.overrides(),
                "name": f"{self.name}-{revision.name}" if revision.name else self.name,
                "served_model_name": self.served_name,
                "revisions": [],
                "rollout": None,
            }
        )

    def stable_and_candidate(self) -> tuple[RevisionSpec, RevisionSpec] | None:
        """The two revisions taking traffic, stable first: revisions are listed oldest first, so the later one is
        the candidate however the weights stand (None when one revision takes everything)."""
        serving = [r for r in self.revisions if r.weight > 0]
        return (serving[0], serving[1]) if len(serving) == 2 else None

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
