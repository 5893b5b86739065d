"""Composes the platform's components in dependency order from a validated `PlatformSpec`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from components.gateway import GatewayModel, GatewayTenant, LlmGateway, LlmGatewayArgs
from components.gpu_pools import EksNodeGroup, GpuNodePool, GpuNodePoolArgs, Taint
from components.guardrails import AdmissionGuardrails
from components.labels import standard_labels
from components.logging import READER_SECRET, WRITER_SECRET, LoggingArgs, LoggingStack
from components.namespaces import (
    SecureNamespace,
    SecureNamespaceArgs,
    TenantRoles,
    TenantRolesArgs,
)
from components.observability import GRAFANA_ADMIN_SECRET, MonitoringArgs, MonitoringStack
from components.pki import ChartSpec, Pki, PkiArgs, VaultIssuer, service_dns_names
from components.registry import PULL_SECRET, HarborArgs, HarborProject, HarborRegistry, HarborReplication, secret_names
from components.vllm import ServingTls, VllmService
from infra.catalog import (
    AI_GATEWAY_NAMESPACE,
    CHARTS,
    DEFAULT_DRIVER_VERSION,
    ENVOY_GATEWAY_NAMESPACE,
    HARBOR_SERVICE_PORTS,
    IMAGES,
    AuditLogSource,
    ChartRef,
    GpuPoolSettings,
    Image,
    ai_gateway_values,
    cert_manager_values,
    chart_source,
    eck_operator_values,
    envoy_gateway_values,
    fluent_bit_values,
    gpu_operator_values,
    harbor_claims,
    harbor_values,
    image_scanner_skips,
    immutable_repositories,
    keda_values,
    kube_prometheus_stack_values,
    lws_values,
    pre_harbor_chart_source,
    trust_manager_values,
)
from infra.config import (
    LOG_SHIPPER_NAMESPACE,
    PLATFORM_LIMITS,
    PLATFORM_QUOTA,
    POOL_LABEL,
    PROFILE_CIPHERS,
    PROFILE_ES_NODES,
    PROFILE_SEVERITY,
    TENANT_ROLES,
    GpuPoolSpec,
    LimitRangeSpec,
    PlatformSpec,
    QuotaSpec,
    RegistrySpec,
    StackConfigError,
    project_dir,
    qualified_key,
)
from infra.guardrails import guardrails_args
from infra.images import LockError, apply_lock, load_lock, lock_path
from infra.inference import PlacedModel, charts_needed, plan_models, vllm_service_args
from infra.observability.ilm import AUDIT_PREFIX, lifecycle_documents
from policies.pack import merge_pack_config, policy_config, profile_pack_config

T = TypeVar("T")


class ComponentBuildError(Exception):
    """A component failed while the platform was being built; names the component and its type."""

    def __init__(self, component: str, type_token: str, cause: BaseException) -> None:
        self.component = component
        self.type_token = type_token
        self.cause = cause
        super().__init__(f"component {component!r} ({type_token}) failed: {type(cause).__name__}: {cause}")


@contextmanager
def building(component: str, type_token: str) -> Iterator[None]:
    try:
        yield
    except ComponentBuildError:
        raise
    except Exception as exc:
        raise ComponentBuildError(component, type_token, exc) from exc


def build(component: str, type_token: str, factory: Callable[[], T]) -> T:
    with building(component, type_token):
        return factory()


@dataclass
class Platform:
    spec: PlatformSpec
    provider: k8s.Provider
    tenant_roles: TenantRoles
    namespaces: dict[str, SecureNamespace] = field(default_factory=dict)
    models: list[PlacedModel] = field(default_factory=list)
    pools: dict[str, GpuNodePool] = field(default_factory=dict)
    registry: HarborRegistry | None = None
    pki: Pki | None = None
    monitoring: MonitoringStack | None = None
    logging: LoggingStack | None = None
    gateway: LlmGateway | None = None
    images: dict[str, Image] = field(default_factory=lambda: dict(IMAGES))
    services: dict[str, VllmService] = field(default_factory=dict)
    charts: dict[str, k8s.helm.v4.Chart] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "profile": self.spec.profile,
            "kubernetesVersion": self.spec.cluster.kubernetes_version,
            "namespaces": sorted(self.namespaces),
            "tenants": {t.name: t.namespace_name for t in self.spec.tenants},
            "models": {
                m.spec.name: {
                    "model": m.facts.name,
                    "pool": m.pool.name,
                    "tensorParallelSize": m.plan.tensor_parallel_size,
                    "pipelineParallelSize": m.plan.pipeline_parallel_size,
                    "replicas": m.replicas,
                    "gpus": m.replicas * m.gpus_per_replica,
                    "maxModelLen": m.plan.max_model_len,
                }
                for m in self.models
            },
        }


# The operator's pods are daemons on every GPU node: room for a few per node, no GPUs requested through quota.
GPU_OPERATOR_QUOTA = QuotaSpec(
    requests_cpu="16",
    requests_memory="64Gi",
    limits_cpu="64",
    limits_memory="256Gi",
    requests_storage="0",
    pods=500,
    persistent_volume_claims=0,
    services=20,
    gpus=None,
)


def _limits(spec: LimitRangeSpec) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {
        "default_request": {"cpu": spec.default_request_cpu, "memory": spec.default_request_memory},
        "default": {"cpu": spec.default_limit_cpu, "memory": spec.default_limit_memory},
        "max": {},
    }
    if spec.max_cpu:
        out["max"]["cpu"] = spec.max_cpu
    if spec.max_memory:
        out["max"]["memory"] = spec.max_memory
    return out


def namespace_args(
    spec: PlatformSpec,
    name: str,
    purpose: str,
    quota: QuotaSpec,
    limits: LimitRangeSpec,
    role_bindings: dict[str, list[str]] | None = None,
    extra_labels: dict[str, str] | None = None,
) -> SecureNamespaceArgs:
    lim = _limits(limits)
    return SecureNamespaceArgs(
        name=name,
        kubernetes_version=spec.cluster.kubernetes_version,
        instance=spec.name,
        purpose=purpose,
        quota_hard=quota.hard(),
        limit_default_request=lim["default_request"],
        limit_default=lim["default"],
        limit_max=lim["max"],
        dns_namespace=spec.cluster.dns.namespace,
        dns_pod_labels=dict(spec.cluster.dns.pod_labels),
        role_bindings=role_bindings or {},
        extra_labels={"privatellm.io/compliance-profile": spec.profile, **(extra_labels or {})},
    )


def cluster_provider(spec: PlatformSpec) -> k8s.Provider:
    """The one Kubernetes provider every component receives through `opts` (components never build their own)."""
    cluster = spec.cluster
    kubeconfig: pulumi.Input[str] | None = None
    if cluster.kubeconfig_secret:
        key = qualified_key(cluster.kubeconfig_secret)
        namespace, _, name = key.partition(":")
        kubeconfig = pulumi.Config(namespace).require_secret(name)
    elif cluster.kubeconfig_path:
        kubeconfig = cluster.kubeconfig_path
    return k8s.Provider(
        f"{spec.name}-cluster",
        kubeconfig=kubeconfig,
        context=cluster.context,
        enable_server_side_apply=True,
    )


def chart(
    name: str,
    ref: ChartRef,
    namespace: str,
    values: dict[str, object],
    opts: pulumi.ResourceOptions,
    registry: RegistrySpec | None = None,
) -> k8s.helm.v4.Chart:
    """A third-party system from its official chart, pinned in the catalog (its objects stay visible to policies);
    an air-gapped site takes it from its own registry."""
    source, repo = chart_source(ref, registry)
    return k8s.helm.v4.Chart(
        name,
        name=name,
        chart=source,
        version=ref.version,
        namespace=namespace,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=repo) if repo else None,
        values=values,
        opts=opts,
    )


def runs_gateway(spec: PlatformSpec) -> bool:
    """The gateway, its controllers and their namespaces are built (`build_gateway`)."""
    return spec.gateway is not None and bool(spec.models) and spec.registry is not None


def runs_monitoring(spec: PlatformSpec) -> bool:
    """kube-prometheus-stack is built (`build_observability`)."""
    return spec.observability.enabled and spec.registry is not None


def runs_logging(spec: PlatformSpec) -> bool:
    """Elasticsearch, Kibana and the log shipper are built (`build_logging`)."""
    return spec.logging.enabled and spec.registry is not None


def runs_gpu_operator(spec: PlatformSpec) -> bool:
    """The NVIDIA GPU Operator is installed (`build_gpu`)."""
    return bool(spec.node_pools) and spec.gpu_operator.enabled


@dataclass(frozen=True)
class NamespaceFlow:
    """One connection allowed between two of the stack's namespaces. Under default-deny a connection needs the
    source's egress allow and the target's ingress allow: both are rendered from this one entry."""

    source: str
    target: str
    ports: tuple[int, ...]
    why: str
    admitted_by_workload: bool = False
    """The target's ingress allow is the workload's own NetworkPolicy (each model's serving policy), not the
    namespace's."""


def namespace_flows(spec: PlatformSpec) -> list[NamespaceFlow]:
    """Every connection between the stack's namespaces (DNS, the API server and CIDR backends aside)."""
    ns = spec.namespaces
    inference, monitoring = ns.inference.name, ns.monitoring.name
    logging, operators = ns.logging.name, ns.operators.name
    flows: list[NamespaceFlow] = []
    if runs_gateway(spec):
        flows += [
            NamespaceFlow(ns.gateway.name, inference, (8000,), "Envoy to the models", admitted_by_workload=True),
            NamespaceFlow(
                ns.gateway.name, ENVOY_GATEWAY_NAMESPACE, (18000, 18001, 18002, 8081), "Envoy to its control plane"
            ),
            NamespaceFlow(ENVOY_GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE, (1063,), "Envoy Gateway's extension server"),
        ]
    if runs_monitoring(spec):
        scrape: list[tuple[str, tuple[int, ...], str]] = [
            (operators, (8080,), "controller metrics"),
            (ns.pki.name, (9402,), "cert-manager and trust-manager metrics"),
        ]
        if spec.registry is not None and spec.registry.harbor is not None:
            scrape.append((ns.registry.name, (8001,), "Harbor metrics"))
        if runs_logging(spec):
            audit_log = "audit-log" in observability_features(spec)
            # the Elasticsearch exporter; Elasticsearch itself for Grafana's audit-log data source
            scrape.append((logging, (9114, 9200) if audit_log else (9114,), "Elasticsearch exporter"))
            scrape.append((LOG_SHIPPER_NAMESPACE, (2020,), "Fluent Bit metrics"))
        if runs_gpu_operator(spec):
            scrape.append((spec.gpu_operator.namespace, (9400,), "DCGM exporter"))
        if runs_gateway(spec):
            scrape.append((ns.gateway.name, (19001, 1064), "Envoy and AI Gateway metrics"))
        flows.append(NamespaceFlow(monitoring, inference, (8000,), "vLLM metrics", admitted_by_workload=True))
        flows += [NamespaceFlow(monitoring, target, ports, why) for target, ports, why in scrape]
        flows.append(NamespaceFlow(operators, monitoring, (9090,), "KEDA reads queue lengths from Prometheus"))
    if runs_logging(spec):
        flows += [
            NamespaceFlow(LOG_SHIPPER_NAMESPACE, logging, (9200,), "Fluent Bit ships logs"),
            NamespaceFlow(operators, logging, (9200,), "ECK manages Elasticsearch"),
        ]
    return flows


def with_flows(args: SecureNamespaceArgs, flows: list[NamespaceFlow]) -> SecureNamespaceArgs:
    """`args` with the namespace's side of every flow: egress allows where it is the source, ingress allows where it
    is the target (unless the target workload admits the flow itself)."""
    egress: dict[str, list[int]] = {}
    ingress: dict[str, list[int]] = {}
    for f in flows:
        if f.source == args.name:
            egress.setdefault(f.target, []).extend(f.ports)
        if f.target == args.name and not f.admitted_by_workload:
            ingress.setdefault(f.source, []).extend(f.ports)
    return dataclasses.replace(args, egress_to_namespaces=egress, ingress_from_namespaces=ingress)


def exposure_quota(quota: QuotaSpec, service_type: str, service_ports: int) -> QuotaSpec:
    """`quota` admitting exactly one Service of `service_type` with `service_ports` ports, nothing more. Kubernetes'
    quota evaluator counts a LoadBalancer Service as one load balancer *and* one node port per Service port (node
    ports are allocated by default), a NodePort Service as one node port per port, ClusterIP as neither."""
    exposed = service_type in ("LoadBalancer", "NodePort")
    return quota.model_copy(
        update={
            "load_balancers": 1 if service_type == "LoadBalancer" else 0,
            "node_ports": service_ports if exposed else 0,
        }
    )


GATEWAY_SERVICE_PORTS = 1
"""Ports of the Service Envoy Gateway creates for the gateway: one per listener (components/gateway.py declares one
HTTPS listener)."""


def platform_quota(spec: PlatformSpec, role: str) -> QuotaSpec:
    """A platform namespace's quota: the stack's or the default, with `services.loadbalancers` and
    `services.nodeports` following the Service the namespace exposes: Envoy's in the gateway namespace (Envoy Gateway
    runs the proxies in the Gateway's namespace, `GatewayNamespace` mode) and Harbor's in the registry namespace
    (the stack's own values of those two are replaced there: they follow `gateway.service_type` and
    `registry.harbor.expose.service_type`)."""
    quota = spec.namespaces.quota_for(role)
    if role == "gateway" and runs_gateway(spec):
        assert spec.gateway is not None
        return exposure_quota(quota, spec.gateway.service_type, GATEWAY_SERVICE_PORTS)
    if role == "registry" and spec.registry is not None and spec.registry.harbor is not None:
        return exposure_quota(quota, spec.registry.harbor.expose.service_type, HARBOR_SERVICE_PORTS)
    return quota


def support_namespace_args(spec: PlatformSpec, flows: list[NamespaceFlow]) -> dict[str, SecureNamespaceArgs]:
    """The namespaces the platform adds to the seven of `namespaces`: the GPU Operator's, the gateway's two
    controllers' and the log shipper's. Every one of them watches the API server."""
    out: dict[str, SecureNamespaceArgs] = {}

    def base(name: str, purpose: str, role: str, quota: QuotaSpec) -> SecureNamespaceArgs:
        return dataclasses.replace(
            namespace_args(
                spec,
                name,
                purpose=f"platform:{purpose}",
                quota=quota,
                limits=PLATFORM_LIMITS,
                extra_labels={"privatellm.io/platform-role": role},
            ),
            api_server_cidrs=list(spec.cluster.api_server_cidrs),
            api_server_ports=list(spec.cluster.api_server_ports),
        )

    exceptions = documented_exceptions(spec)
    if runs_gpu_operator(spec):
        ns = spec.gpu_operator.namespace
        out[ns] = dataclasses.replace(
            base(ns, "gpu-operator", "gpu-operator", GPU_OPERATOR_QUOTA),
            pod_security_level="privileged",
            exception_reason=exceptions[ns],
            allow_within_namespace=True,
        )
    if runs_gateway(spec):
        assert spec.gateway is not None
        g = spec.gateway
        # Envoy Gateway reaches the declared Redis of the global rate limits; the AI Gateway serves a webhook.
        out[ENVOY_GATEWAY_NAMESPACE] = dataclasses.replace(
            base(ENVOY_GATEWAY_NAMESPACE, "gateway-controller", "gateway-controller", PLATFORM_QUOTA),
            allow_within_namespace=True,
            egress_cidrs=list(g.redis_cidrs),
            egress_ports=[int(g.redis_url.rsplit(":", 1)[1])] if g.redis_url else [6379],
        )
        out[AI_GATEWAY_NAMESPACE] = dataclasses.replace(
            base(AI_GATEWAY_NAMESPACE, "gateway-controller", "gateway-controller", PLATFORM_QUOTA),
            allow_within_namespace=True,
            webhook_ports=[9443],
        )
    if runs_logging(spec):
        # The log shipper's namespace: the second documented exception to the restricted baseline.
        out[LOG_SHIPPER_NAMESPACE] = dataclasses.replace(
            base(LOG_SHIPPER_NAMESPACE, "log-shipper", "log-shipper", PLATFORM_QUOTA),
            pod_security_level="privileged",
            exception_reason=exceptions[LOG_SHIPPER_NAMESPACE],
        )
    return {ns: with_flows(args, flows) for ns, args in out.items()}


def stack_images_pinned(spec: PlatformSpec) -> dict[str, Image]:
    """The catalog, pinned to digests by the stack's lock file when it has one (`private-llm images lock`)."""
    path = lock_path(project_dir(), pulumi.get_stack())
    if not path.is_file():
        return dict(IMAGES)
    try:
        return apply_lock(IMAGES, load_lock(path))
    except LockError as exc:
        raise StackConfigError([f"{path.name}: {exc}"], pulumi.get_stack()) from None


def build_platform(spec: PlatformSpec) -> Platform:
    # Size and validate every model before anything is registered: a bad model fails the whole stack early.
    placed = plan_models(spec, project_dir())
    images = stack_images_pinned(spec)
    provider = build("cluster-provider", "pulumi:providers:kubernetes", lambda: cluster_provider(spec))
    opts = pulumi.ResourceOptions(providers={"kubernetes": provider})

    roles = build(
        f"{spec.name}-tenant-roles",
        "privatellm:baseline:TenantRoles",
        lambda: TenantRoles(f"{spec.name}-tenant-roles", TenantRolesArgs(instance=spec.name), opts=opts),
    )
    platform = Platform(spec=spec, provider=provider, tenant_roles=roles)

    flows = namespace_flows(spec)
    for role, ns in spec.namespaces.items():
        args = namespace_args(
            spec,
            ns.name,
            purpose=f"platform:{role}",
            quota=platform_quota(spec, role),
            limits=spec.namespaces.limits_for(role),
            extra_labels={"privatellm.io/platform-role": role},
        )
        if role == "registry" and spec.registry is not None and spec.registry.harbor is not None:
            # Every node's container runtime and every pod pulls from Harbor; Harbor's parts talk among themselves
            # and reach only its declared backends (object storage, database, LDAP, DR Harbor).
            args = dataclasses.replace(
                args,
                allow_within_namespace=True,
                ingress_from_anywhere_ports=[8443, 443],
                egress_cidrs=list(spec.registry.harbor.egress_cidrs),
                egress_ports=[443, 5432, 6379, 636],
            )
        if role == "pki":
            # cert-manager and trust-manager watch the API server and serve its webhooks.
            args = dataclasses.replace(
                args,
                api_server_cidrs=list(spec.cluster.api_server_cidrs),
                api_server_ports=list(spec.cluster.api_server_ports),
                webhook_ports=[10250, 6443],
                allow_within_namespace=True,
                egress_cidrs=[spec.pki.vault.server_cidr] if spec.pki.vault and spec.pki.vault.server_cidr else [],
                egress_ports=[443, 8200],
            )
        if role == "gateway" and runs_gateway(spec):
            # Envoy listens on 10443 for the HTTPS listener's 443.
            args = dataclasses.replace(args, ingress_from_anywhere_ports=[10443])
        if role == "monitoring" and runs_monitoring(spec):
            args = dataclasses.replace(
                args,
                api_server_cidrs=list(spec.cluster.api_server_cidrs),
                api_server_ports=[*spec.cluster.api_server_ports, 10250],
                webhook_ports=[10250],
                allow_within_namespace=True,
                egress_cidrs=list(spec.observability.egress_cidrs),
                egress_ports=[443, 587, 25],
            )
        if role == "logging" and runs_logging(spec):
            args = dataclasses.replace(args, allow_within_namespace=True)
        if role == "operators":
            # Controllers (LeaderWorkerSet, KEDA, ECK) watch the API server, serve its webhooks and talk among
            # themselves.
            args = dataclasses.replace(
                args,
                api_server_cidrs=list(spec.cluster.api_server_cidrs),
                api_server_ports=list(spec.cluster.api_server_ports),
                webhook_ports=[9443, 6443],
                allow_within_namespace=True,
            )
        args = with_flows(args, flows)
        with building(ns.name, "privatellm:baseline:SecureNamespace"):
            platform.namespaces[ns.name] = SecureNamespace(ns.name, args, opts=opts)
    # The namespaces of the GPU Operator, the gateway's controllers and the log shipper exist before Harbor, which
    # puts a pull secret into each of them.
    for name, args in support_namespace_args(spec, flows).items():
        with building(name, "privatellm:baseline:SecureNamespace"):
            platform.namespaces[name] = SecureNamespace(name, args, opts=opts)

    for tenant in spec.tenants:
        ns_name = tenant.namespace_name
        args = namespace_args(
            spec,
            ns_name,
            purpose=f"tenant:{tenant.name}",
            quota=tenant.quota,
            limits=tenant.limits,
            role_bindings={role: tenant.groups.for_role(role) for role in TENANT_ROLES},
            extra_labels={"privatellm.io/tenant": tenant.name},
        )
        with building(ns_name, "privatellm:baseline:SecureNamespace"):
            platform.namespaces[ns_name] = SecureNamespace(
                ns_name, args, opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[roles]))
            )
    platform.models = placed
    platform.images = images
    # The PKI comes first: Harbor serves a PKI certificate (the PKI's own images come from the bootstrap registry
    # when the platform manages Harbor, since Harbor does not exist yet).
    build_pki(spec, platform, opts)
    build_registry(spec, platform, opts)
    build_gpu(spec, platform, opts)
    build_inference(spec, platform, opts)
    build_gateway(spec, platform, opts)
    build_observability(spec, platform, opts)
    build_logging(spec, platform, opts)
    # In-cluster defence in depth: what Pod Security Admission does not cover, denied at admission.
    guardrails = guardrails_args(spec)
    if guardrails is not None:
        with building("admission-guardrails", "privatellm:baseline:AdmissionGuardrails"):
            AdmissionGuardrails("admission-guardrails", guardrails, opts=opts)
    return platform


