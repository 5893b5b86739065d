"""Typed stack configuration: the `privatellm:platform` key of a stack file, parsed into a `PlatformSpec`.

Everything a customer can say about their platform is declared here, with safe defaults. A bad stack file fails
before any resource is registered with one `StackConfigError` that lists every problem: the field path, the bad
value and what is allowed. Unknown keys are errors (`extra="forbid"` at every level), with a "did you mean" hint.

Secrets never live in the platform object: a field ending in `_secret` names another config key of the stack that
was set with `pulumi config set --secret`; `check_secret_refs` checks that each one exists and is encrypted.
"""

from __future__ import annotations

import difflib
import ipaddress
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

import pulumi
from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from infra.observability.fluentbit import validate_extra_patterns
from infra.profiles import PROFILE_SETTINGS
from policies.pack import merge_pack_config, validate_pack_config
from policies.profiles import LEVELS as PROFILE_LEVELS
from policies.profiles import Profile

CONFIG_NAMESPACE = "privatellm"
PLATFORM_KEY = "platform"
FULL_PLATFORM_KEY = f"{CONFIG_NAMESPACE}:{PLATFORM_KEY}"

# Kubernetes minor versions we render for. 1.31 is the floor of DESIGN.md; 1.37 is the newest release whose
# schemas kubernetes-validate ships, so every rendered object can be strictly validated.
MIN_KUBERNETES_MINOR = 31
MAX_KUBERNETES_MINOR = 37
DEFAULT_KUBERNETES_VERSION = "1.31"

RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SECRET_REF = re.compile(r"^([a-zA-Z][a-zA-Z0-9_-]*:)?[a-zA-Z][a-zA-Z0-9_.-]*$")
_GROUP_NAME = re.compile(r"^[^\s,]{1,253}$")
# Key words that, holding a plain string, make a key a credential stored in the clear ("tokens_per_minute" is not).
_CREDENTIAL_WORDS = frozenset({"password", "passwd", "passphrase", "token", "apikey", "credential", "credentials"})
_CREDENTIAL_PAIRS = frozenset(
    {("api", "key"), ("private", "key"), ("client", "key"), ("access", "key"), ("secret", "key")}
)


def _is_credential_key(key: str) -> bool:
    words = [w for w in re.split(r"[_\-.]+|(?<=[a-z])(?=[A-Z])", key) if w]
    lowered = [w.lower() for w in words]
    if lowered == ["secret"] or any(w in _CREDENTIAL_WORDS for w in lowered):
        return True
    return any(pair in _CREDENTIAL_PAIRS for pair in itertools.pairwise(lowered))


# Values that are credentials whatever key holds them.
_CREDENTIAL_VALUE = re.compile(
    r"(-----BEGIN [A-Z ]*PRIVATE KEY-----|client-key-data:|\btoken:\s*\S{16,}|AKIA[0-9A-Z]{16})"
)


CHECKOUT = Path(__file__).resolve().parents[1]
"""This checkout (or installed tree): where the project is when no Pulumi.yaml is found above the working directory."""
_PROJECT_DIR: ContextVar[Path | None] = ContextVar("privatellm_project_dir", default=None)


def set_project_dir(path: Path | None) -> None:
    """Where relative paths of a stack file (config_path, manifest_file) are resolved; set by the offline engine."""
    _PROJECT_DIR.set(path)


def find_project_dir(start: Path | None = None) -> Path:
    """The folder holding Pulumi.yaml: from `start` (or the working directory) upwards, else this checkout."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "Pulumi.yaml").is_file():
            return folder
    if (CHECKOUT / "Pulumi.yaml").is_file():
        return CHECKOUT
    raise FileNotFoundError("no Pulumi.yaml found in the working directory or above; run from the project folder")


def project_dir() -> Path:
    """The folder holding Pulumi.yaml: the one set explicitly (`set_project_dir`), else `find_project_dir()`."""
    explicit = _PROJECT_DIR.get()
    return explicit if explicit is not None else find_project_dir()


class StackConfigError(pulumi.RunError):
    """A stack file that cannot be built. `problems` holds one line per problem; the message lists them all."""

    def __init__(self, problems: list[str], stack: str | None = None) -> None:
        self.problems = problems
        where = f"stack {stack!r}: " if stack else ""
        head = f"{where}{FULL_PLATFORM_KEY} has {len(problems)} problem{'s' if len(problems) != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


# --------------------------------------------------------------------------------------------------------------
# Field types
# --------------------------------------------------------------------------------------------------------------


def _dns_label(value: str) -> str:
    if len(value) > 63 or not _DNS_LABEL.match(value):
        raise ValueError(
            "must be a DNS-1123 label: at most 63 characters of lower-case letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _namespace_name(value: str) -> str:
    _dns_label(value)
    if value in RESERVED_NAMESPACES or value.startswith("kube-"):
        raise ValueError(
            "is reserved for the cluster itself; platform workloads never run there (CIS 5.6.4); choose another name"
        )
    return value


def _quantity(value: str | int | float) -> str:
    text = str(value)
    try:
        parse_quantity(text)
    except ValueError:
        raise ValueError(
            "is not a Kubernetes quantity; use a number with an optional suffix such as 500m, 2, 64Gi or 1Ti"
        ) from None
    return text


def _kubernetes_version(value: str) -> str:
    match = re.fullmatch(r"1\.(\d+)", value)
    if not match or not MIN_KUBERNETES_MINOR <= int(match.group(1)) <= MAX_KUBERNETES_MINOR:
        raise ValueError(
            f"must be a supported Kubernetes minor version written as '1.N', from 1.{MIN_KUBERNETES_MINOR} "
            f"to 1.{MAX_KUBERNETES_MINOR}"
        )
    return value


def _secret_ref(value: str) -> str:
    if not _SECRET_REF.match(value):
        raise ValueError(
            "must name a secure config key of this stack (for example 'kubeconfig', set with "
            "`pulumi config set --secret privatellm:kubeconfig ...`)"
        )
    return value


_DN_FRAGMENT = re.compile(r"^(CN|OU|DC|O|L|ST|C|UID)=", re.IGNORECASE)


def _group_name(value: str) -> str:
    if _DN_FRAGMENT.match(value):
        raise ValueError(
            "looks like a piece of a distinguished name: a YAML flow list splits `[CN=a,OU=b,DC=c]` at its commas "
            "into separate groups (each would be bound). Write the group name your identity provider puts in the "
            "token's groups claim, e.g. llm-retail-admins"
        )
    if not _GROUP_NAME.match(value):
        raise ValueError("must be an LDAP/OIDC group name without spaces or commas (at most 253 characters)")
    return value


DnsLabel = Annotated[str, AfterValidator(_dns_label)]
NamespaceName = Annotated[str, AfterValidator(_namespace_name)]
Quantity = Annotated[str, AfterValidator(_quantity)]
KubernetesVersion = Annotated[str, AfterValidator(_kubernetes_version)]
SecretRef = Annotated[str, AfterValidator(_secret_ref)]
GroupName = Annotated[str, AfterValidator(_group_name)]
NonNegativeInt = Annotated[int, Field(ge=0)]


class StrictModel(BaseModel):
    """Every level of the stack file forbids unknown keys and is immutable once parsed."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)


