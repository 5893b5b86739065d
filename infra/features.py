"""What a stack runs, derived from its spec in one place: the predicates every builder, the namespace flows
and the policy config agree on."""

from __future__ import annotations

from infra.config import (
    PlatformSpec,
)
from infra.placement import PlacedModel


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


def charts_needed(spec: PlatformSpec, placed: list[PlacedModel]) -> list[str]:
    """Catalog keys of the charts a stack installs: the GPU Operator for GPU pools, the LeaderWorkerSet controller
    for models across nodes, KEDA for autoscaled models."""
    charts: list[str] = []
    if spec.node_pools and spec.gpu_operator.enabled:
        charts.append("gpu-operator")
    if any(p.plan.pipeline_parallel_size > 1 for p in placed):
        charts.append("lws")
    if any(p.spec.autoscaling.enabled for p in placed):
        charts.append("keda")
    return charts