GPU_OPERATOR_EXCEPTION = (
    "NVIDIA GPU Operator: the driver, container toolkit, device plugin and DCGM exporter run privileged with host "
    "access to install and expose the GPUs; nothing else runs in this namespace"
)


def documented_exceptions(spec: PlatformSpec) -> dict[str, str]:
    """The documented exceptions to the restricted baseline, as policy config (namespace → reason): the stack
    file's `policy.exceptions`, plus the built-in reasons of the GPU Operator and log shipper namespaces when the
    stack runs them and does not state its own."""
    exemptions: dict[str, str] = {}
    if spec.node_pools and spec.gpu_operator.enabled:
        exemptions[spec.gpu_operator.namespace] = GPU_OPERATOR_EXCEPTION
    if spec.logging.enabled and spec.registry is not None:
        exemptions[LOG_SHIPPER_NAMESPACE] = LOG_SHIPPER_EXCEPTION
    exemptions.update(spec.policy.exceptions)
    return exemptions


def stack_policy_config(spec: PlatformSpec) -> dict[str, Any]:
    """What the policies need to know about a stack: target version, documented exemptions, its registries."""
    allowed: list[str] = []
    registry = spec.registry
    if registry is not None:
        allowed.append(registry.host)
        if registry.harbor is not None:
            allowed.append(registry.harbor.bootstrap_registry)
    immutable = immutable_repositories(spec)
    return policy_config(
        kubernetes_version=spec.cluster.kubernetes_version,
        exempt_namespaces=documented_exceptions(spec),
        allowed_registries=allowed,
        immutable_repositories=immutable,
        gateway_namespaces=exposed_namespaces(spec),
        profile=spec.profile,
    )