# --------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------


class DnsSpec(StrictModel):
    """Where cluster DNS runs: every namespace's default-deny egress policy allows exactly this."""

    namespace: DnsLabel = "kube-system"
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"}, min_length=1)


class ClusterSpec(StrictModel):
    """The target cluster. Credentials come from a kubeconfig path on the deploy host or a secure config key."""

    # Where the API server is reachable from pods (controllers and webhooks); narrow it to the control plane.
    api_server_cidrs: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
    api_server_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(default_factory=lambda: [443, 6443])

    kubernetes_version: KubernetesVersion = DEFAULT_KUBERNETES_VERSION
    kubeconfig_path: str | None = None
    kubeconfig_secret: SecretRef | None = None
    context: str | None = None
    dns: DnsSpec = Field(default_factory=DnsSpec)

    @model_validator(mode="after")
    def _one_kubeconfig(self) -> ClusterSpec:
        if self.kubeconfig_path and self.kubeconfig_secret:
            raise ValueError(
                "set either kubeconfig_path (a file on the deploy host) or kubeconfig_secret (a secure config key), "
                "not both"
            )
        return self

    @property
    def minor(self) -> int:
        return int(self.kubernetes_version.split(".")[1])


class QuotaSpec(StrictModel):
    """A namespace's ResourceQuota. `gpus: null` leaves GPUs out of the quota (bounded by the node pool instead)."""

    requests_cpu: Quantity = "8"
    requests_memory: Quantity = "32Gi"
    limits_cpu: Quantity = "16"
    limits_memory: Quantity = "64Gi"
    requests_storage: Quantity = "200Gi"
    gpus: NonNegativeInt | None = 0
    pods: NonNegativeInt = 50
    persistent_volume_claims: NonNegativeInt = 10
    services: NonNegativeInt = 20
    load_balancers: NonNegativeInt = 0
    node_ports: NonNegativeInt = 0
    secrets: NonNegativeInt = 100
    config_maps: NonNegativeInt = 100

    @model_validator(mode="after")
    def _requests_within_limits(self) -> QuotaSpec:
        for req, lim in (("requests_cpu", "limits_cpu"), ("requests_memory", "limits_memory")):
            if parse_quantity(getattr(self, req)) > parse_quantity(getattr(self, lim)):
                raise ValueError(
                    f"{req}={getattr(self, req)} is larger than {lim}={getattr(self, lim)}; raise {lim} or lower {req}"
                )
        return self

    def hard(self) -> dict[str, str]:
        """The ResourceQuota `spec.hard` map."""
        hard = {
            "requests.cpu": self.requests_cpu,
            "requests.memory": self.requests_memory,
            "limits.cpu": self.limits_cpu,
            "limits.memory": self.limits_memory,
            "requests.storage": self.requests_storage,
            "pods": str(self.pods),
            "persistentvolumeclaims": str(self.persistent_volume_claims),
            "services": str(self.services),
            "services.loadbalancers": str(self.load_balancers),
            "services.nodeports": str(self.node_ports),
            "secrets": str(self.secrets),
            "configmaps": str(self.config_maps),
        }
        if self.gpus is not None:
            hard["requests.nvidia.com/gpu"] = str(self.gpus)
        return hard


class LimitRangeSpec(StrictModel):
    """Per-container defaults and bounds: a container that states nothing still gets requests and limits."""

    default_request_cpu: Quantity = "100m"
    default_request_memory: Quantity = "128Mi"
    default_limit_cpu: Quantity = "1"
    default_limit_memory: Quantity = "1Gi"
    max_cpu: Quantity | None = None
    max_memory: Quantity | None = None

    @model_validator(mode="after")
    def _ordered(self) -> LimitRangeSpec:
        pairs = [
            ("default_request_cpu", "default_limit_cpu"),
            ("default_request_memory", "default_limit_memory"),
            ("default_limit_cpu", "max_cpu"),
            ("default_limit_memory", "max_memory"),
        ]
        for low, high in pairs:
            low_v, high_v = getattr(self, low), getattr(self, high)
            if high_v is not None and parse_quantity(low_v) > parse_quantity(high_v):
                raise ValueError(f"{low}={low_v} is larger than {high}={high_v}; they must satisfy {low} <= {high}")
        return self


class PlatformNamespaceSpec(StrictModel):
    name: NamespaceName
    quota: QuotaSpec | None = None
    limits: LimitRangeSpec | None = None


# Quota of platform namespaces when the stack says nothing: sized for platform services, not for tenants.
PLATFORM_QUOTA = QuotaSpec(
    requests_cpu="32",
    requests_memory="128Gi",
    limits_cpu="64",
    limits_memory="256Gi",
    requests_storage="2Ti",
    pods=200,
    persistent_volume_claims=50,
    services=50,
)
# The inference namespace holds the GPU servers; its GPU count is bounded by the node pools, not the quota.
INFERENCE_QUOTA = PLATFORM_QUOTA.model_copy(
    update={"requests_cpu": "256", "requests_memory": "2Ti", "limits_cpu": "512", "limits_memory": "4Ti", "gpus": None}
)
PLATFORM_LIMITS = LimitRangeSpec(default_limit_cpu="2", default_limit_memory="2Gi")


def _ns(name: str) -> Any:
    return Field(default_factory=lambda: PlatformNamespaceSpec(name=name))


class PlatformNamespaces(StrictModel):
    """The namespaces of the platform's own services, one per concern."""

    inference: PlatformNamespaceSpec = _ns("llm-inference")
    gateway: PlatformNamespaceSpec = _ns("llm-gateway")
    registry: PlatformNamespaceSpec = _ns("llm-registry")
    pki: PlatformNamespaceSpec = _ns("llm-pki")
    monitoring: PlatformNamespaceSpec = _ns("llm-monitoring")
    logging: PlatformNamespaceSpec = _ns("llm-logging")
    operators: PlatformNamespaceSpec = _ns("llm-operators")

    def items(self) -> list[tuple[str, PlatformNamespaceSpec]]:
        return [(role, getattr(self, role)) for role in type(self).model_fields]

    def quota_for(self, role: str) -> QuotaSpec:
        spec: PlatformNamespaceSpec = getattr(self, role)
        if spec.quota is not None:
            return spec.quota
        return INFERENCE_QUOTA if role == "inference" else PLATFORM_QUOTA

    def limits_for(self, role: str) -> LimitRangeSpec:
        spec: PlatformNamespaceSpec = getattr(self, role)
        return spec.limits if spec.limits is not None else PLATFORM_LIMITS


class TenantGroups(StrictModel):
    """Directory (LDAP/OIDC) groups bound to each tenant role."""

    admin: list[GroupName] = Field(default_factory=list)
    member: list[GroupName] = Field(default_factory=list)
    guest: list[GroupName] = Field(default_factory=list)

    def for_role(self, role: str) -> list[str]:
        return list(getattr(self, role))


TENANT_ROLES = ("admin", "member", "guest")


class TenantLimitsSpec(StrictModel):
    requests_per_minute: Annotated[int, Field(ge=1)] = 600
    tokens_per_minute: Annotated[int, Field(ge=1)] = 200_000


