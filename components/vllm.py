"""vLLM inference: one model served by vLLM (pinned release), single node or across nodes, hardened by default.

`VllmService` creates, for one model:
- a Deployment (one pod = TP GPUs) when one node holds a replica, or a LeaderWorkerSet running vLLM's native
  multi-node mode (`--nnodes/--node-rank/--master-addr`, `--headless` workers; no Ray) when it needs several nodes;
- a ServiceAccount without token, a Service, a PodDisruptionBudget, a NetworkPolicy admitting only the gateway and
  monitoring (and, across nodes, one confining NCCL/torch traffic to the group), a ServiceMonitor for `/metrics`;
- the weight store: a PVC cache retained on delete, or S3-compatible storage streamed with Run:ai (credentials in a
  Secret, never in env values);
- an init container verifying every weight file's SHA-256 against the manifest before the server starts;
- optionally a KEDA ScaledObject on `vllm:num_requests_waiting` and a `vllm bench serve` Job.
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_kubernetes as k8s

from components import assets
from components.base import check_dns_label, pull_secret_refs
from components.labels import RETAINED, scanner_skips, standard_labels
from components.vllm_flags import is_vllm_flag

VLLM_VERSION = "v0.33.0"
PORT = 8000
RUN_AS_USER = 10001
MODELS_MOUNT = "/models"
HOME = "/home/vllm"
TLS_MOUNT = "/etc/vllm/tls"
SCRIPTS_MOUNT = "/opt/privatellm"
INTEGRITY_MOUNT = "/etc/privatellm/integrity"
LWS_NAME_LABEL = "leaderworkerset.sigs.k8s.io/name"
LWS_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"

# Flags of `vllm serve` (v0.33.0) that the component sets itself: an extra argument may not repeat them.
MANAGED_FLAGS = frozenset(
    {
        "--served-model-name",
        "--host",
        "--port",
        "--tensor-parallel-size",
        "--pipeline-parallel-size",
        "--max-model-len",
        "--gpu-memory-utilization",
        "--max-num-seqs",
        "--quantization",
        "--kv-cache-dtype",
        "--enable-prefix-caching",
        "--disable-prefix-caching",
        "--no-enable-prefix-caching",
        "--model",
        "--load-format",
        "--nnodes",
        "--node-rank",
        "--master-addr",
        "--headless",
        "--download-dir",
    }
)
# Flags that would break the security baseline: the reason is the error message.
FORBIDDEN_FLAGS: dict[str, str] = {
    "--trust-remote-code": "runs Python shipped with the model; set trust_remote_code: true for this model to allow it",
    "--api-key": "puts a credential on the command line; tenants authenticate at the gateway",
    "--ssl-keyfile": "TLS is configured by the platform PKI",
    "--ssl-certfile": "TLS is configured by the platform PKI",
    "--ssl-ca-certs": "TLS is configured by the platform PKI",
    "--ssl-cert-reqs": "client-certificate verification is always required",
    "--enable-log-requests": "request content logging is off by default (OWASP LLM02)",
    "--enable-log-outputs": "response content logging is off by default (OWASP LLM02)",
    "--hf-token": "puts a credential on the command line; models are loaded from the platform's store",
    "--trust-request-chat-template": "lets a request supply a chat template that the server executes",
    "--trust-request-mm-kwargs": "lets a request pass arbitrary multimodal processor arguments",
    "--enable-ssl-refresh": "TLS is configured by the platform PKI",
    "--ssl-ciphers": "ciphers come from the compliance profile",
    "--allowed-local-media-path": "lets requests read files from the server's filesystem",
}


def check_extra_args(extra_args: Sequence[str], trust_remote_code: bool) -> list[str]:
    """Problems with operator-supplied vLLM arguments (empty when they are acceptable)."""
    problems = []
    for arg in extra_args:
        if not arg.startswith("--"):
            if arg.startswith("-"):
                problems.append(f"{arg}: use the long form of the flag (--name), so that it can be checked")
            continue
        flag = arg.split("=", 1)[0].split(".", 1)[0].replace("_", "-")
        if flag == "--trust-remote-code" and trust_remote_code:
            continue
        if flag in FORBIDDEN_FLAGS:
            problems.append(f"{flag} is not allowed: {FORBIDDEN_FLAGS[flag]}")
        elif flag in MANAGED_FLAGS:
            problems.append(f"{flag} is set by the platform from the capacity plan and the model's config")
        elif not is_vllm_flag(flag):
            problems.append(f"{flag} is not an option of vLLM {VLLM_VERSION} (`vllm serve --help`)")
    return problems


@dataclass(frozen=True)
class GpuScheduling:
    """The node pool contract: where GPU pods may run and how GPUs are requested."""

    node_selector: Mapping[str, str]
    tolerations: Sequence[Mapping[str, str]]
    gpu_resource: str = "nvidia.com/gpu"
    gpus_per_node: int = 8
    priority_class: str | None = None


@dataclass(frozen=True)
class ModelStore:
    """Where the weights are read from."""

    kind: Literal["pvc", "s3"]
    path: str
    """pvc: folder inside the volume; s3: `s3://bucket/prefix`."""
    claim_name: str | None = None
    create_claim: bool = True
    size: str | None = None
    storage_class: str | None = None
    access_mode: str = "ReadOnlyMany"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: pulumi.Input[str] | None = None
    s3_secret_access_key: pulumi.Input[str] | None = None
    s3_egress_cidrs: Sequence[str] = ()
    bandwidth_gbps: float = 1.0

    @property
    def model_location(self) -> str:
        return self.path if self.kind == "s3" else f"{MODELS_MOUNT}/{self.path}".rstrip("/")


@dataclass(frozen=True)
class ServingTls:
    """Serving certificate Secret (tls.crt, tls.key, ca.crt) and the client-certificate Secret used by probes."""

    secret_name: str
    probe_client_secret: str
    ciphers: str | None = None
    metrics_client_secret: str | None = None


@dataclass(frozen=True)
class Autoscaling:
    min_replicas: int
    max_replicas: int
    waiting_threshold: int
    prometheus_url: str


@dataclass(frozen=True)
class Benchmark:
    concurrency: Sequence[int]
    num_prompts: int
    input_len: int
    output_len: int


REVISION_LABEL = "privatellm.io/revision"
REVISION_WEIGHT_ANNOTATION = "privatellm.io/revision-weight"
APPROVED_BY_ANNOTATION = "privatellm.io/approved-by"


@dataclass(frozen=True)
class Revision:
    """Which revision of its model a server is, and the share of the model's traffic the gateway gives it: label
    `privatellm.io/revision` on every object but the pods (so declaring revisions restarts no server), `revision` on
    every vLLM series (the ServiceMonitor adds it), the autoscaling query scoped to it; the weight and approval
    annotated on the workload for the policy pack."""

    name: str
    weight: int
    approved_by: str | None = None

    def __post_init__(self) -> None:
        check_dns_label("revision", self.name)
        if not 0 <= self.weight <= 100:
            raise ValueError(f"revision weight={self.weight} must be 0..100")


@dataclass(frozen=True)
class VllmServiceArgs:
    name: str
    namespace: str
    instance: str
    image: str
    served_model_name: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    replicas: int
    max_model_len: int
    gpu_memory_utilization: float
    max_num_seqs: int
    scheduling: GpuScheduling
    store: ModelStore
    weight_bytes: int
    gateway_namespace: str | None
    """Where the gateway's proxies run (admitted on the serving port); None when the stack has no gateway."""
    monitoring_namespace: str | None
    """Where Prometheus runs (admitted on the serving port); None when the stack runs no monitoring."""
    quantization: str | None = None
    kv_cache_dtype: str = "auto"
    prefix_caching: bool = True
    integrity_manifest: str | None = None
    integrity_configmap: str | None = None
    tls: ServingTls | None = None
    extra_args: Sequence[str] = ()
    trust_remote_code: bool = False
    autoscaling: Autoscaling | None = None
    benchmark: Benchmark | None = None
    surge_allowed: bool = False
    max_output_tokens: int | None = None
    """Server-side cap on generated tokens per request: `--override-generation-config {"max_new_tokens": N}`.
    vLLM (v0.33.0, `get_max_tokens`) generates at most min(request max_tokens/max_completion_tokens, N,
    max_model_len - prompt); without it only the context length bounds a request."""
    image_pull_secrets: Sequence[str] = ()
    cpu_request: str = "4"
    memory_request: str | None = None
    compile_seconds: int = 180
    labels: Mapping[str, str] = field(default_factory=dict)
    revision: Revision | None = None
    """The revision of its model this server is (one of several served under the same public name)."""
    scanner_skips: Mapping[str, str] = field(default_factory=dict)
    """Documented checkov exceptions for the server workload: {check id: reason} (see components.labels)."""

    def __post_init__(self) -> None:
        for what, value in (("name", self.name), ("namespace", self.namespace)):
            check_dns_label(what, value)
        if len(self.name) > 40:
            raise ValueError(f"name={self.name!r} is longer than 40 characters (derived object names must fit 63)")
        if self.tensor_parallel_size < 1 or self.pipeline_parallel_size < 1 or self.replicas < 1:
            raise ValueError("tensor_parallel_size, pipeline_parallel_size and replicas must be at least 1")
        scanner_skips(self.scanner_skips)
        if self.tensor_parallel_size > self.scheduling.gpus_per_node:
            raise ValueError(
                f"tensor_parallel_size={self.tensor_parallel_size} exceeds the pool's "
                f"{self.scheduling.gpus_per_node} GPUs per node; use pipeline parallelism across nodes"
            )
        if not 0 < self.gpu_memory_utilization < 1:
            raise ValueError(f"gpu_memory_utilization={self.gpu_memory_utilization} must be between 0 and 1")
        if ":latest" in self.image or ":" not in self.image.rsplit("/", 1)[-1]:
            raise ValueError(f"image={self.image!r} must carry a pinned tag (never :latest)")
        problems = check_extra_args(self.extra_args, self.trust_remote_code)
        if self.max_output_tokens is not None:
            if self.max_output_tokens < 1:
                raise ValueError(f"max_output_tokens={self.max_output_tokens} must be at least 1")
            if any(arg.split("=", 1)[0] == "--override-generation-config" for arg in self.extra_args):
                problems.append(
                    "--override-generation-config is set by the platform to cap max_tokens (gateway.max_tokens)"
                )
        if problems:
            raise ValueError("extra_args: " + "; ".join(problems))
        if self.store.kind == "s3" and not (self.store.s3_access_key_id and self.store.s3_secret_access_key):
            raise ValueError("an s3 model store needs s3_access_key_id and s3_secret_access_key (secrets)")
        if self.store.kind == "s3" and not self.store.s3_egress_cidrs:
            raise ValueError("an s3 model store needs s3_egress_cidrs: egress is denied except to the model store")
        if self.store.kind == "pvc" and not self.store.create_claim and not self.store.claim_name:
            raise ValueError("a pvc model store without create_claim needs claim_name (the existing claim)")
        if self.store.kind == "pvc" and self.store.create_claim and not self.store.size:
            raise ValueError("a new model cache PVC needs a size")
        if self.integrity_manifest and self.integrity_configmap:
            raise ValueError("give integrity_manifest or integrity_configmap, not both")
        if self.autoscaling and not 0 <= self.autoscaling.min_replicas <= self.autoscaling.max_replicas:
            raise ValueError("autoscaling needs 0 <= min_replicas <= max_replicas")

    @property
    def verifies_weights(self) -> bool:
        return bool(self.integrity_manifest or self.integrity_configmap)

    @property
    def multi_node(self) -> bool:
        return self.pipeline_parallel_size > 1

    @property
    def gpus_per_pod(self) -> int:
        return self.tensor_parallel_size

    @property
    def shm_size(self) -> str:
        # NCCL needs shared memory that grows with the number of local ranks.
        return f"{max(2, 2 * self.tensor_parallel_size)}Gi"

    @property
    def startup_seconds(self) -> int:
        per_pod_bytes = self.weight_bytes / self.pipeline_parallel_size
        load = per_pod_bytes / (self.store.bandwidth_gbps * 1e9)
        # Twice the bound for a loaded storage system, plus compilation and CUDA-graph capture.
        return math.ceil(2 * load + self.compile_seconds)

    @property
    def host_memory(self) -> str:
        if self.memory_request:
            return self.memory_request
        per_pod_gib = self.weight_bytes / self.pipeline_parallel_size / 2**30
        return f"{max(16, math.ceil(per_pod_gib * 0.5 + 16))}Gi"