def exposed_namespaces(spec: PlatformSpec) -> list[str]:
    """Namespaces whose Services may be LoadBalancer or NodePort (policy config `gatewayNamespaces`, admission
    guardrails): the gateway's, and the registry's when a managed Harbor is exposed that way (the entry point of the
    nodes' container runtimes and of the deploy host)."""
    namespaces = [spec.namespaces.gateway.name] if spec.gateway is not None else []
    registry = spec.registry
    if registry is not None and registry.harbor is not None and registry.harbor.expose.service_type != "ClusterIP":
        namespaces.append(spec.namespaces.registry.name)
    return namespaces


def stack_pack_config(spec: PlatformSpec) -> dict[str, Any]:
    """Per-policy config with the profile's enforcement levels: offline check and `--policy-pack-config` alike."""
    return merge_pack_config(profile_pack_config(spec.profile, stack_policy_config(spec)), spec.policy.overrides)


def pool_args(spec: PlatformSpec, pool: GpuPoolSpec) -> GpuNodePoolArgs:
    labels = dict(pool.labels)
    if pool.time_slicing is not None:
        labels["nvidia.com/device-plugin.config"] = pool.name
    if pool.mig.strategy == "single" and pool.mig.profile:
        labels["nvidia.com/mig.config"] = f"all-{pool.mig.profile}"
    taint = None
    if pool.tolerations is None and pool.node_selector is None:
        taint = Taint(key=POOL_LABEL, value=pool.name, effect="NoSchedule")
    eks = None
    if pool.eks is not None:
        e = pool.eks
        eks = EksNodeGroup(
            cluster_name=e.cluster_name,
            instance_types=list(e.instance_types),
            subnet_ids=list(e.subnet_ids),
            node_role_arn=e.node_role_arn,
            kms_key_arn=e.kms_key_arn,
            min_size=e.min_size,
            max_size=e.max_size if e.max_size is not None else pool.nodes,
            capacity_type=e.capacity_type,
            capacity_reservation_id=e.capacity_reservation_id,
            ami_type=e.ami_type,
            root_volume_gib=e.root_volume_gib,
        )
    extra = [t.model_dump(exclude_none=True) for t in pool.tolerations] if pool.tolerations is not None else []
    return GpuNodePoolArgs(
        name=pool.name,
        instance=spec.name,
        gpu_type=pool.gpu,
        gpus_per_node=pool.gpus_per_node,
        nodes=pool.nodes,
        labels=labels,
        taint=taint,
        node_selector=pool.selector,
        gpu_resource=pool.gpu_resource,
        node_names=list(pool.onprem.node_names) if pool.onprem else [],
        keep_taints=[Taint(t.key, t.value, t.effect) for t in pool.onprem.keep_taints] if pool.onprem else [],
        eks=eks,
        extra_tolerations=extra,
    )