class TenantSpec(StrictModel):
    name: Annotated[DnsLabel, Field(max_length=40)]
    namespace: NamespaceName | None = None
    groups: TenantGroups = Field(default_factory=TenantGroups)
    quota: QuotaSpec = Field(default_factory=QuotaSpec)
    limits: LimitRangeSpec = Field(default_factory=LimitRangeSpec)
    api: TenantLimitsSpec = Field(default_factory=TenantLimitsSpec)
    access: Literal["inference", "list-models"] = "inference"
    """`list-models`: a guest tenant whose key may only list the served models."""

    @property
    def namespace_name(self) -> str:
        return self.namespace or f"tenant-{self.name}"

    @model_validator(mode="after")
    def _has_owner(self) -> TenantSpec:
        if not self.groups.admin:
            raise ValueError(
                "groups.admin is empty: every tenant needs at least one directory group that owns it "
                "(for example groups: {admin: [llm-retail-admins]})"
            )
        return self


# --------------------------------------------------------------------------------------------------------------
# GPU node pools (the scheduling contract the inference components consume)
# --------------------------------------------------------------------------------------------------------------

POOL_LABEL = "privatellm.io/gpu-pool"


class TolerationSpec(StrictModel):
    key: str
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _node_name(value: str) -> str:
    if len(value) > 253 or not _NODE_NAME.match(value):
        raise ValueError("is not a Kubernetes node name (DNS subdomain: lower-case letters, digits, '-', '.')")
    return value


class TaintSpec(StrictModel):
    key: str
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class OnPremPoolSpec(StrictModel):
    """Existing nodes: listed by name (the platform labels and taints them) or found by labels they already carry."""

    node_names: list[Annotated[str, AfterValidator(_node_name)]] = Field(default_factory=list)
    node_labels: dict[str, str] | None = None
    keep_taints: list[TaintSpec] = Field(default_factory=list)
    """Taints the listed nodes already carry and must keep (node taints are one atomic list under server-side apply)."""

    @model_validator(mode="after")
    def _one_way(self) -> OnPremPoolSpec:
        if bool(self.node_names) == bool(self.node_labels):
            raise ValueError(
                "give node_names (nodes the platform labels and taints) or node_labels (labels your nodes already "
                "carry), exactly one"
            )
        if len(set(self.node_names)) != len(self.node_names):
            raise ValueError("node_names lists a node twice")
        return self


EksCapacityType = Literal["ON_DEMAND", "CAPACITY_BLOCK"]


class EksPoolSpec(StrictModel):
    """An EKS managed node group with the NVIDIA AL2023 AMI."""

    cluster_name: str
    region: str
    instance_types: Annotated[list[str], Field(min_length=1)]
    subnet_ids: Annotated[list[Annotated[str, Field(pattern=r"^subnet-[0-9a-f]{8,17}$")]], Field(min_length=1)]
    node_role_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$")]
    kms_key_arn: Annotated[str, Field(pattern=r"^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+$")]
    min_size: Annotated[int, Field(ge=0)] = 0
    max_size: Annotated[int, Field(ge=1)] | None = None
    capacity_type: EksCapacityType = "ON_DEMAND"
    capacity_reservation_id: Annotated[str, Field(pattern=r"^cr-[0-9a-f]{8,17}$")] | None = None
    ami_type: Literal["AL2023_x86_64_NVIDIA", "AL2023_ARM_64_NVIDIA"] = "AL2023_x86_64_NVIDIA"
    root_volume_gib: Annotated[int, Field(ge=100, le=16384)] = 500
    model_bucket: str | None = None

    @model_validator(mode="after")
    def _reservation(self) -> EksPoolSpec:
        if self.capacity_type == "CAPACITY_BLOCK" and not self.capacity_reservation_id:
            raise ValueError("capacity_type CAPACITY_BLOCK needs capacity_reservation_id (cr-...)")
        if self.capacity_type == "ON_DEMAND" and self.capacity_reservation_id:
            raise ValueError("capacity_reservation_id only applies to capacity_type CAPACITY_BLOCK")
        return self


class MigSpec(StrictModel):
    """Multi-Instance GPU: `single` splits every GPU of the pool into one profile (e.g. 1g.10gb)."""

    strategy: Literal["none", "single", "mixed"] = "none"
    profile: str | None = None

    @model_validator(mode="after")
    def _profile(self) -> MigSpec:
        if self.strategy == "single" and not self.profile:
            raise ValueError("strategy single needs profile (e.g. 1g.10gb)")
        if self.strategy == "none" and self.profile:
            raise ValueError("profile needs strategy single or mixed")
        return self


class TimeSlicingSpec(StrictModel):
    """Oversubscribe each GPU `replicas` times. Memory and faults are not isolated between the sharing pods."""

    replicas: Annotated[int, Field(ge=2, le=64)]


class GpuPoolSpec(StrictModel):
    """A pool of identical GPU nodes. Pods land on it through its node selector and tolerations."""

    name: Annotated[DnsLabel, Field(max_length=40)]
    gpu: str
    gpus_per_node: Annotated[int, Field(ge=1, le=16)]
    nodes: Annotated[int, Field(ge=1)]
    backend: Literal["onprem", "eks"] = "onprem"
    onprem: OnPremPoolSpec | None = None
    eks: EksPoolSpec | None = None
    gpu_memory_gib: Annotated[float, Field(gt=0)] | None = None
    node_selector: dict[str, str] | None = None
    tolerations: list[TolerationSpec] | None = None
    gpu_resource: str = "nvidia.com/gpu"
    mig: MigSpec = Field(default_factory=MigSpec)
    time_slicing: TimeSlicingSpec | None = None

    @model_validator(mode="after")
    def _backend(self) -> GpuPoolSpec:
        if self.backend == "eks" and self.eks is None:
            raise ValueError("backend eks needs an eks section (cluster_name, region, instance_types, ...)")
        if self.backend == "onprem" and self.eks is not None:
            raise ValueError("an eks section needs backend: eks")
        if self.backend == "eks" and self.onprem is not None:
            raise ValueError("an onprem section needs backend: onprem")
        if self.onprem and self.onprem.node_names and len(self.onprem.node_names) != self.nodes:
            raise ValueError(
                f"nodes={self.nodes} but onprem.node_names lists {len(self.onprem.node_names)} nodes; make them agree"
            )
        if self.eks:
            top = self.eks.max_size if self.eks.max_size is not None else self.nodes
            if not self.eks.min_size <= self.nodes <= top:
                raise ValueError(
                    f"nodes={self.nodes} must lie between eks.min_size={self.eks.min_size} and eks.max_size={top}"
                )
        if self.mig.strategy != "none" and self.time_slicing is not None:
            raise ValueError("use MIG or time-slicing on a pool, not both")
        return self

    @property
    def labels(self) -> dict[str, str]:
        """Labels the platform puts on the pool's nodes (on-prem node names, EKS node groups)."""
        return {POOL_LABEL: self.name}

    @property
    def selector(self) -> dict[str, str]:
        if self.node_selector is not None:
            return dict(self.node_selector)
        if self.onprem is not None and self.onprem.node_labels:
            return dict(self.onprem.node_labels)
        return {POOL_LABEL: self.name}

    @property
    def pool_tolerations(self) -> list[TolerationSpec]:
        if self.tolerations is not None:
            return list(self.tolerations)
        return [TolerationSpec(key=POOL_LABEL, operator="Equal", value=self.name, effect="NoSchedule")]

    @property
    def tainted(self) -> bool:
        """The platform taints the pool's nodes `privatellm.io/gpu-pool=<name>:NoSchedule` (the stack names neither
        tolerations nor a node selector of its own)."""
        return self.tolerations is None and self.node_selector is None

    @property
    def total_gpus(self) -> int:
        return self.gpus_per_node * self.nodes

    @property
    def partitioned(self) -> bool:
        return self.mig.strategy != "none" or self.time_slicing is not None


