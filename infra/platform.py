"""Composes the platform's components in dependency order from a validated `PlatformSpec`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pulumi
import pulumi_kubernetes as k8s

from components.gpu_pools import EksNodeGroup, GpuNodePool, GpuNodePoolArgs, Taint
from components.namespaces import (
    SecureNamespace,
    SecureNamespaceArgs,
    TenantRoles,
    TenantRolesArgs,
)
from components.vllm import VllmService
from infra.catalog import (
    CHARTS,
    DEFAULT_DRIVER_VERSION,
    ChartRef,
    GpuPoolSettings,
    gpu_operator_values,
    keda_values,
    lws_values,
)
from infra.config import (
    PLATFORM_LIMITS,
    POOL_LABEL,
    TENANT_ROLES,
    GpuPoolSpec,
    LimitRangeSpec,
    PlatformSpec,
    QuotaSpec,
    project_dir,
    qualified_key,
)
from infra.inference import PlacedModel, charts_needed, plan_models, vllm_service_args

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
    name: str, ref: ChartRef, namespace: str, values: dict[str, object], opts: pulumi.ResourceOptions
) -> k8s.helm.v4.Chart:
    """A third-party system from its official chart, pinned in the catalog (its objects stay visible to policies)."""
    repo = ref.repo_url()
    return k8s.helm.v4.Chart(
        name,
        name=name,
        chart=ref.chart(),
        version=ref.version,
        namespace=namespace,
        repository_opts=k8s.helm.v4.RepositoryOptsArgs(repo=repo) if repo else None,
        values=values,
        opts=opts,
    )


def build_platform(spec: PlatformSpec) -> Platform:
    # Size and validate every model before anything is registered: a bad model fails the whole stack early.
    placed = plan_models(spec, project_dir())
    provider = build("cluster-provider", "pulumi:providers:kubernetes", lambda: cluster_provider(spec))
    opts = pulumi.ResourceOptions(providers={"kubernetes": provider})

    roles = build(
        f"{spec.name}-tenant-roles",
        "privatellm:baseline:TenantRoles",
        lambda: TenantRoles(f"{spec.name}-tenant-roles", TenantRolesArgs(instance=spec.name), opts=opts),
    )
    platform = Platform(spec=spec, provider=provider, tenant_roles=roles)

    for role, ns in spec.namespaces.items():
        args = namespace_args(
            spec,
            ns.name,
            purpose=f"platform:{role}",
            quota=spec.namespaces.quota_for(role),
            limits=spec.namespaces.limits_for(role),
            extra_labels={"privatellm.io/platform-role": role},
        )
        if role == "operators":
            # Controllers (LeaderWorkerSet, KEDA) watch the API server, serve its webhooks and talk among
            # themselves; KEDA reads queue lengths from Prometheus.
            args = dataclasses.replace(
                args,
                api_server_cidrs=list(spec.cluster.api_server_cidrs),
                api_server_ports=list(spec.cluster.api_server_ports),
                webhook_ports=[9443, 6443],
                allow_within_namespace=True,
                egress_to_namespaces={spec.namespaces.monitoring.name: [9090]},
            )
        with building(ns.name, "privatellm:baseline:SecureNamespace"):
            platform.namespaces[ns.name] = SecureNamespace(ns.name, args, opts=opts)

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
    build_gpu(spec, platform, opts)
    build_inference(spec, platform, opts)
    return platform


GPU_OPERATOR_EXCEPTION = (
    "NVIDIA GPU Operator: the driver, container toolkit, device plugin and DCGM exporter run privileged with host "
    "access to install and expose the GPUs; nothing else runs in this namespace"
)


def gpu_operator_exemptions(spec: PlatformSpec) -> dict[str, str]:
    """The documented exceptions to the restricted baseline, as policy config (namespace → reason)."""
    if spec.node_pools and spec.gpu_operator.enabled:
        return {spec.gpu_operator.namespace: GPU_OPERATOR_EXCEPTION}
    return {}


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
    if not spec.gpu_operator.enabled:
        return
    operator = spec.gpu_operator
    assert spec.registry is not None or not spec.node_pools
    ns = operator.namespace
    args = dataclasses.replace(
        namespace_args(
            spec,
            ns,
            purpose="platform:gpu-operator",
            quota=GPU_OPERATOR_QUOTA,
            limits=PLATFORM_LIMITS,
            extra_labels={"privatellm.io/platform-role": "gpu-operator"},
        ),
        pod_security_level="privileged",
        exception_reason=GPU_OPERATOR_EXCEPTION,
        api_server_cidrs=list(spec.cluster.api_server_cidrs),
        api_server_ports=list(spec.cluster.api_server_ports),
        webhook_ports=[],
        allow_within_namespace=True,
        ingress_from_namespaces={spec.namespaces.monitoring.name: [9400]},
    )
    with building(ns, "privatellm:baseline:SecureNamespace"):
        platform.namespaces[ns] = SecureNamespace(ns, args, opts=opts)
    registry = spec.registry
    if registry is None:
        raise ComponentBuildError(
            "gpu-operator", "kubernetes:helm.sh/v4:Chart", ValueError("registry.host is required for the GPU Operator")
        )
    settings = [
        GpuPoolSettings(
            name=p.name,
            mig_strategy=p.mig.strategy,
            time_slicing_replicas=p.time_slicing.replicas if p.time_slicing else None,
            taint_key=POOL_LABEL if p.tolerations is None and p.node_selector is None else None,
        )
        for p in spec.node_pools
    ]
    values = gpu_operator_values(
        registry,
        install_driver=operator.driver == "operator",
        driver_version=operator.driver_version or DEFAULT_DRIVER_VERSION,
        pools=settings,
    )
    with building("gpu-operator", "kubernetes:helm.sh/v4:Chart"):
        platform.charts["gpu-operator"] = chart(
            "gpu-operator",
            CHARTS["gpu-operator"],
            ns,
            values,
            pulumi.ResourceOptions.merge(
                opts, pulumi.ResourceOptions(depends_on=[platform.namespaces[ns], *platform.pools.values()])
            ),
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
            platform.charts[name] = chart(name, CHARTS[name], operators_ns, values(spec.registry), operators_opts)
            controllers.append(platform.charts[name])
    gpu_stack: list[pulumi.Resource] = [*platform.pools.values()]
    if "gpu-operator" in platform.charts:
        gpu_stack.append(platform.charts["gpu-operator"])
    model_opts = pulumi.ResourceOptions.merge(after_ns, pulumi.ResourceOptions(depends_on=[*controllers, *gpu_stack]))
    for model in platform.models:
        with building(model.spec.name, "privatellm:inference:VllmService"):
            args = vllm_service_args(spec, model, platform.models, contract=platform.pools[model.pool.name].contract)
            platform.services[model.spec.name] = VllmService(model.spec.name, args, opts=model_opts)