def pull_secret_name(spec: PlatformSpec) -> str | None:
    """The dockerconfigjson Secret every image-consuming namespace holds (Harbor robot, or the stack's own)."""
    if spec.registry is None:
        return None
    if spec.registry.harbor is not None:
        return PULL_SECRET
    return spec.registry.pull_secret_name


# Where each chart takes its imagePullSecrets (names of Secrets in the release namespace).
PULL_SECRET_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    "lws": (("imagePullSecrets",),),
    "keda": (("imagePullSecrets",),),
    "cert-manager": (("global", "imagePullSecrets"),),
    "trust-manager": (("imagePullSecrets",),),
    "envoy-gateway": (("global", "imagePullSecrets"),),
    "ai-gateway": (("global", "imagePullSecrets"),),
    "kube-prometheus-stack": (("global", "imagePullSecrets"),),
    "eck-operator": (("imagePullSecrets",),),
    "fluent-bit": (("imagePullSecrets",),),
    "gpu-operator": tuple(
        (component, "imagePullSecrets")
        for component in (
            "operator",
            "validator",
            "driver",
            "toolkit",
            "devicePlugin",
            "gfd",
            "dcgmExporter",
            "migManager",
        )
    ),
}


def with_pull_secret(chart_name: str, values: dict[str, Any], secret: str | None) -> dict[str, Any]:
    if secret is None:
        return values
    for path in PULL_SECRET_PATHS.get(chart_name, ()):
        node = values
        for key in path[:-1]:
            node = node.setdefault(key, {})
        # The GPU Operator takes names; the other charts take LocalObjectReferences.
        node[path[-1]] = [secret] if chart_name == "gpu-operator" else [{"name": secret}]
    return values


