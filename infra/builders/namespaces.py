"""The platform's namespaces: baseline security per namespace, quotas, and the flows allowed between them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import pulumi

from components.namespaces import (
    SecureNamespace,
    SecureNamespaceArgs,
    TenantRoles,
    TenantRolesArgs,
)
from infra.builders.base import after
from infra.config import (
    LOG_SHIPPER_NAMESPACE,
    PLATFORM_LIMITS,
    PLATFORM_QUOTA,
    TENANT_ROLES,
    LimitRangeSpec,
    PlatformSpec,
    QuotaSpec,
    TenantSpec,
)
from infra.errors import build, building
from infra.features import (
    observability_features,
    runs_gateway,
    runs_gpu_operator,
    runs_logging,
    runs_monitoring,
)
from infra.pack_config import documented_exceptions

# The namespaces the gateway's two controllers run in (created with the platform's namespaces).
AI_GATEWAY_NAMESPACE = "envoy-ai-gateway-system"
ENVOY_GATEWAY_NAMESPACE = "envoy-gateway-system"
TENANT_NAMESPACE_LABEL = "privatellm.io/tenant"
"""The label `build_namespaces` puts on every tenant namespace (its value: the tenant's name)."""


# The operator's pods are daemons on every GPU node: room for a few per node, no GPUs requested through quota.
GPU_OPERATOR_QUOTA = PLATFORM_QUOTA.model_copy(
    update={
        "requests_cpu": "16",
        "requests_memory": "64Gi",
        "requests_storage": "0",
        "pods": 500,
        "persistent_volume_claims": 0,
        "services": 20,
        "gpus": None,
    }
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


HARBOR_SERVICE_PORTS = 2
"""Ports of the Service Harbor's chart (1.19.1, templates/nginx/service.yaml) creates with TLS on: http and https."""


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


def controllers(
    args: SecureNamespaceArgs,
    spec: PlatformSpec,
    webhook_ports: list[int],
    extra_api_ports: tuple[int, ...] | list[int] = (),
    **changes: Any,
) -> SecureNamespaceArgs:
    """`args` for a namespace of controllers: they reach the API server (and `extra_api_ports` on the same
    networks), serve its webhooks on `webhook_ports` and talk among themselves; `changes` on top."""
    return dataclasses.replace(
        args,
        api_server_cidrs=list(spec.cluster.api_server_cidrs),
        api_server_ports=[*spec.cluster.api_server_ports, *extra_api_ports],
        webhook_ports=list(webhook_ports),
        allow_within_namespace=True,
        **changes,
    )


def platform_namespace_args(
    spec: PlatformSpec, role: str, name: str, flows: list[NamespaceFlow]
) -> SecureNamespaceArgs:
    """The platform namespace `name` of `role` (one of the seven of `namespaces`): its quota and limits, and what its
    workloads reach beyond the flows between the stack's namespaces (the API server, webhooks, declared backends)."""
    args = namespace_args(
        spec,
        name,
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
        args = controllers(
            args,
            spec,
            webhook_ports=[10250, 6443],
            egress_cidrs=[spec.pki.vault.server_cidr] if spec.pki.vault and spec.pki.vault.server_cidr else [],
            egress_ports=[443, 8200],
        )
    if role == "gateway" and runs_gateway(spec):
        # Envoy listens on 10443 for the HTTPS listener's 443.
        args = dataclasses.replace(args, ingress_from_anywhere_ports=[10443])
    if role == "monitoring" and runs_monitoring(spec):
        # The Prometheus operator serves a webhook; Prometheus also scrapes the kubelets (10250) and Alertmanager
        # reaches the declared receivers (webhooks over HTTPS, SMTP).
        args = controllers(
            args,
            spec,
            webhook_ports=[10250],
            extra_api_ports=[10250],
            egress_cidrs=list(spec.observability.egress_cidrs),
            egress_ports=[443, 587, 25],
        )
    if role == "logging" and runs_logging(spec):
        args = dataclasses.replace(args, allow_within_namespace=True)
    if role == "operators":
        # Controllers (LeaderWorkerSet, KEDA, ECK) watch the API server, serve its webhooks and talk among
        # themselves.
        args = controllers(args, spec, webhook_ports=[9443, 6443])
    return with_flows(args, flows)


def tenant_namespace_args(spec: PlatformSpec, tenant: TenantSpec) -> SecureNamespaceArgs:
    """A tenant's namespace: its quota and limits, its groups bound to the tenant roles, the tenant label."""
    return namespace_args(
        spec,
        tenant.namespace_name,
        purpose=f"tenant:{tenant.name}",
        quota=tenant.quota,
        limits=tenant.limits,
        role_bindings={role: tenant.groups.for_role(role) for role in TENANT_ROLES},
        extra_labels={TENANT_NAMESPACE_LABEL: tenant.name},
    )


def build_namespaces(
    spec: PlatformSpec, opts: pulumi.ResourceOptions
) -> tuple[TenantRoles, dict[str, SecureNamespace]]:
    """The tenant roles and every namespace of the stack: the seven platform namespaces, the support namespaces
    (GPU Operator, gateway controllers, log shipper: they exist before Harbor, which puts a pull secret into each of
    them) and one per tenant."""
    roles = build(
        f"{spec.name}-tenant-roles",
        "privatellm:baseline:TenantRoles",
        lambda: TenantRoles(f"{spec.name}-tenant-roles", TenantRolesArgs(instance=spec.name), opts=opts),
    )
    flows = namespace_flows(spec)
    wanted = [platform_namespace_args(spec, role, ns.name, flows) for role, ns in spec.namespaces.items()]
    wanted += support_namespace_args(spec, flows).values()
    namespaces: dict[str, SecureNamespace] = {}
    for args in wanted:
        with building(args.name, "privatellm:baseline:SecureNamespace"):
            namespaces[args.name] = SecureNamespace(args.name, args, opts=opts)
    for tenant in spec.tenants:
        args = tenant_namespace_args(spec, tenant)
        with building(args.name, "privatellm:baseline:SecureNamespace"):
            namespaces[args.name] = SecureNamespace(args.name, args, opts=after(opts, roles))
    return roles, namespaces