class GpuOperatorSpec(StrictModel):
    """NVIDIA GPU Operator: driver (or a pre-installed one), toolkit, device plugin, GFD, DCGM exporter."""

    enabled: bool = True
    namespace: NamespaceName = "gpu-operator"
    driver: Literal["operator", "preinstalled"] = "operator"
    driver_version: Annotated[str, Field(pattern=r"^[0-9]{3}\.[0-9]+(\.[0-9]+)?$")] | None = None
    """Driver the operator installs (`operator`), or the version pre-installed on the nodes (`preinstalled`)."""
    node_os: Annotated[str, Field(pattern=r"^[a-z][a-z-]*[0-9]+(\.[0-9]+)*$")] | None = None
    """The GPU nodes' OS as the operator names driver image tags (`<os-release ID><VERSION_ID>`, e.g. ubuntu22.04,
    ubuntu24.04, rhel9.6): with `driver: operator` the nodes pull `driver:<driver_version>-<node_os>`, which the
    image inventory and mirror need to know."""

    @property
    def driver_branch(self) -> int | None:
        return int(self.driver_version.split(".")[0]) if self.driver_version else None


# --------------------------------------------------------------------------------------------------------------
# Registry (every image is pulled through the customer's registry)
# --------------------------------------------------------------------------------------------------------------

_HOST = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?$")


def _registry_host(value: str) -> str:
    if not _HOST.match(value) or value in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        raise ValueError("must be your own registry's host name (and optional port), e.g. harbor.bank.internal")
    return value


Severity = Literal["critical", "high", "medium", "low", "none"]


def _cidr(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValueError("is not an IP network in CIDR notation, e.g. 10.20.0.0/24") from None
    return value


class HarborStorageSpec(StrictModel):
    """Where Harbor keeps image layers: PVCs retained on delete (default) or S3-compatible object storage."""

    type: Literal["pvc", "s3"] = "pvc"
    storage_class: str | None = None
    registry_size: Quantity = "500Gi"
    bucket: str | None = None
    region: str = "us-east-1"
    endpoint: str | None = None
    access_key_id_secret: SecretRef | None = None
    secret_access_key_secret: SecretRef | None = None

    @model_validator(mode="after")
    def _s3(self) -> HarborStorageSpec:
        if self.type == "s3":
            missing = [
                f for f in ("bucket", "access_key_id_secret", "secret_access_key_secret") if not getattr(self, f)
            ]
            if missing:
                raise ValueError(f"type: s3 needs {', '.join(missing)}")
            if self.endpoint and not self.endpoint.startswith("https://"):
                raise ValueError(f"endpoint={self.endpoint!r} must be an https:// URL")
        return self


class ExternalDatabaseSpec(StrictModel):
    host: str
    port: Annotated[int, Field(ge=1, le=65535)] = 5432
    username: str = "harbor"
    database: str = "registry"
    password_secret: SecretRef
    sslmode: Literal["require", "verify-ca", "verify-full"] = "verify-full"


class ExternalRedisSpec(StrictModel):
    addr: str
    password_secret: SecretRef | None = None
    sentinel_master_set: str | None = None


class ProxyCacheSpec(StrictModel):
    """A Harbor proxy-cache project for an upstream registry (only on sites connected to it)."""

    name: DnsLabel
    endpoint: Annotated[str, Field(pattern=r"^https://")]
    provider: Literal["docker-hub", "docker-registry", "github-ghcr", "quay", "harbor"] = "docker-registry"


class ReplicationSpec(StrictModel):
    """Push-replication of every project to a disaster-recovery Harbor."""

    endpoint: Annotated[str, Field(pattern=r"^https://")]
    username: str
    password_secret: SecretRef
    schedule: str = "0 0 * * * *"


class HarborAuthSpec(StrictModel):
    mode: Literal["ldap", "oidc"]
    ldap_url: Annotated[str, Field(pattern=r"^ldaps://")] | None = None
    ldap_base_dn: str | None = None
    ldap_search_dn: str | None = None
    ldap_search_password_secret: SecretRef | None = None
    ldap_uid: str = "uid"
    ldap_group_base_dn: str | None = None
    ldap_group_admin_dn: str | None = None
    oidc_endpoint: Annotated[str, Field(pattern=r"^https://")] | None = None
    oidc_client_id: str | None = None
    oidc_client_secret_secret: SecretRef | None = None
    oidc_groups_claim: str = "groups"
    oidc_admin_group: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> HarborAuthSpec:
        needed = (
            ("ldap_url", "ldap_base_dn", "ldap_search_dn", "ldap_search_password_secret")
            if self.mode == "ldap"
            else ("oidc_endpoint", "oidc_client_id", "oidc_client_secret_secret")
        )
        missing = [f for f in needed if not getattr(self, f)]
        if missing:
            raise ValueError(f"mode {self.mode} needs {', '.join(missing)}")
        return self


_OCI_LOCATION = re.compile(r"^oci://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]{1,5})?(/[a-z0-9]([-a-z0-9._]*[a-z0-9])?)*$")


def _oci_location(value: str) -> str:
    if not _OCI_LOCATION.match(value):
        raise ValueError(
            "must be an OCI location holding charts, oci://<registry host>[:port][/<path>], "
            "e.g. oci://bootstrap-registry.example.internal/charts"
        )
    return value


class HarborExposeSpec(StrictModel):
    """How Harbor is reached from outside the cluster: the deploy host (Harbor provider) and every node's container
    runtime connect to https://<registry.host>, which must lead to this Service.

    LoadBalancer (default): the cluster's load balancer gives Harbor an address; point registry.host's DNS record at
    it. NodePort: registry.host must carry the node port (`harbor.example.internal:30443`, 30000-32767) and resolve to
    the nodes. ClusterIP: only where the site fronts Harbor with its own load balancer or ingress (nothing in the
    cluster is reachable from outside then)."""

    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    source_ranges: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)
    """LoadBalancer only: the client networks allowed (the nodes and the deploy host); empty allows any."""
    annotations: dict[str, str] = Field(default_factory=dict)
    """Annotations of the Service, e.g. the cloud's internal-load-balancer annotation."""

    @model_validator(mode="after")
    def _ranges(self) -> HarborExposeSpec:
        if self.source_ranges and self.service_type != "LoadBalancer":
            raise ValueError(f"source_ranges applies to service_type LoadBalancer only, not {self.service_type}")
        return self