def pull_namespaces(spec: PlatformSpec) -> list[str]:
    """Namespaces whose pods pull from the registry (with a managed Harbor, each gets a robot's pull secret)."""
    namespaces = [spec.namespaces.inference.name, spec.namespaces.operators.name]
    if spec.registry is not None and spec.registry.harbor is None:
        # With a managed Harbor the PKI comes up before it, from the bootstrap registry.
        namespaces.append(spec.namespaces.pki.name)
    if runs_gateway(spec):
        namespaces += [spec.namespaces.gateway.name, ENVOY_GATEWAY_NAMESPACE, AI_GATEWAY_NAMESPACE]
    if runs_gpu_operator(spec):
        namespaces.append(spec.gpu_operator.namespace)
    if runs_monitoring(spec):
        namespaces.append(spec.namespaces.monitoring.name)
    if runs_logging(spec):
        namespaces += [spec.namespaces.logging.name, LOG_SHIPPER_NAMESPACE]
    return namespaces


def pull_dependencies(platform: Platform) -> list[pulumi.Resource]:
    return list(platform.registry.pull_secrets) if platform.registry is not None else []


def build_registry(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """Harbor in the registry namespace, configured as code, with pull secrets for the consuming namespaces."""
    registry = spec.registry
    if registry is None or registry.harbor is None:
        return
    h = registry.harbor
    severity = h.vulnerability_severity or PROFILE_SEVERITY[spec.profile]
    projects = [
        HarborProject(registry.platform_project, severity),
        HarborProject(registry.models_project, severity),
        HarborProject(registry.charts_project, severity),
    ]
    if not registry.air_gapped:
        projects += [
            HarborProject(f"proxy-{p.name}", severity, proxy_endpoint=p.endpoint, proxy_provider=p.provider)
            for p in h.proxy_caches
        ]
    harbor_tls = h.tls_secret_name
    if harbor_tls is None and platform.pki is not None:
        harbor_tls = HARBOR_TLS_SECRET
        ns = spec.namespaces.registry.name
        platform.pki.certificate(
            "cert-harbor",
            ns,
            harbor_tls,
            registry.hostname,
            [registry.hostname, *service_dns_names("harbor", ns)],
            "server",
        )
    ref = CHARTS["harbor"]
    source, repo = pre_harbor_chart_source(ref, registry)  # Harbor cannot serve its own chart
    names = secret_names()
    auth: dict[str, Any] | None = None
    auth_mode: Literal["ldap_auth", "oidc_auth"] | None = None
    if h.auth is not None:
        if h.auth.mode == "ldap":
            auth_mode = "ldap_auth"
            auth = {
                "ldap_url": h.auth.ldap_url,
                "ldap_base_dn": h.auth.ldap_base_dn,
                "ldap_search_dn": h.auth.ldap_search_dn,
                "ldap_search_password": _config_secret(str(h.auth.ldap_search_password_secret)),
                "ldap_uid": h.auth.ldap_uid,
                "ldap_verify_cert": True,
                "ldap_group_base_dn": h.auth.ldap_group_base_dn,
                "ldap_group_admin_dn": h.auth.ldap_group_admin_dn,
            }
        else:
            auth_mode = "oidc_auth"
            auth = {
                "oidc_name": "corporate-sso",
                "oidc_endpoint": h.auth.oidc_endpoint,
                "oidc_client_id": h.auth.oidc_client_id,
                "oidc_client_secret": _config_secret(str(h.auth.oidc_client_secret_secret)),
                "oidc_groups_claim": h.auth.oidc_groups_claim,
                "oidc_admin_group": h.auth.oidc_admin_group,
                "oidc_scope": "openid,profile,email,offline_access",
                "oidc_verify_cert": True,
                "oidc_auto_onboard": True,
                "oidc_user_claim": "preferred_username",
            }
    args = HarborArgs(
        namespace=spec.namespaces.registry.name,
        instance=spec.name,
        host=registry.host,
        chart=source,
        chart_version=ref.version,
        chart_repository=repo,
        values=harbor_values(spec, names, platform.images, tls_secret=harbor_tls),
        projects=projects,
        pull_namespaces=pull_namespaces(spec),
        pull_projects=[registry.platform_project, registry.models_project],
        claims=harbor_claims(spec),
        s3_credentials=(
            _config_secret(str(h.storage.access_key_id_secret)),
            _config_secret(str(h.storage.secret_access_key_secret)),
        )
        if h.storage.type == "s3"
        else None,
        database_password=_config_secret(str(h.database.password_secret)) if h.database else None,
        redis_password=_config_secret(str(h.redis.password_secret)) if h.redis and h.redis.password_secret else None,
        retention_keep_most_recent=h.retention_keep_most_recent,
        retention_schedule=h.retention_schedule,
        replication=HarborReplication(
            endpoint=h.replication.endpoint,
            username=h.replication.username,
            password=_config_secret(str(h.replication.password_secret)),
            schedule=h.replication.schedule,
        )
        if h.replication
        else None,
        auth={k: v for k, v in auth.items() if v is not None} if auth else None,
        auth_mode=auth_mode,
    )
    depends = [platform.namespaces[n] for n in pull_namespaces(spec)]
    registry_ns = platform.namespaces[spec.namespaces.registry.name]
    with building("harbor", "privatellm:registry:Harbor"):
        platform.registry = HarborRegistry(
            "harbor",
            args,
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[registry_ns, *depends])),
        )


def _config_secret(ref: str) -> pulumi.Output[str]:
    key = qualified_key(ref)
    namespace, _, name = key.partition(":")
    return pulumi.Config(namespace).require_secret(name)


def _chart_spec(name: str, values: dict[str, Any], spec: PlatformSpec, pull_secret: bool = True) -> ChartSpec:
    """A PKI chart: installed before a managed Harbor answers, so taken from the bootstrap charts location then."""
    assert spec.registry is not None
    source, repo = pre_harbor_chart_source(CHARTS[name], spec.registry)
    return ChartSpec(
        chart=source,
        version=CHARTS[name].version,
        repository=repo,
        values=with_pull_secret(name, values, pull_secret_name(spec)) if pull_secret else values,
    )


