"""Composes the platform from a validated `PlatformSpec`: each area's builder (`infra/builders/`) receives the site
and what it depends on, and returns its component, so the order below is the dependency order."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gateway import LlmGateway
from components.gpu_pools import GpuNodePool
from components.logging import LoggingStack
from components.namespaces import SecureNamespace, TenantRoles
from components.observability import MonitoringStack
from components.pki import Pki
from components.registry import HarborRegistry
from components.vllm import VllmService
from infra.builders.base import Site, pull_dependencies
from infra.builders.gateway import build_gateway
from infra.builders.gpu import build_gpu
from infra.builders.guardrails import build_guardrails
from infra.builders.inference import build_inference
from infra.builders.logging import build_logging
from infra.builders.namespaces import build_namespaces
from infra.builders.observability import build_observability
from infra.builders.pki import build_pki
from infra.builders.registry import build_registry
from infra.catalog import IMAGES, Image, LockError, apply_lock, load_lock, lock_path
from infra.config import PlatformSpec, StackConfigError, config_secret, project_dir
from infra.errors import build
from infra.placement import PlacedModel, plan_models


@dataclass(frozen=True)
class Platform:
    """What `build_platform` built, for the program's exports."""

    spec: PlatformSpec
    provider: k8s.Provider
    tenant_roles: TenantRoles
    namespaces: dict[str, SecureNamespace]
    models: list[PlacedModel]
    pools: dict[str, GpuNodePool]
    registry: HarborRegistry | None
    pki: Pki | None
    services: dict[str, VllmService]
    gateway: LlmGateway | None
    monitoring: MonitoringStack | None
    logging: LoggingStack | None

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


def cluster_provider(spec: PlatformSpec) -> k8s.Provider:
    """The one Kubernetes provider every component receives through `opts` (components never build their own)."""
    cluster = spec.cluster
    kubeconfig: pulumi.Input[str] | None = None
    if cluster.kubeconfig_secret:
        kubeconfig = config_secret(cluster.kubeconfig_secret)
    elif cluster.kubeconfig_path:
        kubeconfig = cluster.kubeconfig_path
    return k8s.Provider(
        f"{spec.name}-cluster",
        kubeconfig=kubeconfig,
        context=cluster.context,
        enable_server_side_apply=True,
    )


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
    models = plan_models(spec, project_dir())
    images = stack_images_pinned(spec)
    provider = build("cluster-provider", "pulumi:providers:kubernetes", lambda: cluster_provider(spec))
    opts = pulumi.ResourceOptions(providers={"kubernetes": provider})
    tenant_roles, namespaces = build_namespaces(spec, opts)
    site = Site(spec=spec, opts=opts, images=images, namespaces=namespaces)
    # The PKI comes first: Harbor serves a PKI certificate (the PKI's own images come from the bootstrap registry
    # when the platform manages Harbor, since Harbor does not exist yet).
    pki = build_pki(site)
    registry = build_registry(site, pki)
    pulls = pull_dependencies(registry)
    gpu = build_gpu(site, pulls)
    services = build_inference(site, models, gpu, pki, pulls)
    gateway = build_gateway(site, models, pki, services, pulls)
    monitoring = build_observability(site, models, pki, pulls)
    logging = build_logging(site, pki, monitoring, pulls)
    build_guardrails(site)
    return Platform(
        spec=spec,
        provider=provider,
        tenant_roles=tenant_roles,
        namespaces=namespaces,
        models=models,
        pools=gpu.pools,
        registry=registry,
        pki=pki,
        services=services,
        gateway=gateway,
        monitoring=monitoring,
        logging=logging,
    )