class HarborSpec(StrictModel):
    """Harbor deployed and configured by the platform, reachable at https://<registry.host>."""

    bootstrap_registry: Annotated[str, AfterValidator(_registry_host)]
    """Where Harbor's own images are pulled from before Harbor exists (a bootstrap registry or pre-loaded mirror)."""
    tls_secret_name: DnsLabel | None = None
    storage: HarborStorageSpec = Field(default_factory=HarborStorageSpec)
    database: ExternalDatabaseSpec | None = None
    redis: ExternalRedisSpec | None = None
    vulnerability_severity: Severity | None = None
    retention_keep_most_recent: Annotated[int, Field(ge=1)] = 10
    retention_schedule: str = "Daily"
    proxy_caches: list[ProxyCacheSpec] = Field(default_factory=list)
    replication: ReplicationSpec | None = None
    auth: HarborAuthSpec | None = None
    egress_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)
    """Where Harbor may connect on 443 and its database ports (object storage, database, LDAP, DR Harbor, upstreams)."""
    expose: HarborExposeSpec = Field(default_factory=HarborExposeSpec)
    """Harbor's entry point from outside the cluster (default: a LoadBalancer Service)."""
    bootstrap_charts: Annotated[str, AfterValidator(_oci_location)] | None = None
    """Where the charts needed before Harbor answers (cert-manager, trust-manager and Harbor's own) are pulled from:
    an OCI location such as oci://bootstrap-registry.example.internal/charts. Default on an air-gapped site:
    oci://<bootstrap_registry>/<registry.charts_project>; on a connected site: the charts' upstream repositories."""


class RegistrySpec(StrictModel):
    host: Annotated[str, AfterValidator(_registry_host)]
    platform_project: DnsLabel = "platform"
    models_project: DnsLabel = "models"
    charts_project: DnsLabel = "charts"
    air_gapped: bool = False
    """Nothing is pulled from the internet: charts come from oci://<host>/<charts_project> and no proxy cache."""
    harbor: HarborSpec | None = None
    immutable_projects: list[DnsLabel] = Field(default_factory=list)
    """For a registry the platform does not manage: projects whose tags cannot be overwritten."""
    pull_secret_name: DnsLabel | None = None
    """For a registry the platform does not manage: the dockerconfigjson Secret (same name in every namespace)."""

    @model_validator(mode="after")
    def _air_gap(self) -> RegistrySpec:
        if self.air_gapped and self.harbor and self.harbor.proxy_caches:
            raise ValueError("air_gapped: true forbids harbor.proxy_caches (an air-gapped site reaches no upstream)")
        return self

    @model_validator(mode="after")
    def _harbor_node_port(self) -> RegistrySpec:
        if self.harbor is None or self.harbor.expose.service_type != "NodePort":
            return self
        _, _, port = self.host.partition(":")
        if not port or not 30000 <= int(port) <= 32767:
            raise ValueError(
                f"harbor.expose.service_type NodePort needs the node port in host (host={self.host!r}): nodes and the "
                "deploy host reach Harbor at https://<host>, e.g. host: harbor.example.internal:30443 (30000-32767)"
            )
        return self

    @property
    def hostname(self) -> str:
        """registry.host without its port: the name Harbor's certificate is issued for."""
        return self.host.partition(":")[0]

    @property
    def harbor_node_port(self) -> int | None:
        """The node port of Harbor's HTTPS entry (NodePort exposure), from registry.host."""
        if self.harbor is None or self.harbor.expose.service_type != "NodePort":
            return None
        return int(self.host.rpartition(":")[2])

    def bootstrap(self) -> RegistrySpec | None:
        """With a managed Harbor, the registry what runs before Harbor exists is pulled from (the bootstrap
        registry, same platform project); None when the platform does not manage the registry."""
        if self.harbor is None:
            return None
        return RegistrySpec(host=self.harbor.bootstrap_registry, platform_project=self.platform_project)


# --------------------------------------------------------------------------------------------------------------
# Models (vLLM deployments)
# --------------------------------------------------------------------------------------------------------------

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
    egress_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)
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
        match = _DURATION.match(value.strip())
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


# --------------------------------------------------------------------------------------------------------------
# PKI and gateway
# --------------------------------------------------------------------------------------------------------------


def _pem_certificate(value: str) -> str:
    if "-----BEGIN CERTIFICATE-----" not in value:
        raise ValueError("must be a PEM certificate (-----BEGIN CERTIFICATE-----)")
    return value


def _pem_ca(value: str) -> str:
    """A PEM CA certificate (the first of a chain) that can sign and is valid now: checked offline, at preview."""
    import datetime

    from cryptography import x509

    _pem_certificate(value)
    try:
        certificate = x509.load_pem_x509_certificates(value.encode())[0]
    except ValueError as exc:
        raise ValueError(f"is not a readable PEM certificate ({exc})") from None
    subject = certificate.subject.rfc4514_string()
    try:
        is_ca = bool(certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(
            f"is not a CA certificate ({subject} has no basicConstraints CA:TRUE); give the CA, not a leaf"
        )
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.key_cert_sign:
            raise ValueError(f"cannot sign certificates ({subject} lacks the keyCertSign key usage)")
    except x509.ExtensionNotFound:
        pass
    now = datetime.datetime.now(datetime.UTC)
    if certificate.not_valid_after_utc <= now:
        raise ValueError(f"has expired ({subject} was valid until {certificate.not_valid_after_utc:%Y-%m-%d})")
    if certificate.not_valid_before_utc > now:
        raise ValueError(f"is not valid yet ({subject} starts {certificate.not_valid_before_utc:%Y-%m-%d})")
    return value


class EnterpriseCaSpec(StrictModel):
    """An intermediate CA of the customer's PKI: its certificate in the stack (public), its key in secure config or
    in an existing Secret the PKI team created."""

    certificate_pem: Annotated[str, AfterValidator(_pem_ca)]
    key_secret: SecretRef | None = None
    existing_secret_name: DnsLabel | None = None

    @model_validator(mode="after")
    def _one_key(self) -> EnterpriseCaSpec:
        if bool(self.key_secret) == bool(self.existing_secret_name):
            raise ValueError(
                "give key_secret (a secure config key holding the CA's PEM key) or existing_secret_name (a "
                "kubernetes.io/tls Secret in the cert-manager namespace), exactly one"
            )
        return self


class VaultIssuerSpec(StrictModel):
    server: Annotated[str, Field(pattern=r"^https://")]
    path: str
    role: str
    auth_mount_path: str = "/v1/auth/kubernetes"
    server_cidr: Annotated[str, AfterValidator(_cidr)] | None = None
    """Where Vault answers (egress from the PKI namespace is denied otherwise)."""
    ca_pem: Annotated[str, AfterValidator(_pem_ca)]
    """The CA that signs what Vault issues (distributed to every namespace) — and Vault's own server certificate."""


class PkiSpec(StrictModel):
    """Root of trust; cert-manager and trust-manager run in the platform's `pki` namespace."""

    mode: Literal["self-signed", "enterprise", "vault"] = "self-signed"
    enterprise: EnterpriseCaSpec | None = None
    vault: VaultIssuerSpec | None = None
    certificate_days: Annotated[int, Field(ge=1)] | None = None
    """Leaf certificate lifetime; default the profile's maximum. Renewal starts when a third is left."""
    key_algorithm: Literal["ECDSA", "RSA"] = "ECDSA"

    @model_validator(mode="after")
    def _mode(self) -> PkiSpec:
        if self.mode == "enterprise" and self.enterprise is None:
            raise ValueError("mode enterprise needs an enterprise section (certificate_pem and key_secret)")
        if self.mode == "vault" and self.vault is None:
            raise ValueError("mode vault needs a vault section (server, path, role, ca_pem)")
        if self.mode != "enterprise" and self.enterprise is not None:
            raise ValueError("an enterprise section needs mode: enterprise")
        if self.mode != "vault" and self.vault is not None:
            raise ValueError("a vault section needs mode: vault")
        return self


class GatewaySpec(StrictModel):
    """The one OpenAI-compatible HTTPS entry (Envoy Gateway with Envoy AI Gateway)."""

    hostname: Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")]
    service_type: Literal["LoadBalancer", "NodePort", "ClusterIP"] = "LoadBalancer"
    source_ranges: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)
    max_request_body: Quantity = "1Mi"
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    """Most tokens one request may generate, enforced by every model server behind the gateway (vLLM
    `--override-generation-config {"max_new_tokens": N}`: a larger `max_tokens` in a request is lowered to N)."""
    key_rotation_days: Annotated[int, Field(ge=2)] = 30
    key_epoch: AwareDatetime = datetime(2026, 1, 1, tzinfo=UTC)
    """Rotation windows are counted from here (every key_rotation_days / 2 a new key); move it to rotate every key at
    the next `pulumi up` (e.g. after a suspected leak)."""
    """Lifetime of each tenant API key. A new key is issued every half period; the previous one keeps working for
    the other half (the overlap window)."""
    redis_url: Annotated[str, Field(pattern=r"^[a-z0-9.-]+:[0-9]+$")] | None = None
    """Redis (host:port) holding the global per-tenant request and token counters; without it limits are per proxy."""
    redis_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _redis(self) -> GatewaySpec:
        if self.redis_url and not self.redis_cidrs:
            raise ValueError("redis_url needs redis_cidrs: egress is denied except to the declared Redis")
        return self