def build_pki(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """cert-manager, trust-manager and the platform CA, in the `pki` namespace, when the stack has a registry."""
    registry = spec.registry
    if registry is None:
        return
    ns = spec.namespaces.pki.name
    pki = spec.pki
    image_source = (
        RegistrySpec(host=registry.harbor.bootstrap_registry, platform_project=registry.platform_project)
        if registry.harbor is not None
        else registry
    )
    args = PkiArgs(
        namespace=ns,
        instance=spec.name,
        mode=pki.mode,
        duration_hours=spec.certificate_days * 24,
        key_algorithm=pki.key_algorithm,
        cert_manager=_chart_spec(
            "cert-manager", cert_manager_values(image_source, platform.images), spec, registry.harbor is None
        ),
        trust_manager=_chart_spec(
            "trust-manager", trust_manager_values(image_source, ns, platform.images), spec, registry.harbor is None
        ),
        trust_namespace_labels={"app.kubernetes.io/part-of": "private-llm"},
        ca_certificate_pem=pki.enterprise.certificate_pem if pki.enterprise else None,
        ca_key=_config_secret(str(pki.enterprise.key_secret)) if pki.enterprise and pki.enterprise.key_secret else None,
        existing_ca_secret=pki.enterprise.existing_secret_name if pki.enterprise else None,
        vault=VaultIssuer(
            server=pki.vault.server,
            path=pki.vault.path,
            role=pki.vault.role,
            auth_mount_path=pki.vault.auth_mount_path,
            ca_pem=pki.vault.ca_pem,
        )
        if pki.vault
        else None,
    )
    with building("pki", "privatellm:pki:Pki"):
        platform.pki = Pki(
            "pki",
            args,
            opts=pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(depends_on=[platform.namespaces[ns], *pull_dependencies(platform)]),
            ),
        )


def serving_tls(spec: PlatformSpec, platform: Platform, model: PlacedModel) -> ServingTls | None:
    """Server and probe certificates for one model (mTLS: vLLM verifies every client)."""
    if platform.pki is None:
        return None
    ns = spec.namespaces.inference.name
    name = model.spec.name
    platform.pki.certificate(
        f"cert-{name}-server", ns, f"{name}-tls", f"{name}.{ns}.svc", service_dns_names(name, ns), "server"
    )
    platform.pki.certificate(f"cert-{name}-probe", ns, f"{name}-probe-tls", f"{name}-probe", usage="client")
    return ServingTls(
        secret_name=f"{name}-tls",
        probe_client_secret=f"{name}-probe-tls",
        metrics_client_secret=METRICS_CLIENT_SECRET,
        ciphers=":".join(PROFILE_CIPHERS[spec.profile]),
    )


def build_gpu(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """GPU node pools and the NVIDIA GPU Operator (in its documented privileged namespace)."""
    if not spec.node_pools:
        return
    aws_providers: dict[str, pulumi.ProviderResource] = {}
    for pool in spec.node_pools:
        pool_opts = opts
        if pool.eks is not None:
            region = pool.eks.region
            if region not in aws_providers:
                import pulumi_aws as aws  # only stacks with EKS pools load the AWS SDK

                aws_providers[region] = aws.Provider(f"{spec.name}-aws-{region}", region=region)
            pool_opts = pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(providers={"aws": aws_providers[region]})
            )
        with building(f"gpu-pool-{pool.name}", "privatellm:gpu:GpuNodePool"):
            platform.pools[pool.name] = GpuNodePool(f"gpu-pool-{pool.name}", pool_args(spec, pool), opts=pool_opts)
    if not runs_gpu_operator(spec):
        return
    operator = spec.gpu_operator
    ns = operator.namespace  # created with the platform's namespaces (`support_namespace_args`)
    registry = spec.registry
    if registry is None:  # refused by `plan_models` before anything is registered
        raise StackConfigError(["registry is not set: the GPU Operator's images come from it"], pulumi.get_stack())
    settings = [
        GpuPoolSettings(
            name=p.name,
            mig_strategy=p.mig.strategy,
            time_slicing_replicas=p.time_slicing.replicas if p.time_slicing else None,
            taint_key=POOL_LABEL if p.tolerations is None and p.node_selector is None else None,
        )
        for p in spec.node_pools
    ]
    values = with_pull_secret(
        "gpu-operator",
        gpu_operator_values(
            registry,
            install_driver=operator.driver == "operator",
            driver_version=operator.driver_version or DEFAULT_DRIVER_VERSION,
            pools=settings,
            images=platform.images,
        ),
        pull_secret_name(spec),
    )
    with building("gpu-operator", "kubernetes:helm.sh/v4:Chart"):
        platform.charts["gpu-operator"] = chart(
            "gpu-operator",
            CHARTS["gpu-operator"],
            ns,
            values,
            pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    depends_on=[platform.namespaces[ns], *platform.pools.values(), *pull_dependencies(platform)]
                ),
            ),
            spec.registry,
        )


def build_inference(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    if not platform.models:
        return
    assert spec.registry is not None
    operators_ns = spec.namespaces.operators.name
    inference_ns = platform.namespaces[spec.namespaces.inference.name]
    after_ns = pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[inference_ns]))
    controllers: list[pulumi.Resource] = []
    wanted_charts = charts_needed(spec, platform.models)
    needed = {"lws": ("lws" in wanted_charts, lws_values), "keda": ("keda" in wanted_charts, keda_values)}
    operators_opts = pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(depends_on=[platform.namespaces[operators_ns]])
    )
    for name, (wanted, values) in needed.items():
        if not wanted:
            continue
        with building(name, "kubernetes:helm.sh/v4:Chart"):
            chart_values = with_pull_secret(name, values(spec.registry, platform.images), pull_secret_name(spec))
            platform.charts[name] = chart(name, CHARTS[name], operators_ns, chart_values, operators_opts, spec.registry)
            controllers.append(platform.charts[name])
    gpu_stack: list[pulumi.Resource] = [*platform.pools.values()]
    if "gpu-operator" in platform.charts:
        gpu_stack.append(platform.charts["gpu-operator"])
    priority_classes = [
        k8s.scheduling.v1.PriorityClass(
            f"priority-{name}",
            metadata=k8s.meta.v1.ObjectMetaArgs(
                name=name, labels=standard_labels(name=name, instance=spec.name, component="scheduling")
            ),
            value=pc.value,
            preemption_policy=pc.preemption_policy,
            global_default=False,
            description=pc.description,
            opts=opts,
        )
        for name, pc in sorted(spec.inference.priority_classes.items())
    ]
    model_opts = pulumi.ResourceOptions.merge(
        after_ns,
        pulumi.ResourceOptions(depends_on=[*controllers, *gpu_stack, *pull_dependencies(platform), *priority_classes]),
    )
    if platform.pki is not None:
        # Prometheus scrapes every model over mTLS with this client certificate (ServiceMonitors read it here).
        platform.pki.certificate(
            "cert-metrics-client", spec.namespaces.inference.name, METRICS_CLIENT_SECRET, "prometheus", usage="client"
        )
    # The namespaces whose egress allows reach the models: each model's serving policy admits exactly those.
    clients = {
        f.source: f.source
        for f in namespace_flows(spec)
        if f.target == spec.namespaces.inference.name and f.admitted_by_workload
    }
    for model in platform.models:
        with building(model.spec.name, "privatellm:inference:VllmService"):
            args = vllm_service_args(
                spec,
                model,
                platform.models,
                contract=platform.pools[model.pool.name].contract,
                pull_secret=pull_secret_name(spec),
                images=platform.images,
                tls=serving_tls(spec, platform, model),
                gateway_namespace=clients.get(spec.namespaces.gateway.name),
                monitoring_namespace=clients.get(spec.namespaces.monitoring.name),
            )
            platform.services[model.spec.name] = VllmService(model.spec.name, args, opts=model_opts)


