"""What a stack runs, derived from its spec in one place: the predicates every builder, the namespace flows
and the policy config agree on."""

from __future__ import annotations

from infra.config import (
    PlatformSpec,
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


def observability_features(spec: PlatformSpec) -> set[str]:
    """What the dashboards and rules cover: GPUs (with the GPU Operator's DCGM exporter), the gateway, and the
    gateway's audit log when it lands in the platform's Elasticsearch and Grafana can read it."""
    features: set[str] = set()
    if runs_gpu_operator(spec):
        features.add("gpu")
    if spec.gateway is not None and spec.models:
        features.add("gateway")
        if runs_logging(spec) and runs_monitoring(spec):
            # The gateway's audit log is in Elasticsearch: Grafana reads it for rejections per tenant.
            features.add("audit-log")
    return features