# --------------------------------------------------------------------------------------------------------------
# Observability and logging
# --------------------------------------------------------------------------------------------------------------


AlertSeverity = Literal["critical", "warning", "info"]
DEFAULT_ALERT_SEVERITIES: tuple[AlertSeverity, ...] = ("critical", "warning")


class AlertReceiverSpec(StrictModel):
    name: DnsLabel
    type: Literal["webhook", "email"]
    url: Annotated[str, Field(pattern=r"^https://")] | None = None
    to: list[Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]] = Field(default_factory=list)
    smarthost: Annotated[str, Field(pattern=r"^[a-z0-9.-]+:[0-9]+$")] | None = None
    sender: str | None = None
    severities: list[AlertSeverity] = Field(default_factory=lambda: list(DEFAULT_ALERT_SEVERITIES))

    @model_validator(mode="after")
    def _complete(self) -> AlertReceiverSpec:
        if self.type == "webhook" and not self.url:
            raise ValueError(f"receiver {self.name!r} of type webhook needs url (https://...)")
        if self.type == "email" and not (self.to and self.smarthost and self.sender):
            raise ValueError(f"receiver {self.name!r} of type email needs to, smarthost and sender")
        return self


class ObservabilitySpec(StrictModel):
    """kube-prometheus-stack: Prometheus, Alertmanager, Grafana (dashboards and alerts built by the platform)."""

    enabled: bool = True
    metrics_retention_days: Annotated[int, Field(ge=1)] | None = None
    storage_size: Quantity = "200Gi"
    storage_class: str | None = None
    receivers: list[AlertReceiverSpec] = Field(default_factory=list)
    egress_cidrs: list[Annotated[str, AfterValidator(_cidr)]] = Field(default_factory=list)
    """Where Alertmanager reaches its receivers (webhook endpoints, mail relays)."""


def _quorum_nodes(value: int) -> int:
    if value == 2:
        raise ValueError(
            "cannot keep a quorum of master-eligible nodes (with 2, losing either stops the cluster); "
            "use 1 or at least 3"
        )
    return value


class LoggingSpec(StrictModel):
    """ECK (Elasticsearch, Kibana) and Fluent Bit, with PII redacted on the node."""

    enabled: bool = True
    elasticsearch_nodes: Annotated[int, Field(ge=1), AfterValidator(_quorum_nodes)] | None = None
    """Master-eligible Elasticsearch nodes: 1, or 3 and more (default per profile: 1 baseline, 3 otherwise)."""
    storage_size: Quantity = "500Gi"
    storage_class: str | None = None
    audit_retention_days: Annotated[int, Field(ge=1)] | None = None
    app_retention_days: Annotated[int, Field(ge=1)] | None = None
    redaction_patterns: list[str] = Field(default_factory=list)
    """Extra patterns masked before logs leave the node (Python regular expressions, simple subset)."""

    @model_validator(mode="after")
    def _patterns(self) -> LoggingSpec:
        validate_extra_patterns(list(self.redaction_patterns))  # compiled now, at preview: one clear error
        return self


# Fluent Bit's namespace: it reads node log files (hostPath), the platform's second documented exception.
LOG_SHIPPER_NAMESPACE = "llm-log-shipper"


def _reason(value: str) -> str:
    if len(value.strip()) < 10:
        raise ValueError("an exception needs its reason: a sentence an auditor can check (10 characters or more)")
    return value.strip()


Reason = Annotated[str, AfterValidator(_reason)]


class PolicySpec(StrictModel):
    """How the policy pack judges this stack, beyond its profile: documented exceptions and overrides. Both reach
    `pulumi preview --policy-pack policies` (through `private-llm policy-config`) and the offline check, and both
    are listed in the evidence report."""

    exceptions: dict[NamespaceName, Reason] = Field(default_factory=dict)
    """Namespaces the pack's resource rules skip, each with its reason. The GPU Operator and log shipper namespaces
    get built-in reasons when not listed here."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """`--policy-pack-config` entries merged over the profile's: {policy id or "all": level or {key: value}}."""

    @model_validator(mode="after")
    def _valid_overrides(self) -> PolicySpec:
        problems = validate_pack_config(self.overrides)
        if problems:
            raise ValueError("overrides: " + "; ".join(problems))
        return self