METRICS_CLIENT_SECRET = "prometheus-client-tls"
HARBOR_TLS_SECRET = "harbor-tls"
GATEWAY_TLS_SECRET = "gateway-tls"
GATEWAY_CLIENT_SECRET = "gateway-client-tls"


def build_gateway(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """Envoy Gateway + Envoy AI Gateway and the OpenAI-compatible entry, when the stack declares a gateway."""
    if spec.gateway is None or not platform.models or spec.registry is None or platform.pki is None:
        return
    g = spec.gateway
    registry = spec.registry
    gateway_ns = spec.namespaces.gateway.name
    inference_ns = spec.namespaces.inference.name
    # The controllers' namespaces are created with the platform's namespaces (`support_namespace_args`).
    namespace_resources: list[pulumi.Resource] = [
        platform.namespaces[ENVOY_GATEWAY_NAMESPACE],
        platform.namespaces[AI_GATEWAY_NAMESPACE],
    ]
    installed: list[pulumi.Resource] = []
    chart_opts = pulumi.ResourceOptions.merge(
        opts, pulumi.ResourceOptions(depends_on=[*namespace_resources, *pull_dependencies(platform)])
    )
    for name, ns, values in (
        ("envoy-gateway", ENVOY_GATEWAY_NAMESPACE, envoy_gateway_values(registry, g.redis_url, platform.images)),
        ("ai-gateway-crds", AI_GATEWAY_NAMESPACE, {}),
        ("ai-gateway", AI_GATEWAY_NAMESPACE, ai_gateway_values(registry, platform.images)),
    ):
        with building(name, "kubernetes:helm.sh/v4:Chart"):
            platform.charts[name] = chart(
                name,
                CHARTS[name],
                ns,
                with_pull_secret(name, values, pull_secret_name(spec)),
                pulumi.ResourceOptions.merge(chart_opts, pulumi.ResourceOptions(depends_on=list(installed))),
                registry,
            )
            installed.append(platform.charts[name])
    pki = platform.pki
    certificates = [
        pki.certificate("cert-gateway", gateway_ns, GATEWAY_TLS_SECRET, g.hostname, [g.hostname], "server"),
        pki.certificate(
            "cert-gateway-client", gateway_ns, GATEWAY_CLIENT_SECRET, f"{spec.name}-gateway", usage="client"
        ),
    ]
    gateway_args = LlmGatewayArgs(
        namespace=gateway_ns,
        instance=spec.name,
        hostname=g.hostname,
        tls_secret=GATEWAY_TLS_SECRET,
        client_certificate_secret=GATEWAY_CLIENT_SECRET,
        ca_configmap=f"{spec.name}-platform-ca",
        models=[
            GatewayModel(name=m.spec.served_name, service=m.spec.name, namespace=inference_ns) for m in platform.models
        ],
        tenants=[
            GatewayTenant(
                name=t.name,
                requests_per_minute=t.api.requests_per_minute,
                tokens_per_minute=t.api.tokens_per_minute,
                access=t.access,
            )
            for t in spec.tenants
        ],
        rotation_days=g.key_rotation_days,
        key_epoch=g.key_epoch,
        service_type=g.service_type,
        source_ranges=list(g.source_ranges),
        max_request_body=g.max_request_body,
        global_limits=g.redis_url is not None,
        pod_monitor=spec.observability.enabled,
    )
    with building("gateway", "privatellm:gateway:LlmGateway"):
        platform.gateway = LlmGateway(
            "gateway",
            gateway_args,
            opts=pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    depends_on=[platform.namespaces[gateway_ns], *installed, *certificates, *platform.services.values()]
                ),
            ),
        )


GRAFANA_TLS_SECRET = "grafana-tls"
ELASTICSEARCH_TLS_SECRET = "elasticsearch-tls"
KIBANA_TLS_SECRET = "kibana-tls"
LOG_SHIPPER_EXCEPTION = (
    "Fluent Bit reads every container's log files from the node (hostPath /var/log, read-only, as root without "
    "capabilities); nothing else runs in this namespace"
)


def observability_features(spec: PlatformSpec) -> set[str]:
    features: set[str] = set()
    if spec.node_pools and spec.gpu_operator.enabled:
        features.add("gpu")
    if spec.gateway is not None and spec.models:
        features.add("gateway")
        if spec.logging.enabled and spec.observability.enabled and spec.registry is not None:
            # The gateway's audit log is in Elasticsearch: Grafana reads it for rejections per tenant.
            features.add("audit-log")
    return features