def vllm_args(a: VllmServiceArgs) -> list[str]:
    """The `vllm serve` arguments shared by every pod of the model (multi-node flags are added per role)."""
    args = [
        a.store.model_location,
        "--served-model-name",
        a.served_model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(PORT),
        "--tensor-parallel-size",
        str(a.tensor_parallel_size),
        "--pipeline-parallel-size",
        str(a.pipeline_parallel_size),
        "--max-model-len",
        str(a.max_model_len),
        "--gpu-memory-utilization",
        f"{a.gpu_memory_utilization:g}",
        "--max-num-seqs",
        str(a.max_num_seqs),
        "--enable-prefix-caching" if a.prefix_caching else "--disable-prefix-caching",
    ]
    if a.quantization:
        args += ["--quantization", a.quantization]
    if a.kv_cache_dtype != "auto":
        args += ["--kv-cache-dtype", a.kv_cache_dtype]
    if a.store.kind == "s3":
        args += ["--load-format", "runai_streamer"]
    if a.tls:
        args += [
            "--ssl-keyfile",
            f"{TLS_MOUNT}/tls.key",
            "--ssl-certfile",
            f"{TLS_MOUNT}/tls.crt",
            "--ssl-ca-certs",
            f"{TLS_MOUNT}/ca.crt",
            "--ssl-cert-reqs",
            "2",
            "--enable-ssl-refresh",
        ]
        if a.tls.ciphers:
            args += ["--ssl-ciphers", a.tls.ciphers]
    # (--enable-ssl-refresh reloads rotated certificates without a restart.)
    if a.max_output_tokens is not None:
        args += ["--override-generation-config", json.dumps({"max_new_tokens": a.max_output_tokens})]
    if a.trust_remote_code:
        args.append("--trust-remote-code")
    return args + list(a.extra_args)