class PlatformSpec(StrictModel):
    """The whole platform one stack file describes."""

    name: DnsLabel = "private-llm"
    profile: Profile = "baseline"
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    namespaces: PlatformNamespaces = Field(default_factory=PlatformNamespaces)
    tenants: list[TenantSpec] = Field(default_factory=list)
    registry: RegistrySpec | None = None
    node_pools: list[GpuPoolSpec] = Field(default_factory=list)
    gpu_operator: GpuOperatorSpec = Field(default_factory=GpuOperatorSpec)
    models: list[ModelDeploymentSpec] = Field(default_factory=list)
    inference: InferenceSpec = Field(default_factory=InferenceSpec)
    pki: PkiSpec = Field(default_factory=PkiSpec)
    gateway: GatewaySpec | None = None
    observability: ObservabilitySpec = Field(default_factory=ObservabilitySpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    policy: PolicySpec = Field(default_factory=PolicySpec)

    def policy_level(self, policy: str) -> str:
        """The enforcement level the pack gives `policy` for this stack: the profile's, then policy.overrides."""
        level = PROFILE_LEVELS.get(self.profile, {}).get(policy)
        base = {policy: {"enforcementLevel": level.value if level is not None else "mandatory"}}
        return str(merge_pack_config(base, self.policy.overrides)[policy]["enforcementLevel"])

    @model_validator(mode="after")
    def _trust_remote_code_is_a_decision(self) -> PlatformSpec:
        trusting = [i for i, m in enumerate(self.models) if m.trust_remote_code]
        if trusting and self.policy_level("vllm-no-trust-remote-code") in ("mandatory", "remediate"):
            fields = ", ".join(f"models[{i}].trust_remote_code" for i in trusting)
            raise ValueError(
                f"{fields}=true runs Python shipped with the model, which the mandatory policy "
                "vllm-no-trust-remote-code refuses; use a model vLLM implements natively, or accept the risk for this "
                "stack with policy.overrides.vllm-no-trust-remote-code: advisory (the evidence report shows it)"
            )
        return self

    @model_validator(mode="after")
    def _priority_classes_exist(self) -> PlatformSpec:
        known = {*self.inference.priority_classes, *self.inference.existing_priority_classes}
        known |= {"system-cluster-critical", "system-node-critical"}
        for i, m in enumerate(self.models):
            if m.priority_class is not None and m.priority_class not in known:
                raise ValueError(
                    f"models[{i}].priority_class={m.priority_class!r} names no PriorityClass the pods could use "
                    "(the API server would refuse them): declare it in inference.priority_classes (the platform "
                    "creates it, e.g. {value: 100000}) or list it in inference.existing_priority_classes"
                )
        return self

    @model_validator(mode="after")
    def _autoscaling_needs_prometheus(self) -> PlatformSpec:
        scaled = [f"models[{i}].autoscaling" for i, m in enumerate(self.models) if m.autoscaling.enabled]
        if scaled and not self.observability.enabled:
            raise ValueError(
                f"{', '.join(scaled)}.enabled=true scales on vllm:num_requests_waiting read from the platform's "
                "Prometheus, but observability.enabled is false; enable observability or turn autoscaling off"
            )
        return self

    @model_validator(mode="after")
    def _exceptions_name_our_namespaces(self) -> PlatformSpec:
        ours = {ns.name for _, ns in self.namespaces.items()} | {t.namespace_name for t in self.tenants}
        ours |= {self.gpu_operator.namespace, LOG_SHIPPER_NAMESPACE}
        unknown = sorted(set(self.policy.exceptions) - ours)
        if unknown:
            raise ValueError(
                f"policy.exceptions names {', '.join(unknown)}, which this stack does not create; an exception "
                "applies only to the stack's own namespaces (remove it, or fix the name)"
            )
        return self

    @model_validator(mode="after")
    def _profile_rules(self) -> PlatformSpec:
        if self.profile == "government" and self.registry is not None and not self.registry.air_gapped:
            raise ValueError(
                "registry.air_gapped must be true in the government profile: everything comes from the site's own "
                "registry"
            )
        if self.gateway is not None:
            limit = PROFILE_SETTINGS[self.profile].max_key_rotation_days
            if self.gateway.key_rotation_days > limit:
                raise ValueError(
                    f"gateway.key_rotation_days={self.gateway.key_rotation_days} is above the {self.profile} "
                    f"profile's maximum of {limit} days; rotate at least every {limit} days"
                )
        settings = PROFILE_SETTINGS[self.profile]
        for field, value, minimum in (
            ("logging.audit_retention_days", self.logging.audit_retention_days, settings.min_audit_retention_days),
            ("logging.app_retention_days", self.logging.app_retention_days, settings.min_app_retention_days),
        ):
            if value is not None and value < minimum:
                raise ValueError(f"{field}={value} is below the {self.profile} profile's minimum of {minimum} days")
        if (
            self.pki.certificate_days is not None
            and self.pki.certificate_days > PROFILE_SETTINGS[self.profile].max_certificate_days
        ):
            raise ValueError(
                f"pki.certificate_days={self.pki.certificate_days} is above the {self.profile} profile's maximum "
                f"certificate lifetime of {PROFILE_SETTINGS[self.profile].max_certificate_days} days"
            )
        if self.registry is not None and self.registry.harbor is not None and self.registry.pull_secret_name:
            raise ValueError(
                "registry.pull_secret_name only applies to registries the platform does not manage; Harbor's robot "
                "accounts provide the pull secrets"
            )
        return self

    @property
    def audit_retention_days(self) -> int:
        return self.logging.audit_retention_days or PROFILE_SETTINGS[self.profile].min_audit_retention_days

    @property
    def app_retention_days(self) -> int:
        return self.logging.app_retention_days or PROFILE_SETTINGS[self.profile].min_app_retention_days

    @property
    def metrics_retention_days(self) -> int:
        return self.observability.metrics_retention_days or PROFILE_SETTINGS[self.profile].metrics_retention_days

    @property
    def certificate_days(self) -> int:
        return self.pki.certificate_days or PROFILE_SETTINGS[self.profile].max_certificate_days

    def pool(self, name: str) -> GpuPoolSpec:
        return next(p for p in self.node_pools if p.name == name)

    @model_validator(mode="after")
    def _unique_names(self) -> PlatformSpec:
        problems: list[str] = []
        seen_tenants: dict[str, int] = {}
        for i, tenant in enumerate(self.tenants):
            if tenant.name in seen_tenants:
                problems.append(
                    f"tenants[{i}].name={tenant.name!r} repeats tenants[{seen_tenants[tenant.name]}].name; "
                    "tenant names must be unique"
                )
            seen_tenants.setdefault(tenant.name, i)
        owners: dict[str, str] = {}
        for role, ns in self.namespaces.items():
            if ns.name in owners:
                problems.append(
                    f"namespaces.{role}.name={ns.name!r} is already used by namespaces.{owners[ns.name]}; "
                    "every platform namespace needs its own name"
                )
            owners.setdefault(ns.name, f"{role}")
        for i, tenant in enumerate(self.tenants):
            ns_name = tenant.namespace_name
            if ns_name in owners:
                problems.append(
                    f"tenants[{i}].namespace={ns_name!r} is already used by {owners[ns_name]}; "
                    "give the tenant a namespace of its own"
                )
            owners.setdefault(ns_name, f"tenants[{i}]")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def secret_refs(self) -> list[tuple[str, str]]:
        """(field path, config key) of every `*_secret` field that is set."""
        refs: list[tuple[str, str]] = []

        def walk(node: Any, path: str) -> None:
            if isinstance(node, BaseModel):
                for field in type(node).model_fields:
                    value = getattr(node, field)
                    sub = f"{path}.{field}" if path else field
                    if field.endswith("_secret") and isinstance(value, str):
                        refs.append((sub, value))
                    else:
                        walk(value, sub)
            elif isinstance(node, list):
                for i, item in enumerate(node):
                    walk(item, f"{path}[{i}]")

        walk(self, "")
        return refs


# --------------------------------------------------------------------------------------------------------------
# Parsing and error reporting
# --------------------------------------------------------------------------------------------------------------


def _format_loc(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that owns the last element of `loc` (to list allowed keys for an unknown one)."""
    model: Any = PlatformSpec
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) if isinstance(model, type) and issubclass(model, BaseModel) else None
        if field is None:
            return None
        model = _unwrap_model(field.annotation)
        if model is None:
            return None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _unwrap_model(arg)
        if found is not None:
            return found
    return None


def _short(value: Any) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _problems_from(error: ValidationError, prefix: str) -> list[str]:
    problems: list[str] = []
    for err in error.errors():
        loc = tuple(err["loc"])
        path = _format_loc(loc)
        where = f"{prefix}.{path}" if path else prefix
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(loc[-1])
            model = _model_at(loc)
            allowed = sorted(model.model_fields) if model else []
            hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            msg = f"{where}: unknown key {key!r}"
            if hint:
                msg += f"; did you mean {hint[0]!r}?"
            if allowed:
                msg += f" (allowed keys: {', '.join(allowed)})"
            problems.append(msg)
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            problems.append(f"{where}={_short(err.get('input'))} is not allowed; use one of {expected}")
        elif kind == "missing":
            problems.append(f"{where}: required key is missing")
        elif kind in ("value_error", "assertion_error"):
            message = str(err["msg"]).removeprefix("Value error, ")
            if "input" in err and not isinstance(err["input"], dict | list):
                problems.append(f"{where}={_short(err['input'])} {message}")
            else:
                problems.append(f"{where}: {message}")
        else:
            problems.append(f"{where}={_short(err.get('input'))}: {err['msg']}")
    return problems


def _plaintext_credentials(raw: Any, path: str) -> list[tuple[str, str]]:
    """(path, message) for credential-looking keys or values held in plain text anywhere in the platform object."""
    found: list[tuple[str, str]] = []
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            sub = f"{path}.{key}"
            if isinstance(value, Mapping) and "secure" in value and len(value) == 1:
                found.append(
                    (
                        sub,
                        f"{sub}: encrypted values inside {FULL_PLATFORM_KEY} are not supported; "
                        f"store it as its own key with `pulumi config set --secret {CONFIG_NAMESPACE}:<name>` "
                        "and reference it with "
                        f"'{key.removesuffix('_secret')}_secret: <name>'",
                    )
                )
                continue
            if (
                isinstance(value, str | int)
                and not str(key).endswith(("_secret", "_path", "_ref"))
                and _is_credential_key(str(key))
            ):
                found.append(
                    (
                        sub,
                        f"{sub} holds a credential in plain text; store it with "
                        f"`pulumi config set --secret {CONFIG_NAMESPACE}:<name>` and reference it as "
                        "'<field>_secret: <name>'",
                    )
                )
                continue
            found.extend(_plaintext_credentials(value, sub))
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            found.extend(_plaintext_credentials(item, f"{path}[{i}]"))
    elif isinstance(raw, str) and _CREDENTIAL_VALUE.search(raw):
        found.append(
            (
                path,
                f"{path} contains key material or a token in plain text; move it to a secure config key "
                f"(`pulumi config set --secret`)",
            )
        )
    return found


def parse_platform(raw: Any, stack: str | None = None) -> PlatformSpec:
    """Validate the raw `privatellm:platform` object. Raises one StackConfigError listing every problem."""
    if raw is None:
        raise StackConfigError(
            [f"{FULL_PLATFORM_KEY} is not set; add it to stacks/Pulumi.<stack>.yaml under `config:`"], stack
        )
    if not isinstance(raw, Mapping):
        raise StackConfigError([f"{FULL_PLATFORM_KEY} must be a mapping of settings, got {type(raw).__name__}"], stack)
    credentials = _plaintext_credentials(raw, FULL_PLATFORM_KEY)
    problems = [msg for _, msg in credentials]
    try:
        spec = PlatformSpec.model_validate(dict(raw))
    except ValidationError as exc:
        for p in _problems_from(exc, FULL_PLATFORM_KEY):
            # A credential key reported above may also be an unknown key: keep the clearer message only.
            if not any(p.startswith(path + ":") or p.startswith(path + "=") for path, _ in credentials):
                problems.append(p)
        raise StackConfigError(problems, stack) from None
    if problems:
        raise StackConfigError(problems, stack)
    return spec


def check_secret_refs(
    spec: PlatformSpec,
    is_set: Callable[[str], bool],
    is_secret: Callable[[str], bool],
) -> list[str]:
    """Every `*_secret` field must name a config key that is set and encrypted."""
    problems: list[str] = []
    for path, ref in spec.secret_refs():
        key = qualified_key(ref)
        if not is_set(key):
            problems.append(
                f"{FULL_PLATFORM_KEY}.{path}={ref!r} names config key {key!r}, which is not set; "
                f"set it with `pulumi config set --secret {key} ...`"
            )
        elif not is_secret(key):
            problems.append(
                f"{FULL_PLATFORM_KEY}.{path}={ref!r} names config key {key!r}, which is stored in plain text; "
                f"re-set it with `pulumi config set --secret {key} ...`"
            )
    return problems


def qualified_key(ref: str) -> str:
    """The full config key a `*_secret` field names: `<namespace>:<key>`, the project's namespace by default."""
    return ref if ":" in ref else f"{CONFIG_NAMESPACE}:{ref}"


def config_secret(ref: str) -> pulumi.Output[str]:
    """The secret value of the config key a `*_secret` field names (`pulumi config set --secret`), as a secret
    output: it never appears in plain text in state or in the rendered inputs."""
    namespace, _, name = qualified_key(ref).partition(":")
    return pulumi.Config(namespace).require_secret(name)


def quantity(value: str) -> Decimal:
    return Decimal(parse_quantity(value))


def load_spec() -> PlatformSpec:
    """Read and validate the current stack's platform config (inside a Pulumi program or under mocks)."""
    from pulumi.runtime import config as runtime_config

    stack = pulumi.get_stack()
    raw_text = runtime_config.get_config(FULL_PLATFORM_KEY)
    if raw_text is None:
        raise StackConfigError(
            [f"{FULL_PLATFORM_KEY} is not set; add it to stacks/Pulumi.{stack}.yaml under `config:`"], stack
        )
    try:
        raw = json.loads(raw_text) if isinstance(raw_text, str) else raw_text
    except json.JSONDecodeError as exc:
        raise StackConfigError([f"{FULL_PLATFORM_KEY} is not a structured value: {exc}"], stack) from None
    spec = parse_platform(raw, stack)
    problems = check_secret_refs(
        spec,
        is_set=lambda key: runtime_config.get_config(key) is not None,
        is_secret=runtime_config.is_config_secret,
    )
    if problems:
        raise StackConfigError(problems, stack)
    return spec