def alertmanager_config(spec: PlatformSpec) -> dict[str, Any]:
    """Alertmanager's native configuration: one route per receiver, selected by alert severity."""
    receivers: list[dict[str, Any]] = [{"name": "null"}]
    routes = []
    for r in spec.observability.receivers:
        receiver: dict[str, Any] = {"name": r.name}
        if r.type == "webhook":
            receiver["webhook_configs"] = [{"url": r.url, "send_resolved": True}]
        else:
            receiver["email_configs"] = [
                {"to": ", ".join(r.to), "from": r.sender, "smarthost": r.smarthost, "require_tls": True}
            ]
        receivers.append(receiver)
        routes.append({"receiver": r.name, "matchers": [f'severity=~"{"|".join(r.severities)}"'], "continue": True})
    return {
        "route": {
            "receiver": "null",
            "group_by": ["alertname", "namespace", "model_name"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": routes,
        },
        "receivers": receivers,
    }


def audit_log_source(spec: PlatformSpec) -> AuditLogSource:
    """Grafana's read-only view of the gateway's audit indices (rejections per tenant)."""
    logging_ns = spec.namespaces.logging.name
    return AuditLogSource(
        url=f"https://{spec.name}-logs-es-http.{logging_ns}.svc:9200",
        index_prefix=AUDIT_PREFIX,
        reader_secret=READER_SECRET,
        ca_configmap=f"{spec.name}-platform-ca",
    )


def build_observability(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """kube-prometheus-stack, the platform's alert rules (from the models' SLOs) and dashboards."""
    from infra.observability.dashboards import dashboard_configmaps_data
    from infra.observability.rules import ModelSlo, build_rule_groups

    registry = spec.registry
    if not spec.observability.enabled or registry is None:
        return
    ns = spec.namespaces.monitoring.name
    features = observability_features(spec)
    grafana_tls = None
    if platform.pki is not None:
        grafana_tls = GRAFANA_TLS_SECRET
        platform.pki.certificate(
            "cert-grafana", ns, grafana_tls, "grafana", service_dns_names("monitoring-grafana", ns)
        )
    models = [m.spec for m in platform.models]
    rule_features = set(features) - {"audit-log"}
    if spec.registry is not None and spec.registry.harbor is not None:
        rule_features.add("harbor")
    if spec.logging.enabled:
        rule_features.add("elasticsearch")
    if platform.pki is not None:
        rule_features.add("cert-manager")
    groups = build_rule_groups(
        [
            ModelSlo(
                model=p.spec.served_name,
                ttft_p95_seconds=p.spec.slo.ttft_p95,
                ttft_p99_seconds=p.spec.slo.ttft_p99,
                max_waiting=p.spec.slo.max_waiting,
                error_ratio=p.spec.slo.error_ratio,
                workload=p.spec.name,
                multi_node=p.plan.pipeline_parallel_size > 1,
            )
            for p in platform.models
        ],
        spec.namespaces.inference.name,
        rule_features,
        platform_namespaces=sorted(platform.namespaces),
    )
    values = with_pull_secret(
        "kube-prometheus-stack",
        kube_prometheus_stack_values(
            registry,
            retention_days=spec.metrics_retention_days,
            storage_size=spec.observability.storage_size,
            storage_class=spec.observability.storage_class,
            alertmanager_config=alertmanager_config(spec),
            grafana_admin_secret=GRAFANA_ADMIN_SECRET,
            grafana_tls_secret=grafana_tls,
            client_cert_secrets=[],
            images=platform.images,
            audit_log=audit_log_source(spec) if "audit-log" in features else None,
        ),
        pull_secret_name(spec),
    )
    source, repo = chart_source(CHARTS["kube-prometheus-stack"], registry)
    args = MonitoringArgs(
        namespace=ns,
        instance=spec.name,
        chart=source,
        chart_version=CHARTS["kube-prometheus-stack"].version,
        chart_repository=repo,
        values=values,
        rule_groups=groups,
        dashboards=dashboard_configmaps_data(
            [m.served_name for m in models], spec.namespaces.inference.name, features, spec.namespaces.gateway.name
        )
        if models
        else {},
    )
    with building("monitoring", "privatellm:observability:MonitoringStack"):
        platform.monitoring = MonitoringStack(
            "monitoring",
            args,
            opts=pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[platform.namespaces[ns], *pull_dependencies(platform)])
            ),
        )


def build_logging(spec: PlatformSpec, platform: Platform, opts: pulumi.ResourceOptions) -> None:
    """ECK operator, Elasticsearch, Kibana, index lifecycle, and Fluent Bit with PII redaction on every node."""
    registry = spec.registry
    if not spec.logging.enabled or registry is None or platform.pki is None:
        return
    ns = spec.namespaces.logging.name
    operators_ns = spec.namespaces.operators.name
    nodes = spec.logging.elasticsearch_nodes or PROFILE_ES_NODES[spec.profile]
    cluster = f"{spec.name}-logs"
    platform.pki.certificate(
        "cert-elasticsearch",
        ns,
        ELASTICSEARCH_TLS_SECRET,
        f"{cluster}-es-http",
        service_dns_names(f"{cluster}-es-http", ns),
    )
    platform.pki.certificate(
        "cert-kibana", ns, KIBANA_TLS_SECRET, f"{cluster}-kb-http", service_dns_names(f"{cluster}-kb-http", ns)
    )
    with building("eck-operator", "kubernetes:helm.sh/v4:Chart"):
        platform.charts["eck-operator"] = chart(
            "eck-operator",
            CHARTS["eck-operator"],
            operators_ns,
            with_pull_secret(
                "eck-operator", eck_operator_values(registry, [ns], platform.images), pull_secret_name(spec)
            ),
            pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(depends_on=[platform.namespaces[operators_ns], *pull_dependencies(platform)]),
            ),
            registry,
        )
    images = platform.images
    pull = pull_secret_name(spec)
    args = LoggingArgs(
        namespace=ns,
        instance=spec.name,
        version=images["elasticsearch"].tag,
        elasticsearch_image=images["elasticsearch"].render(registry),
        kibana_image=images["kibana"].render(registry),
        exporter_image=images["elasticsearch-exporter"].render(registry),
        image_scanner_skips={
            image: image_scanner_skips(spec, image)
            for image in (images["elasticsearch"].render(registry), images["elasticsearch-exporter"].render(registry))
        },
        nodes=nodes,
        storage_size=spec.logging.storage_size,
        storage_class=spec.logging.storage_class,
        elasticsearch_tls_secret=ELASTICSEARCH_TLS_SECRET,
        kibana_tls_secret=KIBANA_TLS_SECRET,
        ca_configmap=f"{spec.name}-platform-ca",
        lifecycle_documents=lifecycle_documents(spec.audit_retention_days, spec.app_retention_days, nodes),
        shipper_namespace=LOG_SHIPPER_NAMESPACE,
        reader_namespace=spec.namespaces.monitoring.name if "audit-log" in observability_features(spec) else None,
        image_pull_secrets=(pull,) if pull else (),
    )
    with building("logging", "privatellm:logging:LoggingStack"):
        platform.logging = LoggingStack(
            "logging",
            args,
            opts=pulumi.ResourceOptions.merge(
                opts,
                pulumi.ResourceOptions(
                    depends_on=[
                        platform.namespaces[ns],
                        platform.namespaces[LOG_SHIPPER_NAMESPACE],
                        platform.charts["eck-operator"],
                        platform.pki,
                        *pull_dependencies(platform),
                    ]
                ),
            ),
        )
    values = fluent_bit_values(
        registry,
        elasticsearch_host=f"{cluster}-es-http.{ns}.svc",
        writer_secret=WRITER_SECRET,
        ca_configmap=f"{spec.name}-platform-ca",
        gateway_namespace=spec.namespaces.gateway.name if spec.gateway is not None else None,
        extra_patterns=list(spec.logging.redaction_patterns),
        images=images,
        service_monitor=platform.monitoring is not None,
    )
    after = [platform.logging, *pull_dependencies(platform)]
    if platform.monitoring is not None:
        after.append(platform.monitoring)  # its ServiceMonitor CRD
    with building("fluent-bit", "kubernetes:helm.sh/v4:Chart"):
        platform.charts["fluent-bit"] = chart(
            "fluent-bit",
            CHARTS["fluent-bit"],
            LOG_SHIPPER_NAMESPACE,
            with_pull_secret("fluent-bit", values, pull_secret_name(spec)),
            pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=after)),
            registry,
        )