class VllmService(pulumi.ComponentResource):
    """One model served by vLLM with the platform's hardening, storage, integrity and scaling."""

    def __init__(self, name: str, args: VllmServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("privatellm:inference:VllmService", name, None, opts)
        self.args = a = args
        child = pulumi.ResourceOptions(parent=self)
        self.selector = {
            "app.kubernetes.io/name": a.name,
            "app.kubernetes.io/instance": a.instance,
            "app.kubernetes.io/component": "server",
        }
        # Pods do not carry the revision label: declaring revisions then changes no pod template, so the stable
        # revision's servers keep running (series get `revision` from the ServiceMonitor instead).
        self.pod_labels = {**self._labels("server", revision=False), **a.labels}

        def meta(
            object_name: str, component: str, annotations: Mapping[str, str] | None = None
        ) -> k8s.meta.v1.ObjectMetaArgs:
            return k8s.meta.v1.ObjectMetaArgs(
                name=object_name,
                namespace=a.namespace,
                labels=self._labels(component),
                annotations=dict(annotations) if annotations else None,
            )

        self.meta = meta
        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=meta(a.name, "server"),
            automount_service_account_token=False,
            opts=child,
        )
        self.claim = self._model_cache(name, child)
        self.s3_secret = self._s3_secret(name, child)
        self.scripts = k8s.core.v1.ConfigMap(
            f"{name}-scripts",
            metadata=meta(f"{a.name}-scripts", "server"),
            data={name: assets.read(name) for name in ("verify_weights.py", "probe.py", "tls_forward.py")},
            opts=child,
        )
        self.integrity = (
            k8s.core.v1.ConfigMap(
                f"{name}-integrity",
                metadata=meta(f"{a.name}-integrity", "integrity"),
                data={"sha256sums": a.integrity_manifest},
                opts=child,
            )
            if a.integrity_manifest
            else None
        )
        self.workload: pulumi.CustomResource = self._leader_worker_set(name) if a.multi_node else self._deployment(name)
        service_selector = dict(self.selector)
        if a.multi_node:
            service_selector[LWS_INDEX_LABEL] = "0"
        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(a.name, "server"),
            spec=k8s.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=service_selector,
                ports=[
                    k8s.core.v1.ServicePortArgs(
                        name="https" if a.tls else "http", port=PORT, target_port="http", protocol="TCP"
                    )
                ],
            ),
            opts=child,
        )
        self.pdb = k8s.policy.v1.PodDisruptionBudget(
            f"{name}-pdb",
            metadata=meta(a.name, "server"),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                max_unavailable=1,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
            ),
            opts=child,
        )
        self.network_policies = self._network_policies(name, child)
        self.service_monitor = self._service_monitor(name, child)
        self.scaled_object = self._scaled_object(name, child) if a.autoscaling else None
        self.benchmark_job = self._benchmark(name, child) if a.benchmark else None
        self.register_outputs(
            {
                "service": a.name,
                "url": f"{'https' if a.tls else 'http'}://{a.name}.{a.namespace}.svc:{PORT}",
                "workload": "LeaderWorkerSet" if a.multi_node else "Deployment",
            }
        )

    # ----------------------------------------------------------------------------------------------------------

    def _labels(self, component: str, revision: bool = True) -> dict[str, str]:
        extra = {"privatellm.io/model": self.args.served_model_name.replace("/", "-")[:63]}
        if revision and self.args.revision is not None:
            extra[REVISION_LABEL] = self.args.revision.name
        return standard_labels(name=self.args.name, instance=self.args.instance, component=component, extra=extra)

    def _workload_annotations(self) -> dict[str, str]:
        """The checkov skips, and with a revision its weight and approval (read by the pack's revision rules)."""
        annotations = scanner_skips(self.args.scanner_skips)
        revision = self.args.revision
        if revision is not None:
            annotations[REVISION_WEIGHT_ANNOTATION] = str(revision.weight)
            if revision.approved_by:
                annotations[APPROVED_BY_ANNOTATION] = revision.approved_by
        return annotations

    def _model_cache(self, name: str, child: pulumi.ResourceOptions) -> k8s.core.v1.PersistentVolumeClaim | None:
        a = self.args
        if a.store.kind != "pvc" or not a.store.create_claim:
            return None
        return k8s.core.v1.PersistentVolumeClaim(
            f"{name}-weights",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=a.store.claim_name or f"{a.name}-weights",
                namespace=a.namespace,
                labels=self._labels("model-cache"),
                annotations=RETAINED,
            ),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=[a.store.access_mode],
                storage_class_name=a.store.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": a.store.size or "0"}),
            ),
            # Model weights are data: deleting the stack never deletes them.
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(retain_on_delete=True)),
        )

    @property
    def claim_name(self) -> str:
        return self.args.store.claim_name or f"{self.args.name}-weights"

    def _s3_secret(self, name: str, child: pulumi.ResourceOptions) -> k8s.core.v1.Secret | None:
        a = self.args
        if a.store.kind != "s3":
            return None
        return k8s.core.v1.Secret(
            f"{name}-s3",
            metadata=self.meta(f"{a.name}-s3-credentials", "model-store"),
            type="Opaque",
            string_data={
                "AWS_ACCESS_KEY_ID": pulumi.Output.secret(a.store.s3_access_key_id or ""),
                "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(a.store.s3_secret_access_key or ""),
            },
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )

    # ---------------------------------------------------------------------------------------------- pod template

    def _env(self, multi_node: bool) -> list[k8s.core.v1.EnvVarArgs]:
        env = [
            k8s.core.v1.EnvVarArgs(name="HOME", value=HOME),
            k8s.core.v1.EnvVarArgs(name="VLLM_CACHE_ROOT", value=f"{HOME}/.cache/vllm"),
            k8s.core.v1.EnvVarArgs(name="HF_HOME", value=f"{HOME}/.cache/huggingface"),
            k8s.core.v1.EnvVarArgs(name="HF_HUB_OFFLINE", value="1"),
            k8s.core.v1.EnvVarArgs(name="TRANSFORMERS_OFFLINE", value="1"),
            k8s.core.v1.EnvVarArgs(name="VLLM_NO_USAGE_STATS", value="1"),
            k8s.core.v1.EnvVarArgs(name="DO_NOT_TRACK", value="1"),
        ]
        if multi_node:
            env.append(
                k8s.core.v1.EnvVarArgs(
                    name="VLLM_HOST_IP",
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        field_ref=k8s.core.v1.ObjectFieldSelectorArgs(field_path="status.podIP")
                    ),
                )
            )
        env += self._s3_env()
        return env

    def _s3_env(self) -> list[k8s.core.v1.EnvVarArgs]:
        a = self.args
        if a.store.kind != "s3":
            return []
        secret = f"{a.name}-s3-credentials"
        return [
            k8s.core.v1.EnvVarArgs(name="AWS_ENDPOINT_URL", value=a.store.s3_endpoint),
            k8s.core.v1.EnvVarArgs(name="AWS_DEFAULT_REGION", value=a.store.s3_region),
            *[
                k8s.core.v1.EnvVarArgs(
                    name=key,
                    value_from=k8s.core.v1.EnvVarSourceArgs(
                        secret_key_ref=k8s.core.v1.SecretKeySelectorArgs(name=secret, key=key)
                    ),
                )
                for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
            ],
        ]

    def _security_context(self) -> k8s.core.v1.SecurityContextArgs:
        return k8s.core.v1.SecurityContextArgs(
            allow_privilege_escalation=False,
            capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
            read_only_root_filesystem=True,
            run_as_non_root=True,
            run_as_user=RUN_AS_USER,
            run_as_group=RUN_AS_USER,
            seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
        )

    def _volumes(self) -> list[k8s.core.v1.VolumeArgs]:
        a = self.args
        volumes = [
            k8s.core.v1.VolumeArgs(name="home", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="20Gi")),
            k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(size_limit="10Gi")),
            k8s.core.v1.VolumeArgs(
                name="dshm",
                empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs(medium="Memory", size_limit=a.shm_size),
            ),
            k8s.core.v1.VolumeArgs(
                name="scripts",
                config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=f"{a.name}-scripts", default_mode=0o555),
            ),
        ]
        if a.store.kind == "pvc":
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="weights",
                    persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                        claim_name=self.claim_name, read_only=True
                    ),
                )
            )
        if a.verifies_weights:
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="integrity",
                    config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                        name=a.integrity_configmap or f"{a.name}-integrity",
                        items=[k8s.core.v1.KeyToPathArgs(key="sha256sums", path="sha256sums")],
                    ),
                )
            )
        if a.tls:
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="tls",
                    secret=k8s.core.v1.SecretVolumeSourceArgs(secret_name=a.tls.secret_name, default_mode=0o440),
                )
            )
            volumes.append(
                k8s.core.v1.VolumeArgs(
                    name="probe-tls",
                    secret=k8s.core.v1.SecretVolumeSourceArgs(
                        secret_name=a.tls.probe_client_secret, default_mode=0o440
                    ),
                )
            )
        return volumes

    def _mounts(self, server: bool) -> list[k8s.core.v1.VolumeMountArgs]:
        a = self.args
        mounts = [
            k8s.core.v1.VolumeMountArgs(name="home", mount_path=HOME),
            k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
            k8s.core.v1.VolumeMountArgs(name="scripts", mount_path=SCRIPTS_MOUNT, read_only=True),
        ]
        if a.store.kind == "pvc":
            mounts.append(k8s.core.v1.VolumeMountArgs(name="weights", mount_path=MODELS_MOUNT, read_only=True))
        if server:
            mounts.append(k8s.core.v1.VolumeMountArgs(name="dshm", mount_path="/dev/shm"))
            if a.tls:
                mounts.append(k8s.core.v1.VolumeMountArgs(name="tls", mount_path=TLS_MOUNT, read_only=True))
                mounts.append(
                    k8s.core.v1.VolumeMountArgs(name="probe-tls", mount_path="/etc/vllm/probe-tls", read_only=True)
                )
        elif a.verifies_weights:
            mounts.append(k8s.core.v1.VolumeMountArgs(name="integrity", mount_path=INTEGRITY_MOUNT, read_only=True))
        return mounts

    def _probe_command(self) -> list[str]:
        command = ["python3", f"{SCRIPTS_MOUNT}/probe.py", "--port", str(PORT), "--path", "/health"]
        if self.args.tls:
            command += [
                "--cert",
                "/etc/vllm/probe-tls/tls.crt",
                "--key",
                "/etc/vllm/probe-tls/tls.key",
                "--ca",
                f"{TLS_MOUNT}/ca.crt",
            ]
        return command

    def _probes(self) -> dict[str, k8s.core.v1.ProbeArgs]:
        a = self.args
        # Readiness and startup call /health presenting the pod's client certificate (kubelet's HTTPS probes
        # present none and would fail against an mTLS-only server); liveness only needs the port to answer.
        exec_probe = k8s.core.v1.ExecActionArgs(command=self._probe_command())
        period = 10
        return {
            "startup": k8s.core.v1.ProbeArgs(
                exec_=exec_probe,
                period_seconds=period,
                timeout_seconds=5,
                failure_threshold=max(6, math.ceil(a.startup_seconds / period)),
            ),
            "readiness": k8s.core.v1.ProbeArgs(
                exec_=exec_probe, period_seconds=period, timeout_seconds=5, failure_threshold=3
            ),
            "liveness": k8s.core.v1.ProbeArgs(
                tcp_socket=k8s.core.v1.TCPSocketActionArgs(port=PORT),
                period_seconds=20,
                timeout_seconds=5,
                failure_threshold=3,
            ),
        }

    def _init_containers(self) -> list[k8s.core.v1.ContainerArgs]:
        a = self.args
        if not a.verifies_weights:
            return []
        return [
            k8s.core.v1.ContainerArgs(
                name="verify-weights",
                image=a.image,
                command=[
                    "python3",
                    f"{SCRIPTS_MOUNT}/verify_weights.py",
                    "--manifest",
                    f"{INTEGRITY_MOUNT}/sha256sums",
                    "--root",
                    a.store.model_location,
                ],
                env=[k8s.core.v1.EnvVarArgs(name="HOME", value=HOME), *self._s3_env()],
                security_context=self._security_context(),
                resources=k8s.core.v1.ResourceRequirementsArgs(
                    requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "2", "memory": "2Gi"}
                ),
                volume_mounts=self._mounts(server=False),
            )
        ]

    def _server_container(self, args: list[str], multi_node: bool) -> k8s.core.v1.ContainerArgs:
        a = self.args
        probes = self._probes()
        gpus = str(a.gpus_per_pod)
        return k8s.core.v1.ContainerArgs(
            name="vllm",
            image=a.image,
            command=["vllm", "serve"],
            args=args,
            env=self._env(multi_node),
            ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=PORT, protocol="TCP")],
            resources=k8s.core.v1.ResourceRequirementsArgs(
                requests={"cpu": a.cpu_request, "memory": a.host_memory, a.scheduling.gpu_resource: gpus},
                # Limits equal requests: Guaranteed QoS, so a static CPU manager can pin whole cores to the server
                # and a noisy neighbour cannot throttle the scheduler loop that feeds the GPUs.
                limits={"cpu": a.cpu_request, "memory": a.host_memory, a.scheduling.gpu_resource: gpus},
            ),
            security_context=self._security_context(),
            volume_mounts=self._mounts(server=True),
            startup_probe=probes["startup"],
            readiness_probe=probes["readiness"],
            liveness_probe=probes["liveness"],
        )

    def _pod_spec(self, server_args: list[str], multi_node: bool, init: bool = True) -> k8s.core.v1.PodSpecArgs:
        a = self.args
        return k8s.core.v1.PodSpecArgs(
            service_account_name=a.name,
            automount_service_account_token=False,
            enable_service_links=False,
            image_pull_secrets=pull_secret_refs(a.image_pull_secrets) or None,
            priority_class_name=a.scheduling.priority_class,
            node_selector=dict(a.scheduling.node_selector),
            tolerations=[
                k8s.core.v1.TolerationArgs(
                    key=t.get("key"), operator=t.get("operator"), value=t.get("value"), effect=t.get("effect")
                )
                for t in a.scheduling.tolerations
            ],
            security_context=_pod_security_context(),
            topology_spread_constraints=[
                k8s.core.v1.TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key="kubernetes.io/hostname",
                    when_unsatisfiable="ScheduleAnyway",
                    label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                )
            ],
            termination_grace_period_seconds=60,
            init_containers=(self._init_containers() or None) if init else None,
            containers=[self._server_container(server_args, multi_node)],
            volumes=self._volumes(),
        )

    def _template(self, server_args: list[str], multi_node: bool, init: bool = True) -> k8s.core.v1.PodTemplateSpecArgs:
        return k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=self.pod_labels),
            spec=self._pod_spec(server_args, multi_node, init),
        )

    # ------------------------------------------------------------------------------------------------- workloads

    @property
    def _replicas(self) -> int | None:
        """With KEDA the autoscaler owns the replica count (its HPA scales the workload): the program leaves
        spec.replicas unset, so a later `pulumi up` never takes the field back and resets a scaled-out server."""
        return None if self.args.autoscaling else self.args.replicas

    def _deployment(self, name: str) -> k8s.apps.v1.Deployment:
        a = self.args
        replicas = self._replicas
        return k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=self.meta(a.name, "server", self._workload_annotations()),
            spec=k8s.apps.v1.DeploymentSpecArgs(
                replicas=replicas,
                selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                strategy=k8s.apps.v1.DeploymentStrategyArgs(
                    type="RollingUpdate",
                    # A full pool has no GPUs for a surge pod: replace one pod at a time instead.
                    rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(
                        max_surge=1 if a.surge_allowed else 0, max_unavailable=0 if a.surge_allowed else 1
                    ),
                ),
                template=self._template(vllm_args(a), multi_node=False),
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._dependencies()),
        )

    def _dependencies(self) -> list[pulumi.Resource]:
        deps: list[pulumi.Resource] = [self.service_account, self.scripts]
        deps += [r for r in (self.claim, self.s3_secret, self.integrity) if r is not None]
        return deps

    def _leader_worker_set(self, name: str) -> k8s.apiextensions.CustomResource:
        a = self.args
        nodes = a.pipeline_parallel_size
        common = ["--nnodes", str(nodes), "--master-addr", "$(LWS_LEADER_ADDRESS)"]
        leader_args = [*vllm_args(a), *common, "--node-rank", "0"]
        worker_args = [*vllm_args(a), *common, "--node-rank", "$(LWS_WORKER_INDEX)", "--headless"]
        # Typed Args inside an untyped spec serialise to the same camelCase object a typed resource sends.
        leader = self._template(leader_args, multi_node=True)
        worker = self._template(worker_args, multi_node=True)
        replicas = self._replicas
        return k8s.apiextensions.CustomResource(
            f"{name}-lws",
            api_version="leaderworkerset.x-k8s.io/v1",
            kind="LeaderWorkerSet",
            metadata=self.meta(a.name, "server", self._workload_annotations()),
            spec={
                **({"replicas": replicas} if replicas is not None else {}),
                "startupPolicy": "LeaderCreated",
                "rolloutStrategy": {
                    "type": "RollingUpdate",
                    "rollingUpdateConfiguration": {
                        "maxSurge": 1 if a.surge_allowed else 0,
                        "maxUnavailable": 0 if a.surge_allowed else 1,
                    },
                },
                "leaderWorkerTemplate": {
                    "size": nodes,
                    "restartPolicy": "RecreateGroupOnPodRestart",
                    "leaderTemplate": leader,
                    "workerTemplate": worker,
                },
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=self._dependencies()),
        )

    # ------------------------------------------------------------------------------------------------- network

    def _network_policies(self, name: str, child: pulumi.ResourceOptions) -> list[k8s.networking.v1.NetworkPolicy]:
        a = self.args

        def from_namespace(ns: str) -> k8s.networking.v1.NetworkPolicyPeerArgs:
            return k8s.networking.v1.NetworkPolicyPeerArgs(
                namespace_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": ns})
            )

        bench_labels = {**self.selector, "app.kubernetes.io/component": "benchmark"}
        bench_peer = k8s.networking.v1.NetworkPolicyPeerArgs(
            pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=bench_labels)
        )
        egress: list[k8s.networking.v1.NetworkPolicyEgressRuleArgs] = []
        if a.store.kind == "s3":
            egress.append(
                k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                    to=[
                        k8s.networking.v1.NetworkPolicyPeerArgs(ip_block=k8s.networking.v1.IPBlockArgs(cidr=cidr))
                        for cidr in a.store.s3_egress_cidrs
                    ],
                    ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=_port_of(a.store.s3_endpoint))],
                )
            )
        clients = [from_namespace(ns) for ns in (a.gateway_namespace, a.monitoring_namespace) if ns]
        clients += [bench_peer] if a.benchmark else []
        policies = [
            k8s.networking.v1.NetworkPolicy(
                f"{name}-serving",
                metadata=self.meta(f"{a.name}-serving", "network-policy"),
                spec=k8s.networking.v1.NetworkPolicySpecArgs(
                    pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=self.selector),
                    policy_types=["Ingress", "Egress"] if egress else ["Ingress"],
                    # No client: no ingress rule at all (a rule without `from` would admit every source).
                    ingress=[
                        k8s.networking.v1.NetworkPolicyIngressRuleArgs(
                            from_=clients,
                            ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=PORT)],
                        )
                    ]
                    if clients
                    else None,
                    egress=egress or None,
                ),
                opts=child,
            )
        ]
        if a.benchmark:
            server_labels = self.selector
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-bench",
                    metadata=self.meta(f"{a.name}-bench", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=bench_labels),
                        policy_types=["Egress"],
                        egress=[
                            k8s.networking.v1.NetworkPolicyEgressRuleArgs(
                                to=[
                                    k8s.networking.v1.NetworkPolicyPeerArgs(
                                        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels=server_labels)
                                    )
                                ],
                                ports=[k8s.networking.v1.NetworkPolicyPortArgs(protocol="TCP", port=PORT)],
                            )
                        ],
                    ),
                    opts=child,
                )
            )
        if a.multi_node:
            group = k8s.networking.v1.NetworkPolicyPeerArgs(
                pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={LWS_NAME_LABEL: a.name})
            )
            # NCCL and torch.distributed traffic between the nodes of a group is not encrypted: confine it.
            policies.append(
                k8s.networking.v1.NetworkPolicy(
                    f"{name}-group",
                    metadata=self.meta(f"{a.name}-group", "network-policy"),
                    spec=k8s.networking.v1.NetworkPolicySpecArgs(
                        pod_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={LWS_NAME_LABEL: a.name}),
                        policy_types=["Ingress", "Egress"],
                        ingress=[k8s.networking.v1.NetworkPolicyIngressRuleArgs(from_=[group])],
                        egress=[k8s.networking.v1.NetworkPolicyEgressRuleArgs(to=[group])],
                    ),
                    opts=child,
                )
            )
        return policies

    # ---------------------------------------------------------------------------------------- metrics, scaling

    def _service_monitor(self, name: str, child: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        a = self.args
        endpoint: dict[str, Any] = {"port": "https" if a.tls else "http", "path": "/metrics", "interval": "15s"}
        if a.tls:
            endpoint["scheme"] = "https"
            client = a.tls.metrics_client_secret or a.tls.probe_client_secret
            endpoint["tlsConfig"] = {
                "ca": {"secret": {"name": a.tls.secret_name, "key": "ca.crt"}},
                "cert": {"secret": {"name": client, "key": "tls.crt"}},
                "keySecret": {"name": client, "key": "tls.key"},
                "serverName": f"{a.name}.{a.namespace}.svc",
            }
        if a.revision is not None:
            # Every series of this server carries its revision, so rules and dashboards compare revisions.
            endpoint["relabelings"] = [{"action": "replace", "targetLabel": "revision", "replacement": a.revision.name}]
        return k8s.apiextensions.CustomResource(
            f"{name}-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=self.meta(a.name, "metrics"),
            spec={
                "selector": {"matchLabels": self._labels("server")},
                "namespaceSelector": {"matchNames": [a.namespace]},
                "endpoints": [endpoint],
            },
            opts=child,
        )

    def _scaled_object(self, name: str, child: pulumi.ResourceOptions) -> k8s.apiextensions.CustomResource:
        a = self.args
        assert a.autoscaling is not None
        scope = f'namespace="{a.namespace}",model_name="{a.served_model_name}"'
        if a.revision is not None:
            scope += f',revision="{a.revision.name}"'  # the other revisions' queues are not this server's load
        query = f"sum(vllm:num_requests_waiting{{{scope}}})"
        target = (
            {"apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet", "name": a.name}
            if a.multi_node
            else {"apiVersion": "apps/v1", "kind": "Deployment", "name": a.name}
        )
        return k8s.apiextensions.CustomResource(
            f"{name}-scaler",
            api_version="keda.sh/v1alpha1",
            kind="ScaledObject",
            metadata=self.meta(a.name, "autoscaling"),
            spec={
                "scaleTargetRef": target,
                "minReplicaCount": a.autoscaling.min_replicas,
                "maxReplicaCount": a.autoscaling.max_replicas,
                "pollingInterval": 15,
                # Loading weights takes minutes: scale down slowly.
                "cooldownPeriod": 600,
                "triggers": [
                    {
                        "type": "prometheus",
                        "metadata": {
                            "serverAddress": a.autoscaling.prometheus_url,
                            "query": query,
                            "threshold": str(a.autoscaling.waiting_threshold),
                        },
                    }
                ],
            },
            opts=child,
        )

    def _benchmark(self, name: str, child: pulumi.ResourceOptions) -> k8s.batch.v1.Job:
        a = self.args
        assert a.benchmark is not None
        b = a.benchmark
        # vllm bench serve cannot present a client certificate: with mTLS it talks to a loopback forwarder that does.
        base_url = "http://127.0.0.1:18000" if a.tls else f"http://{a.name}.{a.namespace}.svc:{PORT}"
        runs = []
        for concurrency in b.concurrency:
            runs.append(
                shlex.join(
                    [
                        "vllm",
                        "bench",
                        "serve",
                        "--base-url",
                        base_url,
                        "--model",
                        a.served_model_name,
                        "--tokenizer",
                        a.store.model_location,
                        "--dataset-name",
                        "random",
                        "--random-input-len",
                        str(b.input_len),
                        "--random-output-len",
                        str(b.output_len),
                        "--num-prompts",
                        str(b.num_prompts),
                        "--max-concurrency",
                        str(concurrency),
                        "--percentile-metrics",
                        "ttft,tpot,itl,e2el",
                        "--metric-percentiles",
                        "50,95,99",
                        "--save-result",
                        "--result-dir",
                        "/tmp/results",
                        "--result-filename",
                        f"c{concurrency}.json",
                    ]
                )
                + f" && cat /tmp/results/c{concurrency}.json && echo"
            )
        env = [
            k8s.core.v1.EnvVarArgs(name="HOME", value=HOME),
            k8s.core.v1.EnvVarArgs(name="HF_HUB_OFFLINE", value="1"),
            k8s.core.v1.EnvVarArgs(name="VLLM_NO_USAGE_STATS", value="1"),
            k8s.core.v1.EnvVarArgs(name="DO_NOT_TRACK", value="1"),
        ]
        script = " && ".join(runs)
        mounts = self._mounts(server=False)
        if a.tls:
            forward = shlex.join(
                [
                    "python3",
                    f"{SCRIPTS_MOUNT}/tls_forward.py",
                    "--listen",
                    "18000",
                    "--upstream",
                    f"{a.name}.{a.namespace}.svc:{PORT}",
                    "--cert",
                    "/etc/vllm/probe-tls/tls.crt",
                    "--key",
                    "/etc/vllm/probe-tls/tls.key",
                    "--ca",
                    f"{TLS_MOUNT}/ca.crt",
                ]
            )
            script = f"{forward} & sleep 2 && {script}"
            mounts += [
                k8s.core.v1.VolumeMountArgs(name="tls", mount_path=TLS_MOUNT, read_only=True),
                k8s.core.v1.VolumeMountArgs(name="probe-tls", mount_path="/etc/vllm/probe-tls", read_only=True),
            ]
        return k8s.batch.v1.Job(
            f"{name}-bench",
            metadata=self.meta(f"{a.name}-bench", "benchmark"),
            spec=k8s.batch.v1.JobSpecArgs(
                backoff_limit=0,
                ttl_seconds_after_finished=7 * 24 * 3600,
                template=k8s.core.v1.PodTemplateSpecArgs(
                    metadata=k8s.meta.v1.ObjectMetaArgs(labels={**self._labels("benchmark")}),
                    spec=k8s.core.v1.PodSpecArgs(
                        restart_policy="Never",
                        service_account_name=a.name,
                        image_pull_secrets=pull_secret_refs(a.image_pull_secrets) or None,
                        automount_service_account_token=False,
                        enable_service_links=False,
                        security_context=_pod_security_context(),
                        containers=[
                            k8s.core.v1.ContainerArgs(
                                name="bench",
                                image=a.image,
                                command=["/bin/sh", "-c", script],
                                env=env,
                                resources=k8s.core.v1.ResourceRequirementsArgs(
                                    requests={"cpu": "2", "memory": "4Gi"}, limits={"cpu": "4", "memory": "8Gi"}
                                ),
                                security_context=self._security_context(),
                                volume_mounts=mounts,
                            )
                        ],
                        volumes=self._volumes(),
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(depends_on=[self.workload], delete_before_replace=True)
            ),
        )


def _pod_security_context() -> k8s.core.v1.PodSecurityContextArgs:
    return k8s.core.v1.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=RUN_AS_USER,
        run_as_group=RUN_AS_USER,
        fs_group=RUN_AS_USER,
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"),
    )


def _port_of(url: str | None) -> int:
    if not url:
        return 443
    match = re.match(r"^https?://[^/:]+:(\d+)", url)
    if match:
        return int(match.group(1))
    return 443 if url.startswith("https://") else 80
