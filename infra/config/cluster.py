"""`cluster`, `namespaces` and `tenants`: the cluster the platform targets, its namespaces and their quotas, tenants."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from kubernetes.utils.quantity import parse_quantity
from pydantic import (
    Field,
    model_validator,
)

from infra.config.types import (
    DEFAULT_KUBERNETES_VERSION,
    Cidr,
    DnsLabel,
    GroupName,
    KubernetesVersion,
    NamespaceName,
    NonNegativeInt,
    Quantity,
    SecretRef,
    StrictModel,
)


class DnsSpec(StrictModel):
    """Where cluster DNS runs: every namespace's default-deny egress policy allows exactly this."""

    namespace: DnsLabel = "kube-system"
    pod_labels: dict[str, str] = Field(default_factory=lambda: {"k8s-app": "kube-dns"}, min_length=1)


class ClusterSpec(StrictModel):
    """The target cluster. Credentials come from a kubeconfig path on the deploy host or a secure config key."""

    # Where the API server is reachable from pods (controllers and webhooks); narrow it to the control plane.
    api_server_cidrs: list[Cidr] = Field(default_factory=lambda: ["0.0.0.0/0"], min_length=1)
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
